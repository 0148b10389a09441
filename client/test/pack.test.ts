/**
 * The SDK as another team gets it: builds and packs @nexusflow/gen, common, executor and client
 * (scripts/build-packages.mjs), installs the tarballs with npm into a fresh project outside the
 * workspace, checks what was installed (versions, no private or workspace-only dependency,
 * README, LICENSE, JavaScript and declarations only), type-checks a TypeScript file using both
 * packages with the installed declarations, then runs plain JavaScript there (no tsx) that
 * registers a handler, starts an executor and a run against a real scheduler with
 * authentication on, and sees the run succeed with the handler's output.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type TestStack, startTestStack } from "./support.js";

const exec = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const T = { timeout: 600_000 };
const PUBLISHED = ["@nexusflow/gen", "@nexusflow/common", "@nexusflow/executor", "@nexusflow/client"];

interface BuiltPackage {
  name: string;
  version: string;
  dir: string;
  tarball: string;
}

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  license?: string;
  exports?: Record<string, { types: string; default: string }>;
  dependencies?: Record<string, string>;
}

/** npm as the tests run it: the npm running them (npm_execpath), else `npm` on the PATH. */
function npmCommand(): [string, string[]] {
  const execPath = process.env["npm_execpath"];
  if (execPath !== undefined && execPath !== "") {
    return /\.[cm]?js$/.test(execPath) ? [process.execPath, [execPath]] : [execPath, []];
  }
  return ["npm", []];
}

/**
 * The environment of a process in the fresh project: no workspace-bound npm settings inherited
 * from the npm that runs the tests (workspace, prefix, package fields), only the ones that say
 * where packages come from; and no NODE_OPTIONS, so no loader (tsx) sneaks in.
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const keep =
    /^npm_config_(cache|registry|userconfig|globalconfig|proxy|https_proxy|noproxy|strict_ssl|cafile|ca|@.*:registry|\/\/.*)$/i;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === "NODE_OPTIONS" || (/^npm_/i.test(key) && !keep.test(key))) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

async function readJson<V>(file: string): Promise<V> {
  return JSON.parse(await readFile(file, "utf8")) as V;
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map(async (e) =>
      e.isDirectory() ? (await listFiles(join(dir, e.name))).map((f) => `${e.name}/${f}`) : [e.name],
    ),
  );
  return nested.flat();
}

/** Plain JavaScript a user writes: a handler, an executor, a client, one run. */
const MAIN_JS = `
import { Executor, TaskError, bearerToken } from "@nexusflow/executor";
import { NexusflowClient, RunStatus, runOutput } from "@nexusflow/client";

const { SCHEDULER_ADDRESS, EXECUTOR_TOKEN, CLIENT_TOKEN } = process.env;
const executor = new Executor({
  schedulerAddress: SCHEDULER_ADDRESS,
  executorId: "sdk-consumer",
  slots: 2,
  metadata: bearerToken(EXECUTOR_TOKEN),
});
executor.register("sdk-greet", async (input, ctx) => {
  ctx.log.info("greeting", { name: input.name });
  if (input.name === "") throw TaskError.terminal("NO_NAME", "nobody to greet");
  return { greeting: "hello " + input.name };
});
await executor.start();

let tokenCalls = 0;
const client = new NexusflowClient({
  baseUrl: SCHEDULER_ADDRESS,
  token: async () => {
    tokenCalls++;
    return CLIENT_TOKEN;
  },
});
try {
  await client.registerWorkflow({
    name: "sdk-greeting",
    version: 1,
    steps: [{ id: "greet", type: "sdk-greet", input: { name: "{{ input.name }}" } }],
    output: { greeting: "{{ steps.greet.output.greeting }}" },
  });
  const { run, created } = await client.startRun({
    workflowName: "sdk-greeting",
    input: { name: "Ada" },
    idempotencyKey: "sdk-consumer-1",
  });
  const done = await client.waitForRun(run.id, { signal: AbortSignal.timeout(60000) });
  console.log("RESULT " + JSON.stringify({ created, status: RunStatus[done.status], output: runOutput(done), tokenCalls }));
} finally {
  client.close();
  await executor.stop();
}
`;

