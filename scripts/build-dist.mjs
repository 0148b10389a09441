#!/usr/bin/env node
// Compiles the services to JavaScript for the container image (the Dockerfile's build stage runs
// this), laid out as the workspace is so that the image's `npm ci --omit=dev` node_modules links
// (@nexusflow/gen -> ../../gen, ...) find the compiled packages:
//
//   dist/app/entrypoint.mjs                  the image's command: `entrypoint.mjs scheduler|executor|gateway|migrate`
//   dist/app/healthcheck.mjs                 the image's HEALTHCHECK (GET /readyz of the running service)
//   dist/app/services/<name>/src/*.js         compiled sources (with source maps)
//   dist/app/<workspace>/package.json         the workspace's manifest, exports pointing at .js
//   dist/app/services.json                    the services and their main modules
//   dist/app/ui/dist/                         the web UI (ui/, `vite build`), which the gateway serves
//                                            under /ui/ from ../../../ui/dist relative to its server.js
//
// With --link-node-modules (for running the build in this checkout, as the tests do) it also links
//   DIR/node_modules/@nexusflow/<name>  -> the compiled workspace folders, and
//   DIR/<workspace>/node_modules       -> the checkout's <workspace>/node_modules (packages npm did
//                                          not hoist); the rest resolves from the checkout's
//                                          node_modules above DIR. The image gets these from `npm ci`.
//
// Usage: build-dist.mjs [--out DIR] [--link-node-modules]   (default dist/app)
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The workspaces the services need at run time, in dependency order. */
export const WORKSPACES = ["gen", "common", "services/executor", "services/scheduler", "services/gateway"];

function fail(message) {
  console.error(`build-dist: ${message}`);
  process.exit(1);
}

let out = join(root, "dist", "app");
let linkNodeModules = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--out" && argv[i + 1] !== undefined) out = resolve(argv[++i]);
  else if (argv[i] === "--link-node-modules") linkNodeModules = true;
  else
    fail(
      `unknown argument ${JSON.stringify(argv[i])} (usage: build-dist.mjs [--out DIR] [--link-node-modules])`,
    );
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
console.log(`build-dist: compiling ${WORKSPACES.join(", ")} into ${relative(process.cwd(), out) || "."}`);
const tsc = spawnSync(
  process.execPath,
  [
    join(root, "node_modules", "typescript", "bin", "tsc"),
    "-p",
    join(root, "tsconfig.dist.json"),
    "--outDir",
    out,
  ],
  { cwd: root, stdio: "inherit" },
);
if (tsc.status !== 0) fail(`tsc exited with ${tsc.status ?? tsc.signal}`);

// The web UI: static files, so the image serves it with no Node build step at run time.
const uiOut = join(out, "ui", "dist");
console.log(`build-dist: building the web UI into ${relative(process.cwd(), uiOut)}`);
const vite = spawnSync(
  process.execPath,
  [
    join(root, "node_modules", "vite", "bin", "vite.js"),
    "build",
    "--outDir",
    uiOut,
    "--emptyOutDir",
    // Vite 8 refuses a second build of the same project while one runs (a lock under
    // node_modules/.vite). This one writes only into its own --outDir, so another build (the
    // browser test's, a second build-dist) cannot disturb it: the lock would only make it fail.
    "--bypass-lock",
    "--logLevel",
    "warn",
  ],
  { cwd: join(root, "ui"), stdio: "inherit" },
);
if (vite.status !== 0) fail(`vite build exited with ${vite.status ?? vite.signal}`);
if (!existsSync(join(uiOut, "index.html"))) fail("the web UI was built without an index.html");

/** `./src/x.ts` -> `./src/x.js` (exports and their patterns). */
function toJs(target) {
  if (typeof target !== "string" || !target.endsWith(".ts"))
    fail(`export target ${JSON.stringify(target)} is not a .ts file`);
  return `${target.slice(0, -".ts".length)}.js`;
}

for (const dir of WORKSPACES) {
  const manifest = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8"));
  const exportsMap = Object.fromEntries(Object.entries(manifest.exports ?? {}).map(([k, v]) => [k, toJs(v)]));
  for (const [key, target] of Object.entries(exportsMap)) {
    if (!target.includes("*") && !existsSync(join(out, dir, target)))
      fail(`${manifest.name}: export ${key} -> ${target} was not built`);
  }
  const compiled = {
    name: manifest.name,
    version: manifest.version,
    private: true,
    type: "module",
    exports: exportsMap,
    dependencies: manifest.dependencies ?? {},
  };
  writeFileSync(join(out, dir, "package.json"), `${JSON.stringify(compiled, null, 2)}\n`);
  if (!linkNodeModules) continue;
  const link = join(out, "node_modules", manifest.name);
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(relative(dirname(link), join(out, dir)), link, "dir");
  if (existsSync(join(root, dir, "node_modules")))
    symlinkSync(join(root, dir, "node_modules"), join(out, dir, "node_modules"), "dir");
}

copyFileSync(join(root, "deploy", "docker", "entrypoint.mjs"), join(out, "entrypoint.mjs"));
copyFileSync(join(root, "deploy", "docker", "healthcheck.mjs"), join(out, "healthcheck.mjs"));
const { SERVICES } = await import(join(out, "entrypoint.mjs"));
for (const [service, main] of Object.entries(SERVICES)) {
  if (!existsSync(join(out, main))) fail(`the ${service} service's main module ${main} was not built`);
}
writeFileSync(join(out, "services.json"), `${JSON.stringify(SERVICES, null, 2)}\n`);
console.log(
  `build-dist: ${Object.keys(SERVICES).join(", ")} -> ${relative(process.cwd(), out) || "."}/entrypoint.mjs`,
);
