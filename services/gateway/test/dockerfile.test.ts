/**
 * The Dockerfile, read by BuildKit's own parser (scripts/tools/dockerfile-check; no Docker engine
 * here, so the image itself is never built in tests): it parses without warnings; every COPY from
 * the build context names a file that exists and that .dockerignore lets through; the runtime stage
 * is a pinned slim Node 24, runs as a numeric non-root user, has a HEALTHCHECK, and runs under
 * tini, and sets and exposes HEALTH_PORT (probes without metrics); its ENTRYPOINT and HEALTHCHECK
 * name files that scripts/build-dist.mjs produces (the build runs here), and each service the entry
 * point knows is a compiled file of that build. A broken copy of the parsed file proves the checks
 * bite. dist.test.ts starts those files with Node.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { deployTool, runTool } from "./deploy-tools.js";
import { ROOT } from "./tools.js";

interface Instruction {
  line: number;
  keyword: string;
  args: string[];
  flags: string[];
  json: boolean;
}
interface Stage {
  name: string;
  base: string;
  instructions: Instruction[];
}
/** What dockerfile-check prints. */
interface Parsed {
  metaArgs: Record<string, string>;
  stages: Stage[];
  warnings: string[];
}

/** A .dockerignore as a predicate: true when the context path is left out (last matching rule wins). */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const include = l.startsWith("!");
      const pattern = (include ? l.slice(1) : l).replace(/\/$/, "");
      const source = pattern
        .split("/")
        .map((part) =>
          part === "**" ? "(?:.*)" : part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*"),
        )
        .join("/")
        .replace(/\(\?:\.\*\)\//g, "(?:.*/)?");
      // A rule naming a folder covers everything under it.
      return { include, regex: new RegExp(`^${source}(?:/.*)?$`) };
    });
  return (path) => {
    let excluded = false;
    for (const rule of rules) if (rule.regex.test(path)) excluded = !rule.include;
    return excluded;
  };
}

/** The context files a COPY source names: a file, or every file git knows under a folder. */
function contextFiles(source: string, tracked: string[]): string[] {
  const path = source.replace(/^\.\//, "").replace(/\/$/, "");
  return tracked.filter((f) => f === path || f.startsWith(`${path}/`));
}

interface Context {
  tracked: string[];
  ignored: (path: string) => boolean;
  /** Files of a build-dist output, relative to it. */
  built: (path: string) => boolean;
  services: Record<string, string>;
}

/** Everything wrong with the parsed Dockerfile; empty when it passes. */
export function dockerfileProblems(parsed: Parsed, ctx: Context): string[] {
  const problems: string[] = [];
  const stageNames = new Set(parsed.stages.map((s) => s.name));
  if (parsed.warnings.length > 0) problems.push(`parser warnings: ${parsed.warnings.join("; ")}`);
  for (const stage of parsed.stages) {
    for (const ins of stage.instructions.filter((i) => i.keyword === "COPY" || i.keyword === "ADD")) {
      if (ins.keyword === "ADD") problems.push(`line ${ins.line}: ADD (use COPY)`);
      const from = ins.flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
      if (from !== undefined) {
        if (!stageNames.has(from)) problems.push(`line ${ins.line}: COPY --from=${from}: no such stage`);
        continue;
      }
      for (const source of ins.args.slice(0, -1)) {
        const files = contextFiles(source, ctx.tracked);
        if (files.length === 0) problems.push(`line ${ins.line}: COPY ${source}: not in the repository`);
        else if (files.every((f) => ctx.ignored(f)))
          problems.push(`line ${ins.line}: COPY ${source}: left out by .dockerignore`);
      }
    }
  }
  const runtime = parsed.stages.at(-1);
  if (runtime === undefined) return [...problems, "no stage"];
  const base = runtime.base.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string, b: string) => {
    return parsed.metaArgs[a ?? b] ?? "";
  });
  if (!/^node:24\.\d+\.\d+-[a-z]+-slim$/.test(base))
    problems.push(`runtime base ${base}: not a pinned slim Node 24 (node:24.x.y-<debian>-slim)`);
  const last = (keyword: string): Instruction | undefined =>
    runtime.instructions.filter((i) => i.keyword === keyword).at(-1);
  const user = last("USER")?.args[0];
  if (user === undefined) problems.push("the runtime stage has no USER: it would run as root");
  else if (!/^[1-9]\d*(?::\d+)?$/.test(user))
    problems.push(`runtime USER ${user}: not a numeric non-root uid (runAsNonRoot needs a number)`);
  const healthcheck = last("HEALTHCHECK");
  if (healthcheck === undefined) problems.push("the runtime stage has no HEALTHCHECK");
  const entrypoint = last("ENTRYPOINT");
  if (entrypoint === undefined || !entrypoint.json)
    problems.push("ENTRYPOINT missing or not in exec (JSON) form");
  else if (entrypoint.args[0] !== "/usr/bin/tini")
    problems.push(`ENTRYPOINT starts ${entrypoint.args[0]}, not tini (signals, zombies)`);
  // Files of the image under /app come from the build stage's build-dist output.
  const copiesBuild = runtime.instructions.some(
    (i) =>
      i.keyword === "COPY" && i.flags.includes("--from=build") && i.args[1]?.replace(/\/$/, "") === "/app",
  );
  if (!copiesBuild) problems.push("the runtime stage does not copy the build output to /app");
  const buildRuns = parsed.stages
    .find((s) => s.name === "build")
    ?.instructions.some(
      (i) => i.keyword === "RUN" && /scripts\/build-dist\.mjs --out \/out\b/.test(i.args.join(" ")),
    );
  if (buildRuns !== true) problems.push("the build stage does not run scripts/build-dist.mjs --out /out");
  const appFiles = [...(entrypoint?.args ?? []), ...(healthcheck?.args ?? [])].filter((a) =>
    a.startsWith("/app/"),
  );
  if (appFiles.length < 2) problems.push("ENTRYPOINT and HEALTHCHECK should run files under /app");
  for (const file of appFiles) {
    if (!ctx.built(file.slice("/app/".length)))
      problems.push(`${file}: not produced by scripts/build-dist.mjs`);
  }
  // Probes that do not depend on metrics: the image sets HEALTH_PORT (BuildKit gives ENV as
  // key, value, separator triples) and exposes it.
  const env = new Map<string, string>();
  for (const i of runtime.instructions.filter((i) => i.keyword === "ENV"))
    for (let k = 0; k + 1 < i.args.length; k += 3) env.set(i.args[k]!, i.args[k + 1]!);
  const healthPort = env.get("HEALTH_PORT");
  if (healthPort === undefined)
    problems.push("the runtime stage sets no HEALTH_PORT: probes would depend on metrics being on");
  else if (!runtime.instructions.some((i) => i.keyword === "EXPOSE" && i.args.includes(healthPort)))
    problems.push(`HEALTH_PORT ${healthPort} is not EXPOSEd`);
  const cmd = last("CMD")?.args[0];
  if (cmd === undefined || ctx.services[cmd] === undefined) problems.push(`CMD ${cmd}: not a service`);
  for (const [service, main] of Object.entries(ctx.services)) {
    if (!ctx.built(main)) problems.push(`service ${service}: ${main} not built`);
  }
  return problems;
}

