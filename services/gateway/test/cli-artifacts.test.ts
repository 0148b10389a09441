/**
 * `nexusflow artifacts list|get` and `nexusflow logs`, spawned as processes (the CLI's `bin`)
 * against a real gateway and scheduler (authentication on in both, as `npm start` runs them) on a
 * real embedded PostgreSQL, with real executors storing into the filesystem store the scheduler
 * reads, and one storing elsewhere (another directory) or nowhere (no store). On S3 (S3Proxy, when
 * S3_ENDPOINT is set; required under CI=true) `get` downloads through the presigned URL.
 *
 * The scheduler's store is the real one with two test hooks: it records which prefixes it lists
 * (a follower polling a log) and can hold the content of `slow.bin` after its first bytes (an
 * interrupted download).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { type TestContext, after, before, describe, it } from "node:test";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { type TokenVerifier, createTokenVerifier, jsonToValue } from "@nexusflow/common";
import {
  type ArtifactStore,
  FilesystemArtifactStore,
  type ListOptions,
  S3ArtifactStore,
  type S3ArtifactStoreOptions,
} from "@nexusflow/common/artifacts";
import { requireService } from "@nexusflow/common/testing";
import { Executor, type ExecutorOptions, TaskError, bearerToken } from "@nexusflow/executor";
import { type ArtifactRef, type Run, RunStatus, TaskStatus, WorkflowService } from "@nexusflow/gen";
import type { Scheduler } from "@nexusflow/scheduler";
import { pino } from "pino";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
} from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { type CliExit, oneLine, startCli } from "./cli-process.js";

const T = { timeout: 120_000 };

type Result = CliExit;
const start = (args: readonly string[], env: Record<string, string>) => startCli(args, env, 90_000);
const nexusflow = (args: readonly string[], env: Record<string, string>): Promise<Result> =>
  start(args, env).exited;

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The scheduler's filesystem store, recording listed prefixes and able to hold `slow.bin`. */
class HookedFilesystemStore extends FilesystemArtifactStore {
  readonly listed: string[] = [];
  #release: () => void = () => {};
  readonly #released = new Promise<void>((resolve) => (this.#release = resolve));

  override list(prefix: string, options?: ListOptions): Promise<ArtifactRef[]> {
    this.listed.push(prefix);
    return super.list(prefix, options);
  }

  override async get(key: string): Promise<Readable> {
    const content = await super.get(key);
    if (!key.endsWith("/slow.bin")) return content;
    const released = this.#released;
    return Readable.from(
      (async function* () {
        let sent = 0;
        for await (const piece of content as AsyncIterable<Buffer>) {
          if (sent >= 128 * 1024) await released;
          sent += piece.length;
          yield piece;
        }
      })(),
    );
  }

  /** Lets `slow.bin` downloads finish. */
  release(): void {
    this.#release();
  }
}

/** The scheduler's S3 store, counting reads of content (a presigned download makes none). */
class CountingS3Store extends S3ArtifactStore {
  readonly reads: string[] = [];

  override get(key: string): Promise<Readable> {
    this.reads.push(key);
    return super.get(key);
  }
}

/** Lines written to the scheduler's logger (debug), for "this call has reached the scheduler". */
class LogLines extends Writable {
  readonly lines: { msg?: string; rpc?: string; subject?: string }[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString("utf8").split("\n"))
      if (line.includes("call authorized")) this.lines.push(JSON.parse(line) as LogLines["lines"][number]);
    done();
  }
}

const BLOB = randomBytes(300_000);
const SLOW = randomBytes(1024 * 1024);
const CSV = "n,square\n1,1\n2,4\n3,9\n";

/** Gates the `gate` step of the `cli-gated` workflow. */
let openGate: () => void = () => {};
const gateOpened = new Promise<void>((resolve) => (openGate = resolve));

/**
 * Starts an executor with the handlers `register` adds (only possible before it starts) and waits
 * until its session is attached with credit.
 */
