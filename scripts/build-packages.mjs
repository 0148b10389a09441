#!/usr/bin/env node
// Builds the packages other teams install: @nexusflow/gen, @nexusflow/common, @nexusflow/executor
// and @nexusflow/client, as JavaScript with type declarations, each in a publish-ready folder with
// its own package.json (exports pointing at dist/, dependencies on the siblings' exact versions),
// README.md and LICENSE. The workspace never needs this: it runs the TypeScript sources with tsx.
//
// Usage: build-packages.mjs [--out DIR] [--pack DIR]
//   --out   where the package folders go (default dist/packages); DIR/packages.json lists them
//   --pack  also runs `npm pack` on each, writing the tarballs to DIR
// Publish with `npm publish DIR/<name>` (gen and common first), or the tarballs.
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { builtinModules } from "node:module";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The published packages, in dependency order. `srcRoot` is the folder (relative to the package)
 * whose compiled files become dist/; `omitExports` are workspace-only entry points.
 */
const PACKAGES = [
  { dir: "gen", srcRoot: ".", omitExports: [] },
  { dir: "common", srcRoot: "src", omitExports: ["./testing", "./telemetry/testing"] },
  { dir: "services/executor", srcRoot: "src", omitExports: [] },
  { dir: "client", srcRoot: "src", omitExports: [] },
];

/** Fields of a workspace manifest carried into the published one. */
const CARRIED_FIELDS = ["description", "keywords", "homepage", "bugs", "repository", "author"];

