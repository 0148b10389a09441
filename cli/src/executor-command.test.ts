/**
 * `nexusflow executor --handlers ./my-handlers.ts` run as a process (its `bin`) from a directory
 * outside the repository, with no node_modules, against a real scheduler with authentication on
 * that plays the running dev stack (recorded in the state file, trusting the dev key): the
 * TypeScript handler module imports `@nexusflow/executor`, the executor mints its own token and
 * attaches, and runs of the workflow succeed (and fail with the handler's TaskError). Bad options,
 * a missing module and a missing token end it at once with one line.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { access, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, createTokenVerifier, jsonToValue, valueToJson } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { type Run, RunStatus, WorkflowService } from "@nexusflow/gen";
import { Scheduler, startEmbeddedPostgres, type EmbeddedDatabase } from "@nexusflow/scheduler";
import { DEV_AUDIENCE, DEV_ISSUER, devKeysDir, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { writeDevState } from "./dev-state.js";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "bin.mjs");
const T = { timeout: 120_000 };

/** A handler module as a user writes it, next to nothing: no package.json, no node_modules. */
const HANDLERS = `import { type HandlerRegistry, type TaskContext, TaskError } from "@nexusflow/executor";

interface GreetInput {
  name?: string;
}

export default function register(registry: HandlerRegistry): void {
  registry.register("greet-outside", (input: GreetInput, ctx: TaskContext) => {
    if (input.name === undefined || input.name === "") {
      throw TaskError.terminal("NO_NAME", "a name is required");
    }
    ctx.log.info("greeting", { name: input.name });
    return { greeting: \`hello \${input.name}\` };
  });
}
`;

/** Variables of the test's own environment that would change what the command does. */
const CONFIGURING = /^(NEXUSFLOW_|EXECUTOR_|SCHEDULER_|S3_|ARTIFACTS_DIR$|XDG_RUNTIME_DIR$|LOG_LEVEL$)/;