async function startExecutor(
  scheduler: Scheduler,
  options: Partial<ExecutorOptions> & { executorId: string },
  register: (executor: Executor) => Executor,
): Promise<Executor> {
  const executor = register(
    new Executor({ schedulerAddress: scheduler.address, logger: testLogger("executor"), ...options }),
  );
  await executor.start();
  await waitFor(`executor ${options.executorId}'s session`, () =>
    [...scheduler.engine.sessions()].some((s) => s.executorId === options.executorId && s.credit > 0),
  );
  return executor;
}

function registerHandlers(executor: Executor): Executor {
  return executor
    .register("cli.files", async (_input, ctx) => {
      ctx.log.info("saving files");
      await ctx.artifacts.put("report.csv", CSV, { contentType: "text/csv" });
      await ctx.artifacts.put("data/blob.bin", BLOB);
      await ctx.artifacts.put("slow.bin", SLOW);
      return { saved: 3 };
    })
    .register("cli.retry", async (_input, ctx) => {
      await ctx.artifacts.put("attempt.txt", `attempt ${ctx.attempt}`, { contentType: "text/plain" });
      if (ctx.attempt === 1) throw TaskError.retryable("FLAKY", "first attempts fail");
      return {};
    })
    .register("cli.gate", async (_input, ctx) => {
      await gateOpened;
      ctx.log.info("gate opened");
      return {};
    })
    .register("cli.after", (_input, ctx) => {
      ctx.log.info("after ran");
      return {};
    });
}

interface Stack {
  keys: TestKeys;
  db: Awaited<ReturnType<typeof startTestDatabase>>;
  scheduler: Scheduler;
  gateway: Gateway;
  executors: Executor[];
  sessions: Http2SessionManager;
  workflows: Client<typeof WorkflowService>;
  url: string;
  sign(subject: string, scope: string): Promise<string>;
  /** Registers `spec`, starts a run with `input` and waits for it to end. */
  runToEnd(spec: object, input?: object): Promise<Run>;
  close(): Promise<void>;
}

