/**
 * `nexusflow events tail` without Kafka, spawned as a process (its `bin`) against a real embedded
 * PostgreSQL, scheduler and executor: it reads a run's lifecycle events from the outbox table in
 * sequence order, from the oldest row or from the newest, following new commits.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger, jsonToValue } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import { WorkflowService } from "@nexusflow/gen";
import { Scheduler, startEmbeddedPostgres, type EmbeddedDatabase } from "@nexusflow/scheduler";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "cli", "src", "bin.mjs");
const T = { timeout: 120_000 };

interface Line {
  topic: string;
  offset: string;
  key: string | null;
  type: string;
  headers: Record<string, string>;
  event: { runId?: string; sequence?: string };
}

/** `nexusflow events tail ...args` as a child process, collecting its output as it comes. */
class Tail {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(args: readonly string[], env: Record<string, string>, cwd = ROOT) {
    const base = Object.fromEntries(
      Object.entries(process.env).filter(
        ([k]) => !k.startsWith("NEXUSFLOW_") && !k.startsWith("KAFKA_") && k !== "DATABASE_URL",
      ),
    );
    this.child = spawn(process.execPath, [BIN, "events", "tail", ...args], {
      cwd,
      env: { ...base, NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.setEncoding("utf8").on("data", (c: string) => {
      this.stdout += c;
      this.notify();
    });
    this.child.stderr?.setEncoding("utf8").on("data", (c: string) => {
      this.stderr += c;
      this.notify();
    });
    this.exited = new Promise((resolve) => this.child.on("close", (code) => resolve(code)));
    void this.exited.then(() => this.notify());
  }

  lines(): Line[] {
    return this.stdout
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Line);
  }

  /** Resolves once `condition` holds on the output; fails if the process ends or after 60 s. */
  async until(what: string, condition: () => boolean): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (!condition()) {
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        assert.fail(`tail ended (${this.child.exitCode}) before ${what}; stderr:\n${this.stderr}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) assert.fail(`timed out waiting for ${what}; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, remaining);
        function done(): void {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
        const waiters = this.waiters;
        waiters.add(done);
      });
    }
  }

  /** Ctrl-C; resolves with the exit code. */
  async interrupt(): Promise<number | null> {
    this.child.kill("SIGINT");
    return this.exited;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** Asserts `lines` are exactly run `runId`'s events 1..n, run_started first, run_completed last. */
function assertWholeRun(lines: Line[], runId: string): void {
  assert.ok(lines.length >= 4, `expected a whole run, got ${lines.length} events`);
  for (const [i, l] of lines.entries()) {
    assert.equal(l.key, runId);
    assert.equal(l.event.runId, runId);
    assert.equal(l.event.sequence, String(i + 1), `event ${i} out of sequence order`);
    assert.equal(l.headers["nf-sequence"], String(i + 1));
    assert.equal(l.topic, "outbox_events");
  }
  assert.equal(lines[0]?.type, "run_started");
  assert.equal(lines.at(-1)?.type, "run_completed");
  assert.ok(lines.some((l) => l.type === "task_succeeded"));
}

const completed = (tail: Tail, runId: string) => (): boolean =>
  tail.lines().some((l) => l.key === runId && l.type === "run_completed");

describe("nexusflow events tail without Kafka (outbox in PostgreSQL)", () => {
  let dir: string;
  let pg: EmbeddedDatabase;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: Client<typeof WorkflowService>;
  let env: Record<string, string>;
  const tails: Tail[] = [];

  const start = async (): Promise<string> => {
    const { run } = await client.startRun({ workflowName: "tail-outbox", input: jsonToValue({}) });
    assert.ok(run?.id);
    return run.id;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-cli-tail-"));
    const log = createLogger("test", "warn");
    // Where a dev stack of data directory `<dir>/data` keeps it.
    pg = await startEmbeddedPostgres({ dir: join(dir, "data", "postgres"), log });
    scheduler = new Scheduler({ port: 0, databaseUrl: pg.url, log });
    await scheduler.start();
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "tail-executor",
      slots: 4,
      logger: createLogger("executor", "silent"),
    });
    await executor.start();
    client = createClient(WorkflowService, createGrpcTransport({ baseUrl: `http://${scheduler.address}` }));
    await client.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "tail-outbox",
          version: 1,
          steps: [
            { id: "a", type: "noop", input: { x: 1 } },
            { id: "b", type: "noop", dependsOn: ["a"], input: { y: 2 } },
          ],
        }),
      },
    });
    env = { DATABASE_URL: pg.url, NEXUSFLOW_DATA_DIR: join(dir, "none") };
  });

  after(async () => {
    for (const t of tails) if (t.child.exitCode === null) t.child.kill("SIGKILL");
    await executor?.stop();
    await scheduler?.stop();
    await pg?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    "--run --from-beginning prints that run's events in sequence order, then Ctrl-C ends it",
    T,
    async () => {
      const other = await start();
      const runId = await start();
      const tail = new Tail(["--run", runId, "--from-beginning"], env);
      tails.push(tail);
      await tail.until(`run ${runId} completed`, completed(tail, runId));
      assert.ok(!tail.stdout.includes(other), "events of another run were printed");
      assertWholeRun(tail.lines(), runId);
      assert.equal(await tail.interrupt(), 0, tail.stderr);
    },
  );

  it(
    "without --from-beginning follows new commits only (the dev stack's database found by its data directory)",
    T,
    async () => {
      const before = await start();
      const tail = new Tail([], { NEXUSFLOW_DATA_DIR: join(dir, "data") });
      tails.push(tail);
      await tail.until("the tail to follow the outbox", () =>
        /following the outbox table at /.test(tail.stderr),
      );
      assert.doesNotMatch(tail.stderr, /nexusflow:nexusflow@/, "the password is not printed");
      const runId = await start();
      await tail.until(`run ${runId} completed`, completed(tail, runId));
      assertWholeRun(
        tail.lines().filter((l) => l.key === runId),
        runId,
      );
      // Rows committed before the tail started are not printed (unless the earlier run was still going).
      assert.ok(!tail.lines().some((l) => l.key === before && l.type === "run_started"));
      assert.equal(await tail.interrupt(), 0, tail.stderr);
    },
  );

  it("with neither Kafka nor a database says what to set, in one line", T, async () => {
    const tail = new Tail(
      [],
      { NEXUSFLOW_DATA_DIR: join(dir, "none"), XDG_RUNTIME_DIR: join(dir, "run") },
      dir,
    );
    assert.equal(await tail.exited, 1);
    assert.match(
      tail.stderr,
      /^nexusflow events: no Kafka and no database: set KAFKA_BROKERS .*DATABASE_URL.*\n$/,
    );
  });
});