function fail(message) {
  console.error(`build-packages: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { out: join(root, "dist", "packages"), pack: undefined };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if ((flag === "--out" || flag === "--pack") && value !== undefined && !value.startsWith("--")) {
      args[flag.slice(2)] = resolve(value);
      i++;
    } else {
      fail(
        `unknown or incomplete argument ${JSON.stringify(flag)} (usage: build-packages.mjs [--out DIR] [--pack DIR])`,
      );
    }
  }
  return args;
}

function readJson(file) {
  return JSON.parse(readFileSync(file, "utf8"));
}

function run(command, args, options) {
  const result = spawnSync(command, args, {
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
    ...options,
  });
  if (result.error !== undefined) fail(`${command} ${args.join(" ")}: ${result.error.message}`);
  if (result.status !== 0) {
    process.stderr.write(result.stdout ?? "");
    process.stderr.write(result.stderr ?? "");
    fail(`${[command, ...args].join(" ")} exited with ${result.status ?? result.signal}`);
  }
  return result.stdout;
}

/** npm as the caller runs it: the npm that runs this script, else `npm` on the PATH. */
function npmCommand() {
  const execPath = process.env["npm_execpath"];
  if (execPath !== undefined && execPath !== "") {
    return /\.[cm]?js$/.test(execPath) ? [process.execPath, [execPath]] : [execPath, []];
  }
  return ["npm", []];
}

/** Every file under `dir`, as paths relative to it. */
function listFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? listFiles(path).map((f) => join(name, f)) : [name];
  });
}

/** `./src/x/*.ts` (a workspace export target) as the compiled file under dist/, without extension. */
function distBase(target, srcRoot, where) {
  const prefix = srcRoot === "." ? "./" : `./${srcRoot}/`;
  if (typeof target !== "string" || !target.startsWith(prefix) || !target.endsWith(".ts")) {
    fail(`${where}: export target ${JSON.stringify(target)} is not a .ts file under ${prefix}`);
  }
  return `./dist/${target.slice(prefix.length, -".ts".length)}`;
}

function rewriteExports(manifest, pkg, packDir) {
  const exportsMap = {};
  for (const [key, target] of Object.entries(manifest.exports ?? {})) {
    if (pkg.omitExports.includes(key)) continue;
    const base = distBase(target, pkg.srcRoot, manifest.name);
    const entry = { types: `${base}.d.ts`, default: `${base}.js` };
    for (const file of Object.values(entry)) {
      if (file.includes("*")) {
        const [head, tail] = file.split("*");
        const folder = head.endsWith("/") ? join(packDir, head) : dirname(join(packDir, head));
        const prefix = head.endsWith("/") ? "" : basename(head);
        const matches = existsSync(folder)
          ? readdirSync(folder).filter((n) => n.startsWith(prefix) && n.endsWith(tail))
          : [];
        if (matches.length === 0) fail(`${manifest.name}: export ${key} matches no file ${file}`);
      } else if (!existsSync(join(packDir, file))) {
        fail(`${manifest.name}: export ${key} points at ${file}, which was not built`);
      }
    }
    exportsMap[key] = entry;
  }
  if (exportsMap["."] === undefined) fail(`${manifest.name}: no "." export`);
  return exportsMap;
}

function rewriteDependencies(manifest, versions) {
  const dependencies = {};
  for (const [name, spec] of Object.entries(manifest.dependencies ?? {})) {
    if (name.startsWith("@nexusflow/")) {
      const version = versions.get(name);
      if (version === undefined) fail(`${manifest.name} depends on ${name}, which is not published`);
      dependencies[name] = version;
    } else if (/^(\*|workspace:|file:|link:|portal:)/.test(String(spec))) {
      fail(`${manifest.name}: dependency ${name} has the local spec ${JSON.stringify(spec)}`);
    } else {
      dependencies[name] = spec;
    }
  }
  return dependencies;
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"']+)["']/g;
/** Block comments and whole-line comments: their words (`a duration from "1s"`) import nothing. */
const COMMENTS = /\/\*[\s\S]*?\*\/|^\s*\/\/.*$/gm;

/** Every import of the built files is a Node builtin, a declared dependency, or a file shipped. */
function checkImports(packDir, manifest) {
  const builtins = new Set(builtinModules);
  const allowed = new Set([manifest.name, ...Object.keys(manifest.dependencies ?? {})]);
  for (const file of listFiles(join(packDir, "dist"))) {
    if (!file.endsWith(".js") && !file.endsWith(".d.ts")) continue;
    const path = join(packDir, "dist", file);
    for (const [, specifier] of readFileSync(path, "utf8").replace(COMMENTS, "").matchAll(SPECIFIER)) {
      if (specifier.startsWith(".")) {
        const target = resolve(dirname(path), specifier);
        if (!target.startsWith(packDir + sep))
          fail(`${manifest.name}: ${file} imports ${specifier}, outside the package`);
        const candidates = file.endsWith(".d.ts") ? [target, target.replace(/\.js$/, ".d.ts")] : [target];
        if (!candidates.some((c) => existsSync(c)))
          fail(`${manifest.name}: ${file} imports ${specifier}, not shipped`);
        continue;
      }
      if (specifier.startsWith("node:") || builtins.has(specifier)) continue;
      const parts = specifier.split("/");
      const name = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
      if (!allowed.has(name))
        fail(`${manifest.name}: ${file} imports ${specifier}, not among its dependencies`);
    }
  }
}

const args = parseArgs(process.argv.slice(2));
const rootManifest = readJson(join(root, "package.json"));
const license = join(root, "LICENSE");
if (!existsSync(license)) fail("the root LICENSE is missing");

const packages = PACKAGES.map((pkg) => ({ ...pkg, manifest: readJson(join(root, pkg.dir, "package.json")) }));
const versions = new Map(packages.map((p) => [p.manifest.name, p.manifest.version]));

mkdirSync(args.out, { recursive: true });
const tscOut = join(args.out, ".tsc");
rmSync(tscOut, { recursive: true, force: true });
console.log(`build-packages: compiling ${packages.map((p) => p.manifest.name).join(", ")}`);
run(
  process.execPath,
  [
    join(root, "node_modules", "typescript", "bin", "tsc"),
    "-p",
    join(root, "tsconfig.packages.json"),
    "--outDir",
    tscOut,
  ],
  { cwd: root },
);

const built = [];
for (const pkg of packages) {
  const { manifest } = pkg;
  const short = manifest.name.replace(/^@nexusflow\//, "");
  const packDir = join(args.out, short);
  rmSync(packDir, { recursive: true, force: true });
  mkdirSync(packDir, { recursive: true });
  cpSync(join(tscOut, pkg.dir, pkg.srcRoot), join(packDir, "dist"), { recursive: true });
  const readme = join(root, pkg.dir, "README.md");
  if (!existsSync(readme)) fail(`${manifest.name} has no README.md`);
  cpSync(readme, join(packDir, "README.md"));
  cpSync(license, join(packDir, "LICENSE"));

  const exportsMap = rewriteExports(manifest, pkg, packDir);
  const published = {
    name: manifest.name,
    version: manifest.version,
    ...Object.fromEntries(
      CARRIED_FIELDS.filter((f) => manifest[f] !== undefined).map((f) => [f, manifest[f]]),
    ),
    license: manifest.license ?? rootManifest.license,
    type: "module",
    engines: rootManifest.engines,
    main: exportsMap["."].default,
    types: exportsMap["."].types,
    exports: exportsMap,
    files: ["dist"],
    dependencies: rewriteDependencies(manifest, versions),
    publishConfig: { access: "public" },
  };
  if (published.license !== "Apache-2.0")
    fail(`${manifest.name}: license ${published.license}, expected Apache-2.0`);
  writeFileSync(join(packDir, "package.json"), `${JSON.stringify(published, null, 2)}\n`);
  checkImports(packDir, published);
  built.push({ name: manifest.name, version: manifest.version, dir: packDir });
}
rmSync(tscOut, { recursive: true, force: true });

if (args.pack !== undefined) {
  mkdirSync(args.pack, { recursive: true });
  const [npm, npmArgs] = npmCommand();
  for (const pkg of built) {
    const out = run(
      npm,
      [...npmArgs, "pack", "--json", "--ignore-scripts", "--pack-destination", args.pack],
      {
        cwd: pkg.dir,
      },
    );
    const [info] = JSON.parse(out);
    pkg.tarball = join(args.pack, info.filename);
    if (!existsSync(pkg.tarball)) fail(`npm pack wrote no ${pkg.tarball}`);
  }
}
writeFileSync(join(args.out, "packages.json"), `${JSON.stringify(built, null, 2)}\n`);
for (const pkg of built) {
  console.log(
    `build-packages: ${pkg.name}@${pkg.version} -> ${relative(process.cwd(), pkg.tarball ?? pkg.dir)}`,
  );
}