async function startStack(options: {
  store: ArtifactStore;
  /** Starts the executors. */
  executors: (scheduler: Scheduler, token: (id: string) => Promise<string>) => Promise<Executor[]>;
  log?: Writable;
}): Promise<Stack> {
  const keys = await createTestKeys();
  const key = keys.keys.ES256;
  const sign = (subject: string, scope: string): Promise<string> => keys.sign(key, { sub: subject, scope });
  const verifier: TokenVerifier = await createTokenVerifier({
    publicKeyFiles: [key.pemFile],
    issuer: ISSUER,
    audience: AUDIENCE,
  });
  const db = await startTestDatabase();
  const scheduler = await startTestScheduler(db.url, {
    artifacts: options.store,
    auth: verifier,
    ...(options.log === undefined ? {} : { log: pino({ level: "debug" }, options.log) }),
  });
  const executors = await options.executors(scheduler, (id) => sign(id, "executor"));
  const gateway = createGateway({ schedulerAddress: scheduler.address, port: 0, verifier });
  const { url } = await gateway.listen();
  const admin = await sign("cli-test", "admin");
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${admin}`);
    return next(req);
  };
  const sessions = new Http2SessionManager(url);
  const workflows = createClient(
    WorkflowService,
    createGrpcTransport({ baseUrl: url, sessionManager: sessions, interceptors: [auth] }),
  );
  return {
    keys,
    db,
    scheduler,
    gateway,
    executors,
    sessions,
    workflows,
    url,
    sign,
    async runToEnd(spec, input = {}) {
      await workflows.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
      const { run } = await workflows.startRun({
        workflowName: (spec as { name: string }).name,
        input: jsonToValue(input),
      });
      assert.ok(run);
      return waitForRun(workflows, run.id, 60_000);
    },
    async close() {
      sessions.abort();
      await gateway.close();
      for (const e of executors) await e.stop("test over");
      await scheduler.stop();
      await db.close();
      await keys.close();
    },
  };
}

describe("nexusflow artifacts and logs against a live stack (filesystem store)", () => {
  let stack: Stack;
  let store: HookedFilesystemStore;
  let roots: string[] = [];
  let work: string;
  let env: Record<string, string>;
  let readerEnv: Record<string, string>;
  let run: Run;
  const schedulerLog = new LogLines();

  before(async () => {
    const [a, b] = [
      await mkdtemp(join(tmpdir(), "nf-cli-store-")),
      await mkdtemp(join(tmpdir(), "nf-cli-other-")),
    ];
    roots = [a, b];
    work = await mkdtemp(join(tmpdir(), "nf-cli-out-"));
    store = new HookedFilesystemStore({ root: a });
    await store.ensureReady();
    stack = await startStack({
      store,
      log: schedulerLog,
      executors: async (scheduler, token) => [
        await startExecutor(
          scheduler,
          {
            executorId: "cli-files",
            slots: 8,
            metadata: bearerToken(await token("cli-files")),
            artifacts: new FilesystemArtifactStore({ root: a }),
          },
          registerHandlers,
        ),
        // Stores into another directory than the scheduler reads: its logs are "elsewhere".
        await startExecutor(
          scheduler,
          {
            executorId: "cli-elsewhere",
            metadata: bearerToken(await token("cli-elsewhere")),
            artifacts: new FilesystemArtifactStore({ root: b }),
            builtins: false,
          },
          (e) =>
            e.register("cli.elsewhere", (_input, ctx) => {
              ctx.log.info("written elsewhere");
              return {};
            }),
        ),
        // No store at all: logs are kept in memory only.
        await startExecutor(
          scheduler,
          { executorId: "cli-memory", metadata: bearerToken(await token("cli-memory")), builtins: false },
          (e) =>
            e.register("cli.memory", (_input, ctx) => {
              ctx.log.info("kept in memory");
              return {};
            }),
        ),
      ],
    });
    env = { NEXUSFLOW_ADDRESS: stack.url, NEXUSFLOW_TOKEN: await stack.sign("cli-admin", "admin") };
    readerEnv = { ...env, NEXUSFLOW_TOKEN: await stack.sign("cli-reader", "runs:read") };
    run = await stack.runToEnd(
      {
        name: "cli-artifacts",
        version: 1,
        steps: [
          { id: "files", type: "cli.files" },
          { id: "retry", type: "cli.retry", retry: { maxAttempts: 2, initialInterval: "10ms" } },
          { id: "elsewhere", type: "cli.elsewhere" },
          { id: "memory", type: "cli.memory" },
          { id: "quiet", type: "noop" },
          { id: "skipped", type: "noop", when: "input.never" },
        ],
      },
      { never: false },
    );
    assert.equal(run.status, RunStatus.SUCCEEDED);
  });

  after(async () => {
    openGate();
    store?.release();
    await stack?.close();
    for (const dir of [...roots, work])
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it(
    "artifacts list: a table of what each step stored, by step and attempt; JSON with -o json",
    T,
    async () => {
      const all = await nexusflow(["artifacts", "list", run.id], env);
      assert.equal(all.code, 0, all.stderr);
      const rows = all.stdout.toString().trimEnd().split("\n");
      assert.match(rows[0] ?? "", /^STEP\s+ATTEMPT\s+NAME\s+SIZE\s+CONTENT TYPE$/);
      const table = rows.slice(1).map((r) => r.split(/\s{2,}/));
      assert.deepEqual(
        table.filter((r) => r[2] !== "logs.jsonl"),
        [
          ["files", "1", "data/blob.bin", "293.0 KiB", "application/octet-stream"],
          ["files", "1", "report.csv", `${CSV.length} B`, "text/csv"],
          ["files", "1", "slow.bin", "1.0 MiB", "application/octet-stream"],
          ["retry", "1", "attempt.txt", "9 B", "text/plain"],
          ["retry", "2", "attempt.txt", "9 B", "text/plain"],
        ],
      );
      assert.ok(
        table.some((r) => r[0] === "files" && r[2] === "logs.jsonl"),
        "logs are artifacts too",
      );

      const one = await nexusflow(["artifacts", "list", run.id, "retry", "-o", "json"], env);
      assert.equal(one.code, 0, one.stderr);
      const listed = JSON.parse(one.stdout.toString()) as { artifacts: { key: string; size: string }[] };
      assert.deepEqual(
        listed.artifacts.map((a) => a.key).filter((k) => k.endsWith("attempt.txt")),
        [`runs/${run.id}/retry/attempt-1/attempt.txt`, `runs/${run.id}/retry/attempt-2/attempt.txt`],
      );

      const none = await nexusflow(["artifacts", "list", run.id, "skipped"], env);
      assert.equal(none.code, 0, none.stderr);
      assert.equal(none.stdout.length, 0);
      assert.equal(oneLine(none), `nexusflow: artifacts list: step skipped of run ${run.id} stored nothing`);
    },
  );

  it("artifacts get: the content on stdout, byte for byte (-o - or no -o)", T, async () => {
    for (const extra of [[], ["-o", "-"]]) {
      const r = await nexusflow(["artifacts", "get", run.id, "files", "data/blob.bin", ...extra], env);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      assert.equal(sha256(r.stdout), sha256(BLOB));
    }
  });

  it("artifacts get -o FILE: writes the file, never over an existing one without --force", T, async () => {
    const file = join(work, "blob.bin");
    const first = await nexusflow(["artifacts", "get", run.id, "files", "data/blob.bin", "-o", file], env);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.length, 0);
    assert.match(
      oneLine(first),
      /^nexusflow: artifacts get: wrote runs\/.*\/files\/attempt-1\/data\/blob.bin \(293.0 KiB\) to /,
    );
    assert.deepEqual(await readFile(file), BLOB);

    const again = await nexusflow(["artifacts", "get", run.id, "files", "report.csv", "-o", file], env);
    assert.equal(again.code, 1);
    assert.equal(oneLine(again), `nexusflow: artifacts get: ${file} exists (--force replaces it)`);
    assert.deepEqual(await readFile(file), BLOB, "left as it was");

    const forced = await nexusflow(
      ["artifacts", "get", run.id, "files", "report.csv", "-o", file, "--force"],
      env,
    );
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(await readFile(file, "utf8"), CSV);

    const intoDir = await nexusflow(
      ["artifacts", "get", run.id, "files", "report.csv", "-o", work, "--force"],
      env,
    );
    assert.equal(intoDir.code, 1);
    assert.equal(oneLine(intoDir), `nexusflow: artifacts get: ${work} is a directory`);
    assert.deepEqual(await readdir(work), ["blob.bin"], "no temporary file left behind");
  });

  it("artifacts get: the latest attempt's file unless --attempt says which", T, async () => {
    const latest = await nexusflow(["artifacts", "get", run.id, "retry", "attempt.txt"], env);
    assert.equal(latest.code, 0, latest.stderr);
    assert.equal(latest.stdout.toString(), "attempt 2");
    const first = await nexusflow(
      ["artifacts", "get", run.id, "retry", "attempt.txt", "--attempt", "1"],
      env,
    );
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout.toString(), "attempt 1");
  });

  it("artifacts get: a missing artifact is one line naming run, step and name, exit 1", T, async () => {
    const asked = `; asked the gateway at ${stack.url}`;
    const name = await nexusflow(
      ["artifacts", "get", run.id, "files", "nope.txt", "-o", join(work, "x")],
      env,
    );
    assert.equal(name.code, 1);
    assert.equal(
      oneLine(name),
      `nexusflow: artifacts get: no artifact "nope.txt" of step files in run ${run.id} ` +
        `(it has data/blob.bin, logs.jsonl, report.csv, slow.bin)${asked}`,
    );
    const attempt = await nexusflow(
      ["artifacts", "get", run.id, "retry", "attempt.txt", "--attempt", "3"],
      env,
    );
    assert.equal(attempt.code, 1);
    assert.equal(
      oneLine(attempt),
      `nexusflow: artifacts get: no artifact "attempt.txt" of step retry attempt 3 in run ${run.id} ` +
        `(attempt 1, 2 has it)${asked}`,
    );
    const missingRun = randomUUID();
    const noRun = await nexusflow(["artifacts", "get", missingRun, "files", "report.csv"], env);
    assert.equal(noRun.code, 1);
    assert.equal(
      oneLine(noRun),
      `nexusflow: artifacts get: no artifact "report.csv" of step files in run ${missingRun} ` +
        `(run ${missingRun} does not exist)${asked}`,
    );
    assert.deepEqual(await readdir(work).then((f) => f.filter((n) => n !== "blob.bin")), []);
  });

  it("artifacts get -o FILE: an interrupted download leaves no file, complete or partial", T, async () => {
    const file = join(work, "slow.bin");
    const { child, exited } = start(["artifacts", "get", run.id, "files", "slow.bin", "-o", file], env);
    // The scheduler holds the content after its first 128 KiB: the download is under way.
    const part = await waitFor("the partial download", async () => {
      const names = (await readdir(work)).filter((n) => n.startsWith(".slow.bin.") && n.endsWith(".part"));
      const sizes = await Promise.all(names.map((n) => stat(join(work, n)).then((s) => s.size)));
      return sizes.some((s) => s > 0) ? names : undefined;
    });
    assert.equal(part.length, 1);
    child.kill("SIGINT");
    const r = await exited;
    assert.equal(r.code, 130, r.stderr);
    assert.deepEqual(
      (await readdir(work)).filter((n) => n.includes("slow")),
      [],
      "neither slow.bin nor its temporary file",
    );
    store.release();
    const whole = await nexusflow(["artifacts", "get", run.id, "files", "slow.bin", "-o", file], env);
    assert.equal(whole.code, 0, whole.stderr);
    assert.equal(sha256(await readFile(file)), sha256(SLOW));
    await rm(file);
  });

  it("logs: prints a step's lines; an empty log says so and exits 0", T, async () => {
    const files = await nexusflow(["logs", run.id, "files"], env);
    assert.equal(files.code, 0, files.stderr);
    assert.match(files.stdout.toString(), /#1 info\s+saving files\n$/);
    assert.equal(files.stderr, "");

    const quiet = await nexusflow(["logs", run.id, "quiet"], env);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stdout.length, 0);
    assert.equal(
      oneLine(quiet),
      `nexusflow: logs: step quiet of run ${run.id} logged no lines; asked the gateway at ${stack.url}`,
    );
  });

  it(
    "logs: a log that is not there is one line saying what was looked for and where, exit 1",
    T,
    async () => {
      const asked = `; asked the gateway at ${stack.url}`;
      const key = (step: string): string => `runs/${run.id}/${step}/attempt-1/logs.jsonl`;

      // Written by an executor whose store is another directory than the scheduler's.
      const elsewhere = await nexusflow(["logs", run.id, "elsewhere"], env);
      assert.equal(elsewhere.code, 1);
      assert.equal(elsewhere.stdout.length, 0);
      assert.equal(
        oneLine(elsewhere),
        `nexusflow: logs: NOT_FOUND: no log of step elsewhere in run ${run.id}: looked for ${key("elsewhere")} ` +
          `in the filesystem artifact store at ${roots[0]}; executor cli-elsewhere reported storing it, so the ` +
          "scheduler reads another artifact store than the executors write to (compare ARTIFACTS_DIR, " +
          `NEXUSFLOW_DATA_DIR, S3_ENDPOINT and S3_BUCKET of both)${asked}`,
      );
      // Only admins learn where the store is.
      const reader = await nexusflow(["logs", run.id, "elsewhere"], readerEnv);
      assert.equal(reader.code, 1);
      assert.match(
        oneLine(reader),
        new RegExp(
          `looked for ${escape(key("elsewhere"))} in the scheduler's filesystem artifact store ` +
            `\\(an admin token shows where it is\\); executor cli-elsewhere reported storing it`,
        ),
      );
      assert.ok(!reader.stderr.includes(roots[0] as string));

      const memory = await nexusflow(["logs", run.id, "memory"], env);
      assert.equal(memory.code, 1);
      assert.equal(
        oneLine(memory),
        `nexusflow: logs: NOT_FOUND: no log of step memory in run ${run.id}: looked for ${key("memory")} ` +
          `in the filesystem artifact store at ${roots[0]}; executor cli-memory reported no log for attempt 1 ` +
          `(an executor without an artifact store keeps its logs in memory only)${asked}`,
      );

      const skipped = await nexusflow(["logs", run.id, "skipped", "--follow"], env);
      assert.equal(skipped.code, 1);
      assert.equal(
        oneLine(skipped),
        `nexusflow: logs: NOT_FOUND: step skipped of run ${run.id} never ran (SKIPPED), so it has no log${asked}`,
      );

      const wrongStep = await nexusflow(["logs", run.id, "nope"], env);
      assert.equal(wrongStep.code, 1);
      assert.equal(oneLine(wrongStep), `nexusflow: logs: NOT_FOUND: run ${run.id} has no step nope${asked}`);

      const wrongAttempt = await nexusflow(["logs", run.id, "files", "--attempt", "2"], env);
      assert.equal(wrongAttempt.code, 1);
      assert.equal(
        oneLine(wrongAttempt),
        `nexusflow: logs: NOT_FOUND: step files of run ${run.id} has no attempt 2${asked}`,
      );
    },
  );

  it("logs --follow: waits for a step that has not started or not logged yet", T, async (t: TestContext) => {
    const spec = {
      name: "cli-gated",
      version: 1,
      steps: [
        { id: "gate", type: "cli.gate" },
        { id: "after", type: "cli.after", dependsOn: ["gate"] },
      ],
    };
    await stack.workflows.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
    const { run: gated } = await stack.workflows.startRun({ workflowName: "cli-gated" });
    assert.ok(gated);
    await waitFor("the gate step to run", async () => {
      const { run: now } = await stack.workflows.getRun({ runId: gated.id });
      return now?.tasks.find((task) => task.stepId === "gate")?.status === TaskStatus.RUNNING;
    });

    // Not started: without --follow that is an error, with it the follower waits.
    const early = await nexusflow(["logs", gated.id, "after"], env);
    assert.equal(early.code, 1);
    assert.match(
      oneLine(early),
      /^nexusflow: logs: NOT_FOUND: step after of run \S+ has not started \(\w+\), so it has no log yet; follow to wait for it; asked/,
    );
    const pendingEnv = { ...env, NEXUSFLOW_TOKEN: await stack.sign("follow-pending", "runs:read") };
    const pending = start(["logs", gated.id, "after", "--follow"], pendingEnv);
    await waitFor("the pending follower's call at the scheduler", () =>
      schedulerLog.lines.some(
        (l) => l.subject === "follow-pending" && l.rpc === "nexusflow.v1.ArtifactService/GetTaskLogs",
      ),
    );

    // Running, nothing logged yet: the follower polls the attempt's log chunks.
    const running = start(["logs", gated.id, "gate", "--follow"], env);
    const chunks = `runs/${gated.id}/gate/attempt-1/logs/`;
    const before = store.listed.filter((p) => p === chunks).length;
    await waitFor(
      "the running follower's polls",
      () => store.listed.filter((p) => p === chunks).length >= before + 2,
    );
    t.diagnostic("both followers are waiting; opening the gate");

    openGate();
    const [gate, later] = await Promise.all([running.exited, pending.exited]);
    assert.equal(gate.code, 0, gate.stderr);
    assert.match(gate.stdout.toString(), /#1 info\s+gate opened\n$/);
    assert.equal(later.code, 0, later.stderr);
    assert.match(later.stdout.toString(), /#1 info\s+after ran\n$/);
    assert.equal((await waitForRun(stack.workflows, gated.id)).status, RunStatus.SUCCEEDED);
  });

  it("usage errors exit 2", T, async () => {
    for (const args of [
      ["artifacts"],
      ["artifacts", "frob"],
      ["artifacts", "get", run.id, "files"],
      ["artifacts", "get", run.id, "files", "x", "--attempt", "0"],
      ["artifacts", "list"],
    ]) {
      const r = await nexusflow(args, env);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /Run "nexusflow help artifacts" for usage/);
    }
  });
});