/** TypeScript a user writes; the @ts-expect-error lines fail the check if the types were \`any\`. */
const CHECK_TS = `
import { Executor, TaskError, bearerToken, type ExecutorOptions, type TaskContext } from "@nexusflow/executor";
import { Code, NexusflowClient, RunStatus, isRpcError, runOutput, type JsonValue, type Run } from "@nexusflow/client";

const options: ExecutorOptions = { schedulerAddress: "127.0.0.1:50051", slots: 8, metadata: bearerToken(async () => "t") };
const executor = new Executor(options);
executor.register("charge-card", async (input: { order: string }, ctx: TaskContext) => {
  ctx.heartbeat();
  if (input.order === "") throw TaskError.terminal("CARD_DECLINED", "card declined");
  return { paymentId: "pay_123" };
});
// @ts-expect-error slots is a number
export const wrong: ExecutorOptions = { slots: "8" };

const client = new NexusflowClient({ baseUrl: "http://127.0.0.1:8080", token: () => "t", timeoutMs: 5000 });
export async function outcome(id: string): Promise<JsonValue | undefined> {
  try {
    const run: Run = await client.waitForRun(id, { signal: AbortSignal.timeout(1000) });
    return run.status === RunStatus.SUCCEEDED ? runOutput(run) : undefined;
  } catch (e) {
    if (isRpcError(e, Code.NotFound)) return undefined;
    throw e;
  } finally {
    // @ts-expect-error waitForRun takes options, not a number
    void client.waitForRun(id, 5);
  }
}
await executor.start();
`;