describe("Dockerfile", () => {
  it(
    "parses, copies what exists, runs compiled files as a non-root user",
    { timeout: 180_000 },
    async (t) => {
      const tool = deployTool(t, "dockerfile-check");
      if (tool === undefined) return;
      const result = await runTool(tool, [join(ROOT, "Dockerfile")]);
      assert.equal(result.code, 0, result.stderr);
      const parsed = JSON.parse(result.stdout) as Parsed;
      assert.deepEqual(
        parsed.stages.map((s) => s.name),
        ["manifests", "build", "deps", "runtime"],
      );

      mkdirSync(join(ROOT, ".cache"), { recursive: true });
      const out = mkdtempSync(join(ROOT, ".cache", "dockerfile-test-"));
      t.after(() => rmSync(out, { recursive: true, force: true }));
      const build = spawnSync(process.execPath, [join(ROOT, "scripts", "build-dist.mjs"), "--out", out], {
        encoding: "utf8",
      });
      assert.equal(build.status, 0, build.stderr);
      const tracked = spawnSync("git", ["ls-files", "--cached", "--others", "--exclude-standard"], {
        cwd: ROOT,
        encoding: "utf8",
      }).stdout.split("\n");
      const ctx: Context = {
        tracked,
        ignored: dockerignore(readFileSync(join(ROOT, ".dockerignore"), "utf8")),
        built: (path) => existsSync(join(out, path)),
        services: JSON.parse(readFileSync(join(out, "services.json"), "utf8")) as Record<string, string>,
      };
      assert.deepEqual(dockerfileProblems(parsed, ctx), []);

      // The deps stage installs the production dependencies of exactly the workspaces build-dist compiles.
      const workspaces = /WORKSPACES = (\[[^\]]*\])/.exec(
        readFileSync(join(ROOT, "scripts/build-dist.mjs"), "utf8"),
      );
      const npmCi = parsed.stages
        .find((s) => s.name === "deps")
        ?.instructions.find((i) => i.keyword === "RUN" && i.args.join(" ").includes("npm ci"));
      const flags = [...(npmCi?.args.join(" ") ?? "").matchAll(/-w (\S+)/g)].map((m) => m[1]);
      assert.deepEqual(flags.sort(), (JSON.parse(workspaces?.[1] ?? "[]") as string[]).sort());
      assert.match(npmCi?.args.join(" ") ?? "", /--omit=dev/);

      // The checks bite: a missing file, an ignored one, root, a file the build does not make.
      const broken = structuredClone(parsed);
      const runtime = broken.stages.at(-1)!;
      runtime.instructions.push({
        line: 998,
        keyword: "COPY",
        args: ["no/such/file", "/app/"],
        flags: [],
        json: false,
      });
      runtime.instructions.push({
        line: 999,
        keyword: "COPY",
        args: ["README.md", "/app/"],
        flags: [],
        json: false,
      });
      runtime.instructions.push({ line: 1000, keyword: "USER", args: ["root"], flags: [], json: false });
      runtime.instructions.find((i) => i.keyword === "ENTRYPOINT")!.args.push("/app/missing.mjs");
      const env = runtime.instructions.find((i) => i.keyword === "ENV" && i.args.includes("HEALTH_PORT"))!;
      env.args = env.args.map((a) => (a === "HEALTH_PORT" ? "HEALTH_PORTS" : a));
      const problems = dockerfileProblems(broken, ctx).join("\n");
      assert.match(problems, /no\/such\/file: not in the repository/);
      assert.match(problems, /README.md: left out by .dockerignore/);
      assert.match(problems, /USER root/);
      assert.match(problems, /\/app\/missing.mjs: not produced/);
      assert.match(problems, /sets no HEALTH_PORT/);
    },
  );

  it(".dockerignore keeps the context to sources and manifests", () => {
    const ignored = dockerignore(readFileSync(join(ROOT, ".dockerignore"), "utf8"));
    for (const path of ["common/src/config.ts", "package-lock.json", "services/gateway/package.json"])
      assert.equal(ignored(path), false, path);
    for (const path of [
      ".git/HEAD",
      "node_modules/x/index.js",
      "common/src/config.test.ts",
      ".env",
      "bench/main.ts",
    ])
      assert.equal(ignored(path), true, path);
  });
});
