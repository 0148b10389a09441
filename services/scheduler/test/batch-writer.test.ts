/**
 * The group-commit writer against a real PostgreSQL: a large batch commits as two transactions by
 * run, in parallel, and when one of them fails only that half is retried (the other half's rows,
 * events included, are never written twice).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { after, before, describe, it } from "node:test";
import type { CompiledWorkflow } from "../src/dag/index.js";
import { lifecycleEvent } from "../src/persistence/outbox.js";
import {
  leasedAttempt,
  newRunState,
  newTaskState,
  type AttemptState,
  type RunState,
  type TaskState,
} from "../src/model/run-state.js";
import { isPartitionFencedError, partitionOf } from "../src/cluster/partitioning.js";
import { BatchWriter } from "../src/persistence/batch-writer.js";
import { openDatabase, type Database } from "../src/persistence/database.js";
import { markQueuedRun, outboxEvents, startTestDatabase, testLogger, waitFor } from "./support.js";

describe("batch writer (PostgreSQL)", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  let db: Database;
  let definitionId: number;

  before(async () => {
    server = await startTestDatabase();
    db = await openDatabase({ url: server.url, log: testLogger("db") });
    const { rows } = await db.pool.query<{ id: number }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash) VALUES ('writer', 1, '{}', 'h') RETURNING id`,
    );
    definitionId = Number(rows[0]?.id);
  });
  after(async () => {
    await db?.close();
    await server?.close();
  });

  /** A new run with one queued task and its runStarted event, marked on `writer`. */
  const markRun = (writer: BatchWriter, name: string | ((runId: string) => string)): RunState =>
    markQueuedRun(writer, definitionId, name, { input: { n: 1 } });

  /** Rows of the runs and their tasks, and the runs' events in the outbox (each run here has one). */
  const counts = async (runIds: string[]) => {
    const { rows } = await db.pool.query<{ runs: number; tasks: number }>(
      `SELECT (SELECT count(*) FROM workflow_runs WHERE id = ANY($1::uuid[]))::int AS runs,
              (SELECT count(*) FROM task_runs WHERE run_id = ANY($1::uuid[]))::int AS tasks`,
      [runIds],
    );
    return { ...rows[0], outbox: (await outboxEvents(db.pool, runIds)).length };
  };

  /**
   * A pool on the writer's whose next `breaking.next` statements end with a broken connection:
   * after they ran (`landed`: committed, and the writer told otherwise) or before. Each calls
   * `breaking.meanwhile` as it breaks.
   */
  const breakingPool = (landed: boolean) => {
    const breaking = { next: 0, meanwhile: (): void => undefined };
    const pool = {
      connect: async () => {
        const client = await db.writerPool.connect();
        return {
          query: async (q: pg.QueryConfig) => {
            if (breaking.next === 0) return client.query(q);
            breaking.next--;
            if (landed) await client.query(q);
            breaking.meanwhile();
            throw Object.assign(new Error("Connection terminated unexpectedly"), { code: undefined });
          },
          release: (broken?: boolean) => client.release(broken),
        };
      },
    } as unknown as pg.Pool;
    return { pool, breaking };
  };

  /** Makes a new replica id the owner of all 16 partitions at epoch 1 (undone by {@link holdNone}). */
  const holdEvery = async (): Promise<string> => {
    const replicaId = randomUUID();
    await db.pool.query(
      `INSERT INTO partitions (partition, owner, epoch, lease_expires_at)
       SELECT g, $1, 1, now() + interval '1 hour' FROM generate_series(0, 15) g
       ON CONFLICT (partition) DO UPDATE SET owner = $1, epoch = 1, lease_expires_at = now() + interval '1 hour'`,
      [replicaId],
    );
    return replicaId;
  };
  const holdNone = () => db.pool.query("UPDATE partitions SET owner = NULL, lease_expires_at = now()");
  /** A writer fenced as `replicaId` holding every partition at epoch 1 but those in `lost` (read live). */
  const fencedWriter = (replicaId: string, lost: ReadonlySet<number>, fenced: () => void = () => undefined) =>
    new BatchWriter({
      pool: db.writerPool,
      log: testLogger("writer"),
      fence: { replicaId, partitionCount: 16, epochOf: (p) => (lost.has(p) ? undefined : 1), fenced },
    });

  it("commits a large batch as two transactions split by run, each run whole", async () => {
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    const small = markRun(writer, "writer");
    await writer.flush();
    assert.equal(writer.stats.commits, 1, "a small batch is one statement");
    const runs = Array.from({ length: 300 }, () => markRun(writer, "writer"));
    await writer.flush();
    assert.equal(writer.stats.commits, 3);
    const ids = runs.map((r) => r.id);
    assert.deepEqual(await counts(ids), { runs: 300, tasks: 300, outbox: 300 });
    assert.deepEqual(
      (await outboxEvents(db.pool, [small.id, ...ids.slice(0, 3)])).map((e) => [e.sequence, e.type]),
      Array.from({ length: 4 }, () => [1, "runStarted"]),
    );
    await writer.close();
  });

  it("shows each commit to its observers while the next statement runs, or at once when none follows", async () => {
    // The order of what happens, through a pool that notes when a statement is sent and answered.
    const order: string[] = [];
    let statements = 0;
    // A second run is marked while the first commit runs: the loop has more to send after it.
    let second: RunState | undefined;
    let secondDone: Promise<void> | undefined;
    const whileFirst = (): void => {
      second = markRun(writer, "writer");
      secondDone = writer.flush().then(() => void order.push("second waiter"));
    };
    const pool = {
      connect: async () => {
        const client = await db.writerPool.connect();
        return {
          query: async (q: pg.QueryConfig) => {
            const n = ++statements;
            order.push(`sent ${n}`);
            const answer = client.query(q);
            if (n === 1) whileFirst();
            const result = await answer;
            order.push(`answered ${n}`);
            return result;
          },
          release: (broken?: boolean) => client.release(broken),
        };
      },
    } as unknown as pg.Pool;
    const writer = new BatchWriter({ pool, log: testLogger("writer") });
    let observed = 0;
    writer.observe((commit) => order.push(`observed ${++observed} (${commit.events.length} events)`));
    const first = markRun(writer, "writer");
    await writer.flush().then(() => void order.push("first waiter"));
    await secondDone;
    assert.ok(second !== undefined);
    assert.deepEqual(order, [
      "sent 1",
      "answered 1",
      "first waiter",
      "sent 2",
      // The first commit is shown once the second statement is on its way, before its answer.
      "observed 1 (1 events)",
      "answered 2",
      // Nothing follows the second commit: shown before its waiter goes on.
      "observed 2 (1 events)",
      "second waiter",
    ]);
    assert.deepEqual(await counts([first.id, second.id]), { runs: 2, tasks: 2, outbox: 2 });
    await writer.close();
  });

  it("goes on committing, and showing commits to the other observers, when an observer throws", async () => {
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    writer.observe(() => {
      throw new Error("a broken observer");
    });
    const seen: number[] = [];
    writer.observe((commit) => seen.push(commit.events.length));
    const first = markRun(writer, "writer");
    await writer.flush();
    const second = markRun(writer, "writer");
    await writer.flush();
    assert.deepEqual(seen, [1, 1]);
    assert.equal(writer.stats.failedCommits, 0);
    assert.deepEqual(await counts([first.id, second.id]), { runs: 2, tasks: 2, outbox: 2 });
    await writer.close();
  });

  it("retries only the half that failed; the half that committed is not written again", async () => {
    // Inserting a run named 'flaky' fails while the switch is on: a transient fault in one half.
    await db.pool.query(`CREATE TABLE writer_fault (failing boolean NOT NULL)`);
    await db.pool.query(`INSERT INTO writer_fault VALUES (true)`);
    await db.pool.query(`CREATE FUNCTION writer_fault() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.workflow_name = 'flaky' AND (SELECT failing FROM writer_fault) THEN
          RAISE EXCEPTION 'injected fault';
        END IF;
        RETURN NEW;
      END $$`);
    await db.pool.query(
      `CREATE TRIGGER writer_fault BEFORE INSERT ON workflow_runs FOR EACH ROW EXECUTE FUNCTION writer_fault()`,
    );
    const writer = new BatchWriter({
      pool: db.writerPool,
      log: testLogger("writer"),
      retryInitialMs: 20,
      retryMaxMs: 20,
    });
    try {
      // Runs whose id ends in an odd hex digit go to one half: those are the flaky ones.
      const odd = (id: string) => (id.charCodeAt(id.length - 1) & 1) === 1;
      const runs = Array.from({ length: 300 }, () => markRun(writer, (id) => (odd(id) ? "flaky" : "writer")));
      const steady = runs.filter((r) => !odd(r.id)).map((r) => r.id);
      const flaky = runs.filter((r) => odd(r.id)).map((r) => r.id);
      assert.ok(steady.length > 0 && flaky.length > 0);
      let flushed = false;
      const done = writer.flush().then(() => (flushed = true));
      await waitFor("a failed commit", () => writer.stats.failedCommits >= 2);
      // One half is durable, events included; the other is not, and nobody was told otherwise.
      assert.deepEqual(await counts(steady), {
        runs: steady.length,
        tasks: steady.length,
        outbox: steady.length,
      });
      assert.deepEqual(await counts(flaky), { runs: 0, tasks: 0, outbox: 0 });
      assert.equal(flushed, false);
      assert.equal(writer.isHealthy, false);
      await db.pool.query(`UPDATE writer_fault SET failing = false`);
      await done;
      assert.equal(writer.isHealthy, true);
      assert.deepEqual(await counts(flaky), {
        runs: flaky.length,
        tasks: flaky.length,
        outbox: flaky.length,
      });
      assert.deepEqual(await counts(steady), {
        runs: steady.length,
        tasks: steady.length,
        outbox: steady.length,
      });
    } finally {
      await writer.close();
      await db.pool.query(`DROP TRIGGER writer_fault ON workflow_runs`);
      await db.pool.query(`DROP FUNCTION writer_fault()`);
      await db.pool.query(`DROP TABLE writer_fault`);
    }
  });

  it("inserts new rows plainly, and upserts rows whose statement failed after it may have committed", async () => {
    // A pool whose next statement commits and then reports a broken connection.
    const { pool, breaking } = breakingPool(true);
    const refused: string[] = [];
    const writer = new BatchWriter({
      pool,
      log: testLogger("writer"),
      retryInitialMs: 10,
      retryMaxMs: 10,
      onRefused: (runId) => refused.push(runId),
    });
    try {
      const now = new Date();
      const runWithTask = (): [RunState, TaskState] => {
        const run = newRunState({
          definitionId,
          workflow: { name: "writer", version: 1, timeoutMs: null } as CompiledWorkflow,
          input: null,
          idempotencyKey: null,
          labels: {},
          now,
        });
        const task = newTaskState(run.id, "only", "STEP", "noop", 0, now);
        writer.markRun(run);
        writer.markTask(task);
        return [run, task];
      };
      // Committed, but the writer is told otherwise: its retry must not insert the rows again,
      // nor its events (the unique (run_id, first_sequence) of an outbox row's first event would
      // refuse the run).
      breaking.next = 1;
      const [run, task] = runWithTask();
      writer.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
      await writer.flush();
      assert.equal(writer.stats.failedCommits, 1);
      assert.deepEqual(refused, []);
      assert.deepEqual(await counts([run.id]), { runs: 1, tasks: 1, outbox: 1 });
      assert.ok(writer.isStored(run) && writer.isStored(task));
      // A row recovery loaded exists too: its first write here is an upsert as well.
      const [loaded, loadedTask] = runWithTask();
      await writer.flush();
      const [again, againTask] = [
        { ...loaded, status: "SUCCEEDED" as const },
        { ...loadedTask, status: "SUCCEEDED" as const },
      ];
      writer.expectStored([again.id, againTask.id]);
      writer.markRun(again);
      writer.markTask(againTask);
      await writer.flush();
      assert.deepEqual(refused, []);
      const { rows } = await db.pool.query<{ status: string }>(
        "SELECT status FROM workflow_runs WHERE id = $1 UNION ALL SELECT status FROM task_runs WHERE run_id = $1",
        [again.id],
      );
      assert.deepEqual(
        rows.map((r) => r.status),
        ["SUCCEEDED", "SUCCEEDED"],
      );
    } finally {
      await writer.close();
    }
  });

  it("writes the events of a commit that may have landed once, when its retry is large enough to split", async () => {
    // A pool whose next statement commits and then reports a broken connection; meanwhile enough
    // is marked for the retry to be split in two by run.
    const { pool, breaking } = breakingPool(true);
    const writer = new BatchWriter({ pool, log: testLogger("writer"), retryInitialMs: 10, retryMaxMs: 10 });
    try {
      const now = new Date();
      const newRun = (): RunState =>
        newRunState({
          definitionId,
          workflow: { name: "writer", version: 1, timeoutMs: null } as CompiledWorkflow,
          input: null,
          idempotencyKey: null,
          labels: {},
          now,
        });
      const half = (r: RunState): number => r.id.charCodeAt(r.id.length - 1) & 1;
      // Two runs that a split puts in different halves, their events in one outbox row.
      const x = newRun();
      let y = newRun();
      while (half(y) === half(x)) y = newRun();
      const marked: RunState[] = [];
      for (const run of [x, y]) {
        writer.markRun(run);
        writer.markTask(newTaskState(run.id, "only", "STEP", "noop", 0, now));
        writer.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
      }
      breaking.meanwhile = () => {
        for (let i = 0; i < 200; i++) marked.push(markRun(writer, `split-${i}`));
      };
      breaking.next = 1;
      await writer.flush();
      assert.equal(writer.stats.failedCommits, 1);
      const events = await outboxEvents(db.pool, [x.id, y.id, ...marked.map((r) => r.id)]);
      const perRun = new Map<string, number>();
      for (const e of events) perRun.set(e.runId, (perRun.get(e.runId) ?? 0) + 1);
      assert.equal(marked.length, 200);
      assert.deepEqual(
        [x, y, ...marked].filter((r) => perRun.get(r.id) !== 1).map((r) => [r.id, perRun.get(r.id) ?? 0]),
        [],
        "each run's runStarted once",
      );
    } finally {
      await writer.close();
    }
  });

  it("writes each event's trace context with it: traced and untraced runs, new rows and a retried share in one statement", async () => {
    const { pool, breaking } = breakingPool(true);
    const writer = new BatchWriter({ pool, log: testLogger("writer"), retryInitialMs: 10, retryMaxMs: 10 });
    try {
      const context = (c: string): Readonly<Record<string, string>> =>
        Object.freeze({ traceparent: `00-${c.repeat(32)}-${"b".repeat(16)}-00` });
      const [contextA, contextC] = [context("a"), { ...context("c"), tracestate: "vendor=x" }];
      const traced = (run: RunState, ctx: Readonly<Record<string, string>> | null): void => {
        for (const value of [
          { case: "runStarted", value: {} },
          { case: "runCompleted", value: {} },
        ] as const) {
          const row = lifecycleEvent(run, value);
          row.traceContext = ctx;
          writer.addEvent(row);
        }
      };
      const a = markQueuedRun(writer, definitionId, "traced-a");
      const b = markQueuedRun(writer, definitionId, "untraced-b");
      traced(a, contextA);
      traced(b, null);
      // The statement commits and is reported broken: its rows are written again (upserts), and
      // what is marked meanwhile goes as new rows of the same retry.
      let c: RunState | undefined;
      breaking.meanwhile = () => {
        c = markQueuedRun(writer, definitionId, "traced-c");
        traced(c, contextC);
      };
      breaking.next = 1;
      await writer.flush();
      assert.equal(writer.stats.failedCommits, 1);
      assert.ok(c !== undefined);
      const events = await outboxEvents(db.pool, [a.id, b.id, c.id]);
      const byRun = (run: RunState): unknown[] =>
        events.filter((e) => e.runId === run.id).map((e) => [e.sequence, e.traceContext]);
      // markQueuedRun's runStarted has none; the two events after it have the run's.
      assert.deepEqual(byRun(a), [
        [1, null],
        [2, contextA],
        [3, contextA],
      ]);
      assert.deepEqual(byRun(b), [
        [1, null],
        [2, null],
        [3, null],
      ]);
      assert.deepEqual(byRun(c), [
        [1, null],
        [2, contextC],
        [3, contextC],
      ]);
      const { rows } = await db.pool.query<{ binary: number; json: number }>(
        "SELECT count(event_traces)::int AS binary, count(trace_context)::int AS json FROM outbox_events",
      );
      assert.equal(rows[0]?.json, 0, "no row is written with the JSON column any more");
      assert.ok((rows[0]?.binary ?? 0) >= 2);
    } finally {
      await writer.close();
    }
  });

  it("names every partition the fence refused to the waiters when both halves of a batch are refused", async () => {
    // This writer holds every partition but 2 and 3 (at epoch 1, as the partitions table says):
    // a run's partition is its id's last hex digit, which also picks its half (2 even, 3 odd).
    const replicaId = await holdEvery();
    const lost = new Set([2, 3]);
    const writer = fencedWriter(replicaId, lost);
    try {
      const runs = Array.from({ length: 300 }, () => markRun(writer, "writer"));
      const partition = (r: RunState): number => partitionOf(r.id, 16);
      assert.ok(runs.some((r) => partition(r) === 2) && runs.some((r) => partition(r) === 3));
      const refused = await writer.flush().then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isPartitionFencedError(refused), String(refused));
      assert.deepEqual(refused.partitions, [2, 3], "both halves' lost partitions");
      // The runs of the partitions held were kept and are committed by the next flush.
      await writer.flush();
      const kept = runs.filter((r) => !lost.has(partition(r))).map((r) => r.id);
      assert.deepEqual(await counts(kept), { runs: kept.length, tasks: kept.length, outbox: kept.length });
      const dropped = runs.filter((r) => lost.has(partition(r))).map((r) => r.id);
      assert.deepEqual(await counts(dropped), { runs: 0, tasks: 0, outbox: 0 });
    } finally {
      await writer.close();
      await holdNone();
    }
  });

  it("refuses a waiter that waits again after a refusal when what was kept is refused in turn", async () => {
    const replicaId = await holdEvery();
    // Partition 2 is lost; partition 4 is lost right after the first refusal (as a replica that
    // learns of both at once): the kept run of partition 4 is refused on its retry.
    const lost = new Set([2]);
    const writer = fencedWriter(replicaId, lost, () => void lost.add(4));
    try {
      // A run id's partition is its last hex digit (of 16).
      const inPartition = (p: number): RunState => {
        const run = newRunState({
          id: `${randomUUID().slice(0, -1)}${p.toString(16)}`,
          definitionId,
          workflow: { name: "writer", version: 1, timeoutMs: null } as CompiledWorkflow,
          input: null,
          idempotencyKey: null,
          labels: {},
          now: new Date(),
        });
        assert.equal(partitionOf(run.id, 16), p);
        writer.markRun(run);
        writer.markTask(newTaskState(run.id, "only", "STEP", "noop", 0, new Date()));
        writer.addEvent(lifecycleEvent(run, { case: "runStarted", value: {} }));
        return run;
      };
      const dropped = inPartition(2);
      const kept = inPartition(4);
      // As PartitionRuns.whenCommitted: refused for partitions other than its run's, it waits again.
      const committed = (): Promise<void> =>
        writer.flush().catch((e: unknown) => {
          if (isPartitionFencedError(e) && !e.partitions.includes(4)) return committed();
          throw e;
        });
      const outcome = await committed().then(
        () => "committed",
        (e: unknown) => (isPartitionFencedError(e) ? `refused ${e.partitions.join(",")}` : String(e)),
      );
      assert.equal(outcome, "refused 4", "the kept run was refused in turn");
      assert.deepEqual(await counts([dropped.id, kept.id]), { runs: 0, tasks: 0, outbox: 0 });
    } finally {
      await writer.close();
      await holdNone();
    }
  });

  it("never writes what was marked for runs retired (their partition lost), pending or in a commit that fails", async () => {
    // A pool whose next statement fails before it runs (a broken connection), the runs retired
    // while it is in flight.
    const { pool, breaking } = breakingPool(false);
    const writer = new BatchWriter({ pool, log: testLogger("writer"), retryInitialMs: 10, retryMaxMs: 10 });
    try {
      const kept = markRun(writer, "writer");
      const inFlight = markRun(writer, "writer");
      breaking.meanwhile = () => writer.retire([inFlight], [...inFlight.tasks.values()]);
      breaking.next = 1;
      await writer.flush();
      // Marked, not yet committed, then retired.
      const pending = markRun(writer, "writer");
      writer.retire([pending], [...pending.tasks.values()]);
      const after = markRun(writer, "writer");
      await writer.flush();
      assert.deepEqual(await counts([kept.id, after.id]), { runs: 2, tasks: 2, outbox: 2 });
      assert.deepEqual(await counts([inFlight.id, pending.id]), { runs: 0, tasks: 0, outbox: 0 });
    } finally {
      await writer.close();
    }
  });

  it("keeps a task's latest attempt in its row and moves the ones it passed to the history", async () => {
    const writer = new BatchWriter({ pool: db.writerPool, log: testLogger("writer") });
    try {
      const run = markRun(writer, "writer");
      const task = [...run.tasks.values()][0] as TaskState;
      const lease = (executorId: string): AttemptState => {
        task.attempt++;
        task.fencingToken++;
        task.status = "LEASED";
        task.executorId = executorId;
        const attempt = leasedAttempt(task, executorId, new Date());
        task.current = attempt;
        writer.markTask(task);
        writer.markAttempt(attempt);
        return attempt;
      };
      const fail = (a: AttemptState): void => {
        a.status = "FAILED";
        a.error = { type: "X", message: `attempt ${a.number}`, retryable: true };
        a.endedAt = new Date();
        task.current = null;
        task.status = "QUEUED";
        writer.markTask(task);
        writer.markAttempt(a);
      };
      const attempts = async () =>
        (
          await db.pool.query<{ number: number; status: string; executor_id: string; error: unknown }>(
            "SELECT number, status, executor_id, error->>'message' AS error FROM task_attempts WHERE task_run_id = $1 ORDER BY number",
            [task.id],
          )
        ).rows.map((r) => [r.number, r.status, r.executor_id, r.error]);
      const history = async () =>
        (
          await db.pool.query<{ number: number }>(
            "SELECT number FROM task_attempt_history WHERE task_run_id = $1 ORDER BY number",
            [task.id],
          )
        ).rows.map((r) => r.number);
      // Attempt 1 in its own commit: in the task row only.
      const first = lease("e1");
      await writer.flush();
      assert.deepEqual(await attempts(), [[1, "LEASED", "e1", null]]);
      assert.deepEqual(await history(), []);
      // One batch fails 1, leases and fails 2, leases 3: 1 (final state from memory) and 2 go to
      // the history, 3 to the row.
      fail(first);
      fail(lease("e2"));
      lease("e3");
      await writer.flush();
      assert.deepEqual(await attempts(), [
        [1, "FAILED", "e1", "attempt 1"],
        [2, "FAILED", "e2", "attempt 2"],
        [3, "LEASED", "e3", null],
      ]);
      assert.deepEqual(await history(), [1, 2]);
      // Attempt 3, committed in the row, is copied from there when 4 is leased in a later batch.
      writer.markTask(task);
      task.status = "QUEUED";
      task.current = null;
      await writer.flush();
      lease("e4");
      await writer.flush();
      assert.deepEqual(await history(), [1, 2, 3]);
      assert.deepEqual((await attempts()).slice(2), [
        [3, "LEASED", "e3", null],
        [4, "LEASED", "e4", null],
      ]);
    } finally {
      await writer.close();
    }
  });

  it("refuses only a run whose rows are too large to be made into a statement; the process and the others go on", async () => {
    const refused: string[] = [];
    const writer = new BatchWriter({
      pool: db.writerPool,
      log: testLogger("writer"),
      retryInitialMs: 20,
      onRefused: (runId, error) => {
        assert.match(error.message, /too large to be written/);
        refused.push(runId);
      },
    });
    try {
      // JSON.stringify throws RangeError past V8's longest string (~512 MiB of JSON, e.g. a run
      // input templated into many steps): the same error, without building that string here.
      const tooLong = {
        toJSON(): never {
          throw new RangeError("Invalid string length");
        },
      };
      const runs = Array.from({ length: 300 }, () => markRun(writer, "writer"));
      const bad = runs[42] as RunState;
      (bad as { input: unknown }).input = tooLong;
      await writer.flush();
      const good = runs.filter((r) => r !== bad).map((r) => r.id);
      assert.deepEqual(await counts(good), { runs: 299, tasks: 299, outbox: 299 });
      assert.deepEqual(await counts([bad.id]), { runs: 0, tasks: 0, outbox: 0 });
      assert.deepEqual(refused, [bad.id]);
      // Later batches commit.
      const later = markRun(writer, "writer");
      await writer.flush();
      assert.deepEqual(await counts([later.id]), { runs: 1, tasks: 1, outbox: 1 });
    } finally {
      await writer.close();
    }
  });

  it("drops only the runs PostgreSQL refuses for their data: the others commit and so do later batches", async () => {
    const refused: string[] = [];
    const writer = new BatchWriter({
      pool: db.writerPool,
      log: testLogger("writer"),
      retryInitialMs: 20,
      onRefused: (runId, error) => {
        assert.match(error.message, /\\u0000|unsupported Unicode escape/);
        refused.push(runId);
      },
    });
    try {
      // A new run whose input jsonb PostgreSQL cannot hold (U+0000), among good ones.
      const runs = Array.from({ length: 5 }, () => markRun(writer, "writer"));
      const bad = runs[2] as RunState;
      (bad as { input: unknown }).input = { text: "a\u0000b" };
      await writer.flush();
      const good = runs.filter((r) => r !== bad).map((r) => r.id);
      assert.deepEqual(await counts(good), { runs: 4, tasks: 4, outbox: 4 });
      assert.deepEqual(await counts([bad.id]), { runs: 0, tasks: 0, outbox: 0 });
      assert.deepEqual(refused, [bad.id]);
      assert.equal(writer.isStored(bad), false);
      assert.equal(writer.isStored(runs[0] as RunState), true);

      // A stored run's later change is refused: only that run's share of the batch is dropped.
      const [first, second] = runs as [RunState, RunState];
      const poisoned = first.tasks.get("only")!;
      poisoned.output = { text: "\u0000" };
      poisoned.status = "SUCCEEDED";
      writer.markTask(poisoned);
      writer.addEvent(lifecycleEvent(first, { case: "runCancelRequested", value: {} }));
      const fine = second.tasks.get("only")!;
      fine.status = "CANCELLED";
      writer.markTask(fine);
      writer.addEvent(lifecycleEvent(second, { case: "runCancelRequested", value: {} }));
      const flushed = writer.flush();
      // Marked while that batch commits: it follows the refused change, so it is dropped with it.
      await new Promise((resolve) => setImmediate(resolve));
      writer.markRun(first);
      writer.addEvent(lifecycleEvent(first, { case: "runCancelRequested", value: {} }));
      await flushed;
      await writer.flush();
      assert.deepEqual(refused, [bad.id, first.id]);
      const status = async (taskId: string) =>
        (await db.pool.query<{ status: string }>("SELECT status FROM task_runs WHERE id = $1", [taskId]))
          .rows[0]?.status;
      assert.equal(await status(poisoned.id), "QUEUED", "the refused change was not written");
      assert.equal(await status(fine.id), "CANCELLED");
      // The refused run keeps only its committed event; the other run's batch went through.
      const sequences = async (runId: string) =>
        (await outboxEvents(db.pool, [runId])).map((e) => e.sequence);
      assert.deepEqual(await sequences(first.id), [1]);
      assert.deepEqual(await sequences(second.id), [1, 2]);

      // In a batch large enough to be split, every refused run is found and nothing else lost.
      const many = Array.from({ length: 300 }, () => markRun(writer, "writer"));
      const bads = [many[7], many[150], many[299]] as RunState[];
      for (const r of bads) (r as { labels: Record<string, string> }).labels = { team: "x\u0000" };
      await writer.flush();
      const ok = many.filter((r) => !bads.includes(r)).map((r) => r.id);
      assert.deepEqual(await counts(ok), { runs: 297, tasks: 297, outbox: 297 });
      assert.deepEqual(await counts(bads.map((r) => r.id)), { runs: 0, tasks: 0, outbox: 0 });
      assert.deepEqual(refused.slice(2).sort(), bads.map((r) => r.id).sort());
      assert.equal(writer.stats.refusedRuns, 5);
      assert.equal(writer.isHealthy, true);
      assert.equal(writer.stats.failedCommits, 0, "refused data is not a failed commit to retry");
    } finally {
      await writer.close();
    }
  });
});