describe("the SDK packed and installed outside the workspace", () => {
  let work: string;
  let app: string;
  let built: BuiltPackage[];
  let stack: TestStack | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-pack-"));
    app = join(work, "app");
    // Built from this checkout's sources, as CI's clean clone has no dist/.
    await exec(
      process.execPath,
      [
        join(ROOT, "scripts", "build-packages.mjs"),
        "--out",
        join(work, "packages"),
        "--pack",
        join(work, "tarballs"),
      ],
      { cwd: ROOT, maxBuffer: 64 * 1024 * 1024, timeout: 300_000 },
    );
    built = await readJson<BuiltPackage[]>(join(work, "packages", "packages.json"));
    assert.deepEqual(
      built.map((p) => p.name),
      PUBLISHED,
    );

    await mkdir(app);
    await writeFile(
      join(app, "package.json"),
      JSON.stringify({ name: "nexusflow-sdk-consumer", private: true, type: "module" }, null, 2),
    );
    const rootManifest = await readJson<{ devDependencies: Record<string, string> }>(
      join(ROOT, "package.json"),
    );
    const typesNode = rootManifest.devDependencies["@types/node"];
    assert.ok(typesNode !== undefined, "the workspace pins @types/node");
    const [npm, npmArgs] = npmCommand();
    await exec(
      npm,
      [
        ...npmArgs,
        "install",
        ...built.map((p) => p.tarball),
        `@types/node@${typesNode}`,
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
      ],
      { cwd: app, env: cleanEnv(), maxBuffer: 64 * 1024 * 1024, timeout: 300_000 },
    );
  });

  after(async () => {
    await stack?.close();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("installs public packages that depend on no private or workspace-only package", T, async () => {
    for (const pkg of built) {
      const dir = join(app, "node_modules", ...pkg.name.split("/"));
      // Extracted from its tarball, not linked to this checkout.
      assert.ok(!(await realpath(dir)).startsWith(ROOT), `${pkg.name} is installed, not linked`);
      const manifest = await readJson<Manifest>(join(dir, "package.json"));
      assert.equal(manifest.name, pkg.name);
      assert.equal(manifest.private, undefined, `${pkg.name} is not private`);
      assert.match(manifest.version, /^\d+\.\d+\.\d+/);
      assert.equal(manifest.license, "Apache-2.0");
      assert.ok(existsSync(join(dir, "LICENSE")), `${pkg.name} ships LICENSE`);
      assert.match(await readFile(join(dir, "LICENSE"), "utf8"), /Apache License\s+Version 2\.0/);
      assert.ok(existsSync(join(dir, "README.md")), `${pkg.name} ships README.md`);
      for (const [name, spec] of Object.entries(manifest.dependencies ?? {})) {
        assert.doesNotMatch(spec, /^(\*|workspace:|file:|link:|portal:)/, `${pkg.name} -> ${name}@${spec}`);
        if (name.startsWith("@nexusflow/")) {
          const sibling = built.find((p) => p.name === name);
          assert.ok(sibling !== undefined, `${pkg.name} depends on ${name}, which is not published`);
          assert.equal(spec, sibling.version, `${pkg.name} depends on the published ${name}`);
        }
        // Where Node resolves it from the package: nested under it, or hoisted to the top.
        const nested = join(dir, "node_modules", ...name.split("/"), "package.json");
        const top = join(app, "node_modules", ...name.split("/"), "package.json");
        const installed = await readJson<Manifest>(existsSync(nested) ? nested : top);
        assert.notEqual(installed.private, true, `${pkg.name}'s dependency ${name} is not private`);
      }
      // Compiled JavaScript and declarations only: no TypeScript sources, no tests.
      const files = await listFiles(join(dir, "dist"));
      assert.ok(
        files.includes("index.js") && files.includes("index.d.ts"),
        `${pkg.name}: ${files.join(", ")}`,
      );
      const stray = files.filter((f) => !f.endsWith(".js") && !f.endsWith(".d.ts"));
      assert.deepEqual(stray, [], `${pkg.name} ships only .js and .d.ts`);
      assert.deepEqual(
        files.filter((f) => f.includes(".test.")),
        [],
      );
      for (const [key, entry] of Object.entries(manifest.exports ?? {})) {
        if (!key.includes("*")) {
          assert.ok(existsSync(join(dir, entry.default)), `${pkg.name} ${key} -> ${entry.default}`);
          assert.ok(existsSync(join(dir, entry.types)), `${pkg.name} ${key} -> ${entry.types}`);
        }
      }
    }
  });

  it("type-checks TypeScript that uses both packages with the installed declarations", T, async () => {
    await writeFile(join(app, "check.ts"), CHECK_TS);
    await writeFile(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "NodeNext",
          moduleResolution: "NodeNext",
          strict: true,
          noEmit: true,
          types: ["node"],
        },
        files: ["check.ts"],
      }),
    );
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const failure = await exec(process.execPath, [tsc, "-p", join(app, "tsconfig.json")], {
      cwd: app,
      env: cleanEnv(),
    }).then(
      () => undefined,
      (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ""}${e.stderr ?? ""}`,
    );
    assert.equal(failure, undefined, `tsc found errors:\n${failure}`);
  });

  it("runs a handler and a run from plain JavaScript against a real scheduler", T, async () => {
    stack = await startTestStack();
    await writeFile(join(app, "main.js"), MAIN_JS);
    const { stdout } = await exec(process.execPath, [join(app, "main.js")], {
      cwd: app,
      env: cleanEnv({
        SCHEDULER_ADDRESS: stack.address,
        EXECUTOR_TOKEN: await stack.sign("executor", "sdk-consumer"),
        CLIENT_TOKEN: await stack.sign("workflows:write runs:write runs:read", "sdk-app"),
      }),
      timeout: 120_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
    assert.ok(line !== undefined, `no result in:\n${stdout}`);
    const result = JSON.parse(line.slice("RESULT ".length)) as {
      created: boolean;
      status: string;
      output: unknown;
      tokenCalls: number;
    };
    assert.deepEqual(
      { created: result.created, status: result.status, output: result.output },
      { created: true, status: "SUCCEEDED", output: { greeting: "hello Ada" } },
    );
    // RegisterWorkflow, StartRun and WatchRun each asked the token function.
    assert.ok(result.tokenCalls >= 3, `token asked ${result.tokenCalls} times`);
  });
});