/** `nexusflow executor ...args` in `cwd`, collecting its output as it comes. */
class ExecutorProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(args: readonly string[], cwd: string, env: Record<string, string>) {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CONFIGURING.test(k)));
    this.child = spawn(process.execPath, [BIN, "executor", ...args], {
      cwd,
      env: { ...base, NO_COLOR: "1", LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.setEncoding("utf8").on("data", (c: string) => (this.stdout += c));
    this.child.stderr?.setEncoding("utf8").on("data", (c: string) => (this.stderr += c));
    this.exited = new Promise((resolve) => this.child.on("close", (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until stderr matches `pattern`; fails at once if the process ends first. */
  async waitForStderr(pattern: RegExp): Promise<RegExpMatchArray> {
    return waitFor(
      `stderr to match ${pattern}`,
      () => {
        const match = pattern.exec(this.stderr);
        if (match !== null) return match;
        if (!this.running)
          assert.fail(`the executor exited (${this.child.exitCode}); stderr:\n${this.stderr}`);
        return undefined;
      },
      60_000,
    );
  }
}

describe("nexusflow executor --handlers from another directory", () => {
  let work: string;
  let handlersDir: string;
  let runtime: string;
  let pg: EmbeddedDatabase;
  let scheduler: Scheduler;
  let client: Client<typeof WorkflowService>;
  let artifactsDir: string;
  const processes: ExecutorProcess[] = [];

  const executor = (args: readonly string[], env: Record<string, string> = {}): ExecutorProcess => {
    const p = new ExecutorProcess(args, handlersDir, { XDG_RUNTIME_DIR: runtime, ...env });
    processes.push(p);
    return p;
  };

  const finished = (runId: string): Promise<Run> =>
    waitFor(
      `run ${runId} to finish`,
      async () => {
        const { run } = await client.getRun({ runId });
        return run !== undefined && run.status !== RunStatus.PENDING && run.status !== RunStatus.RUNNING
          ? run
          : undefined;
      },
      60_000,
    );

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-executor-cmd-"));
    handlersDir = join(work, "somewhere", "else");
    runtime = join(work, "runtime");
    const dataDir = join(work, "stack");
    artifactsDir = join(dataDir, "artifacts");
    await mkdir(handlersDir, { recursive: true });
    await mkdir(runtime, { recursive: true });
    await writeFile(join(handlersDir, "my-handlers.ts"), HANDLERS);

    // The dev stack: a scheduler that trusts only the dev key of its data directory.
    const keys = await ensureDevKeys(devKeysDir(dataDir));
    const log = createLogger("test", "warn");
    pg = await startEmbeddedPostgres({ dir: join(work, "postgres"), log });
    scheduler = new Scheduler({
      port: 0,
      databaseUrl: pg.url,
      log,
      auth: await createTokenVerifier({
        publicKeyFiles: [keys.publicKeyFile],
        issuer: DEV_ISSUER,
        audience: DEV_AUDIENCE,
      }),
    });
    await scheduler.start();
    // This test process plays `npm start`: its pid is alive, the state names its scheduler.
    assert.ok(
      await writeDevState(
        { XDG_RUNTIME_DIR: runtime },
        {
          dataDir,
          gatewayUrl: "http://127.0.0.1:1",
          pid: process.pid,
          schedulerAddress: scheduler.address,
          artifactsDir,
        },
      ),
    );
    const admin = await mintDevToken(keys, { subject: "test-admin", scopes: ["admin"], ttlSec: 600 });
    const bearer: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${admin}`);
      return next(req);
    };
    client = createClient(
      WorkflowService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}`, interceptors: [bearer] }),
    );
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "greet-outside",
          version: 1,
          steps: [{ id: "greet", type: "greet-outside", input: { name: "{{ input.name }}" } }],
          output: { greeting: "{{ steps.greet.output.greeting }}" },
        }),
      },
    });
  });

  after(async () => {
    for (const p of processes) if (p.running) p.child.kill("SIGKILL");
    await Promise.all(processes.map((p) => p.exited));
    await scheduler?.stop();
    await pg?.destroy();
    await rm(work, { recursive: true, force: true });
  });

  it(
    "loads a TypeScript module that imports @nexusflow/executor, attaches with a dev token and runs it",
    T,
    async () => {
      const p = executor(["--handlers", "./my-handlers.ts", "--id", "outside-1", "--slots", "2"]);
      const [line] = await p.waitForStderr(/^nexusflow: executor outside-1 attached .*\n/m);
      assert.equal(
        line,
        `nexusflow: executor outside-1 attached to ${scheduler.address} (the running dev stack): ` +
          "types greet-outside, http, noop, shell, sleep; 2 slots; Ctrl-C drains and stops\n",
      );

      const { run: started } = await client.startRun({
        workflowName: "greet-outside",
        input: jsonToValue({ name: "Ada" }),
      });
      assert.ok(started);
      const run = await finished(started.id);
      assert.equal(run.status, RunStatus.SUCCEEDED, JSON.stringify(run.error));
      assert.deepEqual(valueToJson(run.output), { greeting: "hello Ada" });
      assert.equal(run.tasks[0]?.attempts.at(-1)?.executorId, "outside-1");
      // Its log is where the stack's scheduler reads logs from.
      await waitFor("the attempt's log in the stack's artifact directory", () =>
        access(join(artifactsDir, "runs", started.id, "greet")).then(
          () => true,
          () => undefined,
        ),
      );

      // The module's TaskError is the executor's: a terminal failure with the handler's type.
      const { run: nameless } = await client.startRun({
        workflowName: "greet-outside",
        input: jsonToValue({ name: "" }),
      });
      assert.ok(nameless);
      const failed = await finished(nameless.id);
      assert.equal(failed.status, RunStatus.FAILED);
      assert.equal(failed.error?.type, "NO_NAME");
      assert.equal(failed.tasks[0]?.attempts.length, 1, "a terminal TaskError is not retried");

      // Ctrl-C drains and exits 0.
      p.child.kill("SIGINT");
      assert.equal(await p.exited, 0, p.stderr);
      assert.match(p.stderr, /SIGINT: draining/);
      assert.deepEqual(await readdir(handlersDir), ["my-handlers.ts"], "nothing written where it ran");
    },
  );

  it("traces its handlers to the OTLP endpoint OTEL_EXPORTER_OTLP_ENDPOINT names", T, async () => {
    // An OTLP/HTTP receiver: the protobuf export requests, whose span names are plain bytes.
    const exports: Buffer[] = [];
    const receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (req.url === "/v1/traces") exports.push(Buffer.concat(chunks));
        res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = receiver.address() as AddressInfo;
      const p = executor(["--handlers", "./my-handlers.ts", "--id", "traced-1"], {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      });
      await p.waitForStderr(/^nexusflow: executor traced-1 attached /m);
      const { run } = await client.startRun({
        workflowName: "greet-outside",
        input: jsonToValue({ name: "Bo" }),
      });
      assert.ok(run);
      assert.equal((await finished(run.id)).status, RunStatus.SUCCEEDED);
      // Ctrl-C drains and flushes the spans still buffered before the process ends.
      p.child.kill("SIGINT");
      assert.equal(await p.exited, 0, p.stderr);
      const sent = Buffer.concat(exports);
      assert.ok(sent.includes("handler greet-outside"), "the handler's span reached the receiver");
      assert.ok(sent.includes(run.id), "the span names its run");
      assert.ok(sent.includes("nexusflow-executor"), "as the executor service");
    } finally {
      await new Promise((resolve) => receiver.close(resolve));
    }
  });

  it("rejects a bad option with one line and exit code 2", T, async () => {
    const slots = executor(["--handlers", "./my-handlers.ts", "--slots", "0"]);
    const unknown = executor(["--handler", "./my-handlers.ts"]);
    assert.equal(await slots.exited, 2);
    assert.equal(slots.stderr, "nexusflow: executor: --slots: must be between 1 and 10000, got 0\n");
    assert.equal(await unknown.exited, 2);
    assert.equal(
      unknown.stderr,
      'nexusflow: executor: unknown option --handler (an argument that starts with "-" goes after --)\n',
    );
  });

  it("names a handler module that does not exist, in one line", T, async () => {
    const p = executor(["--handlers", "./missing-handlers.ts"]);
    assert.equal(await p.exited, 2);
    assert.equal(
      p.stderr,
      `nexusflow: executor: --handlers: no such file: ${join(handlersDir, "missing-handlers.ts")}\n`,
    );
  });

  it("without a token or a dev key, says in one line what to set", T, async () => {
    const p = executor(["--handlers", "./my-handlers.ts", "--id", "lonely"], {
      XDG_RUNTIME_DIR: join(work, "no-stack"),
    });
    assert.equal(await p.exited, 2);
    assert.match(
      p.stderr,
      /^nexusflow: executor: no token for executor lonely: set EXECUTOR_TOKEN or EXECUTOR_TOKEN_FILE [^\n]*NEXUSFLOW_DATA_DIR[^\n]*\n$/,
    );
  });
});