describe("nexusflow artifacts get on S3: through the presigned URL", () => {
  let stack: Stack | undefined;
  let store: CountingS3Store | undefined;
  let s3: S3ArtifactStoreOptions;
  let work: string;
  let env: Record<string, string>;
  let run: Run;

  before(async () => {
    if ((process.env["S3_ENDPOINT"] ?? "") === "") return;
    s3 = {
      endpoint: process.env["S3_ENDPOINT"] ?? "",
      accessKey: process.env["S3_ACCESS_KEY"] ?? "",
      secretKey: process.env["S3_SECRET_KEY"] ?? "",
      region: process.env["S3_REGION"] ?? "us-east-1",
      bucket: `nf-cli-artifacts-${randomUUID()}`,
    };
    work = await mkdtemp(join(tmpdir(), "nf-cli-s3-out-"));
    store = new CountingS3Store(s3);
    await store.ensureReady();
    stack = await startStack({
      store,
      executors: async (scheduler, token) => [
        await startExecutor(
          scheduler,
          {
            executorId: "cli-s3",
            metadata: bearerToken(await token("cli-s3")),
            artifacts: new S3ArtifactStore(s3),
          },
          registerHandlers,
        ),
      ],
    });
    env = { NEXUSFLOW_ADDRESS: stack.url, NEXUSFLOW_TOKEN: await stack.sign("cli-admin", "admin") };
    run = await stack.runToEnd({ name: "cli-s3", version: 1, steps: [{ id: "files", type: "cli.files" }] });
    assert.equal(run.status, RunStatus.SUCCEEDED);
  });

  after(async () => {
    await stack?.close();
    if (store !== undefined) {
      await store.delete();
      const { Client: MinioClient } = await import("minio");
      const url = new URL(s3.endpoint);
      await new MinioClient({
        endPoint: url.hostname,
        port: Number(url.port || 80),
        useSSL: url.protocol === "https:",
        accessKey: s3.accessKey,
        secretKey: s3.secretKey,
        region: s3.region,
        pathStyle: true,
      }).removeBucket(s3.bucket);
      await store.close();
    }
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it(
    "lists, and downloads from S3 itself, never through the scheduler; --stream goes through it",
    T,
    async (t) => {
      if (requireService(t, "S3_ENDPOINT") === undefined || stack === undefined || store === undefined)
        return;
      const listed = await nexusflow(["artifacts", "list", run.id], env);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(
        listed.stdout.toString(),
        /files\s+1\s+data\/blob.bin\s+293.0 KiB\s+application\/octet-stream/,
      );

      const file = join(work, "blob.bin");
      const reads = store.reads.length;
      const got = await nexusflow(["artifacts", "get", run.id, "files", "data/blob.bin", "-o", file], env);
      assert.equal(got.code, 0, got.stderr);
      assert.deepEqual(await readFile(file), BLOB);
      const stdout = await nexusflow(["artifacts", "get", run.id, "files", "report.csv"], env);
      assert.equal(stdout.code, 0, stdout.stderr);
      assert.equal(stdout.stdout.toString(), CSV);
      assert.equal(
        store.reads.length,
        reads,
        "the scheduler read no content: the CLI fetched the presigned URL",
      );

      const streamed = await nexusflow(
        ["artifacts", "get", run.id, "files", "data/blob.bin", "--stream"],
        env,
      );
      assert.equal(streamed.code, 0, streamed.stderr);
      assert.equal(sha256(streamed.stdout), sha256(BLOB));
      assert.ok(store.reads.length > reads, "--stream reads through the scheduler");

      const existing = await nexusflow(
        ["artifacts", "get", run.id, "files", "data/blob.bin", "-o", file],
        env,
      );
      assert.equal(existing.code, 1);
      assert.equal(oneLine(existing), `nexusflow: artifacts get: ${file} exists (--force replaces it)`);
      await writeFile(file, "old");
      const forced = await nexusflow(
        ["artifacts", "get", run.id, "files", "data/blob.bin", "-o", file, "--force"],
        env,
      );
      assert.equal(forced.code, 0, forced.stderr);
      assert.deepEqual(await readFile(file), BLOB);
      assert.deepEqual(await readdir(work), ["blob.bin"]);
    },
  );
});
