/**
 * The fire loop when things fail, over a real PostgreSQL with a stand-in engine:
 * - a fire the engine cannot start for now (UNAVAILABLE: its database away) stays STARTING and is
 *   tried again on later passes, each further apart (up to 5 s) rather than on every poll, with
 *   one warning for the burst rather than one per attempt; once the engine takes runs again the
 *   fire starts its run and the loop says so;
 * - passes that fail (the schedules' queries refused) are logged once per outage, not per retry;
 * - a stored schedule whose expression this runtime cannot evaluate is parked (no next fire time)
 *   and logged once, rather than found due again by every pass with no pause in between;
 * - a full batch of buffered fires that all wait for their runs is not taken for more work due:
 *   the pass sleeps a poll;
 * - a long downtime is walked a chunk at a time with turns of the event loop between, and over
 *   several passes LAST still catches up one fire time, the latest.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, afterEach, before, describe, it } from "node:test";
import { ApiError, Code, createLogger } from "@nexusflow/common";
import { Cron } from "croner";
import pg from "pg";
import { scheduleView } from "../../src/api/schedule-convert.js";
import { FireLoop, WALK_CHUNK } from "../../src/schedules/fire-loop.js";
import { FireStore } from "../../src/schedules/fire-store.js";
import type { RunStarter } from "../../src/schedules/fires.js";
import { normalizeSpec, type ScheduleSpec, type ScheduleSpecInput } from "../../src/dag/schedule-spec.js";
import { ScheduleStore } from "../../src/schedules/store.js";
import { startTestDatabase, startTestScheduler, waitFor } from "../support.js";

/** A logger whose lines the test reads. */
function capture(): { lines: { level: number; msg: string }[]; log: ReturnType<typeof createLogger> } {
  const lines: { level: number; msg: string }[] = [];
  const log = createLogger("fire-loop", "debug", {
    destination: { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[0]) },
  });
  return { lines, log };
}

/** The request's spec of a schedule firing once a year. */
const yearlyInput: ScheduleSpecInput = {
  cron: "0 0 1 1 *",
  timeZone: "",
  workflowName: "tick",
  workflowVersion: 0,
  input: {},
  labels: {},
  overlapPolicy: undefined,
  maxConcurrentRuns: 0,
  catchUpPolicy: undefined,
  catchUpWindowMs: undefined,
};

/** A valid spec firing once a year. */
function yearly(): ScheduleSpec {
  return normalizeSpec(yearlyInput).spec;
}

/** Stores a running schedule of `spec`, next due at `next`. */
async function insertSchedule(
  store: ScheduleStore,
  scheduleId: string,
  spec: ScheduleSpec,
  now: Date,
  next: Date | null,
) {
  const { row } = await store.insert({
    scheduleId,
    uid: randomUUID(),
    spec,
    paused: false,
    note: "",
    cursorAt: now,
    lastFireAt: null,
    nextFireAt: next,
    bufferedFireAt: null,
    startedCount: 0,
    skippedCount: 0,
    missedCount: 0,
    createdAt: now,
    updatedAt: now,
  });
  return row;
}

/** An engine that starts every run. */
const engineUp: RunStarter = {
  startRun: () => Promise.resolve({ runId: randomUUID(), created: true }),
  cancelRun: () => Promise.resolve(),
  isActive: () => false,
};

describe("the fire loop when things fail", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let loop: FireLoop | undefined;

  before(async () => {
    db = await startTestDatabase();
    // The scheduler migrates the database; the loop under test runs on its own.
    await (await startTestScheduler(db.url)).stop();
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
    // An idle connection the database ends as it stops is of no interest here.
    pool.on("error", () => undefined);
  });

  afterEach(async () => {
    await loop?.stop();
    loop = undefined;
    await pool.query("DELETE FROM schedules");
  });

  after(async () => {
    await pool?.end();
    await db?.close();
  });

  it("is retried with a growing pause and one warning, then starts its run", async () => {
    const { lines, log } = capture();
    let down = true;
    const attempts: number[] = [];
    const engine: RunStarter = {
      startRun() {
        attempts.push(performance.now());
        if (down) return Promise.reject(new ApiError(Code.UNAVAILABLE, "the database is unavailable"));
        return Promise.resolve({ runId: randomUUID(), created: true });
      },
      cancelRun: () => Promise.resolve(),
      isActive: () => false,
    };
    const store = new ScheduleStore(pool);
    const fireStore = new FireStore(pool);
    const now = new Date();
    const row = await insertSchedule(store, "yearly", yearly(), now, now);
    await fireStore.insertFires(row.uid, [{ fireKey: "trigger:t", fireAt: now, origin: "TRIGGERED" }], now);

    const pollMs = 50;
    loop = new FireLoop({ store, fireStore, engine, log, pollMs });
    loop.start();
    await waitFor("six attempts", () => attempts.length >= 6);
    // Passes 1..5 each failed: the pause after the fifth is pollMs * 2^4 (a lower bound, so a busy
    // machine cannot fail it; without the back-off every pause is pollMs).
    const gaps = attempts.slice(1).map((t, i) => t - (attempts[i] as number));
    assert.ok((gaps[4] as number) >= pollMs * 16 - 5, `pauses between attempts: ${gaps.join(", ")}`);
    const warned = lines.filter((l) => l.level === 40 && /could not start its run/.test(l.msg));
    assert.equal(warned.length, 1, `one warning for the burst, not one per attempt (${warned.length})`);

    down = false;
    loop.wake();
    await waitFor("the fire started", async () => {
      const [fire] = await fireStore.recentFires(row.uid, 1);
      return fire?.status === "STARTED" && fire.runId !== null;
    });
    assert.ok(lines.some((l) => l.level === 30 && /start runs again/.test(l.msg)));
    assert.equal((await store.get("yearly")).startedCount, 1);
  });

  it("logs failing passes once per outage, and when they pass again", async () => {
    const { lines, log } = capture();
    let down = true;
    let tries = 0;
    class FlakyFireStore extends FireStore {
      override startingFires(limit: number) {
        tries++;
        return down ? Promise.reject(new Error("connection refused")) : super.startingFires(limit);
      }
    }
    const store = new ScheduleStore(pool);
    loop = new FireLoop({ store, fireStore: new FlakyFireStore(pool), engine: engineUp, log, pollMs: 10 });
    loop.start();
    await waitFor("five failed passes", () => tries >= 5);
    const failed = lines.filter((l) => l.level >= 40 && /pass failed/.test(l.msg));
    assert.equal(failed.length, 1, `one line for the outage, not one per retry (${failed.length})`);
    down = false;
    loop.wake();
    await waitFor("a pass again", () => lines.some((l) => l.level === 30 && /passes again/.test(l.msg)));
  });

  it("parks a schedule it cannot evaluate, rather than spin on it", async () => {
    const { lines, log } = capture();
    const store = new ScheduleStore(pool);
    const now = new Date();
    // Stored by a runtime that knew the zone; this one does not.
    await insertSchedule(
      store,
      "elsewhere",
      { ...yearly(), timeZone: "Mars/Olympus_Mons" },
      now,
      new Date(now.getTime() - 1000),
    );
    loop = new FireLoop({ store, fireStore: new FireStore(pool), engine: engineUp, log, pollMs: 10 });
    loop.start();
    const parked = await waitFor("the schedule parked", async () => {
      const row = await store.get("elsewhere");
      return row.nextFireAt === null ? row : undefined;
    });
    assert.deepEqual(scheduleView(parked, []).nextFireTimes, [], "Get and List still answer");
    // A pass after the one that parked it finds nothing due and says nothing more.
    const passes = loop.passCount;
    loop.wake();
    await waitFor("another pass", () => (loop?.passCount ?? 0) > passes);
    assert.equal(lines.filter((l) => /cannot evaluate/.test(l.msg)).length, 1);
  });

  it("sleeps a poll after a full batch of buffered fires that all wait for their runs, rather than spin", async () => {
    /** The loop's pass, called by the test (the loop is not started). */
    class Probe extends FireLoop {
      passOnce(): Promise<number> {
        return this.pass();
      }
    }
    const store = new ScheduleStore(pool);
    const now = new Date();
    const spec = normalizeSpec({ ...yearlyInput, overlapPolicy: "BUFFER_ONE" }).spec;
    for (const id of ["held-1", "held-2"]) {
      const row = await insertSchedule(store, id, spec, now, new Date(now.getTime() + 365 * 86_400_000));
      // A run of it still active, and a fire buffered behind it.
      await pool.query(
        `INSERT INTO schedule_fires (schedule_uid, fire_key, fire_at, origin, status, run_id, created_at)
         VALUES ($1, 'earlier', $2, 'SCHEDULED', 'STARTED', $3, $2)`,
        [row.uid, now, randomUUID()],
      );
      await pool.query(`UPDATE schedules SET buffered_fire_at = $2 WHERE uid = $1`, [row.uid, now]);
    }
    const engine: RunStarter = { ...engineUp, isActive: () => true };
    const { log } = capture();
    const probe = new Probe({
      store,
      fireStore: new FireStore(pool),
      engine,
      log,
      batchSize: 2,
      pollMs: 500,
    });
    // The batch is full (two of two), and nothing in it can move: more passes at once would find
    // the same two again. The pause is the poll (the buffered fires wait for their runs).
    for (let i = 0; i < 2; i++) assert.equal(await probe.passOnce(), 500, `pass ${i + 1}`);
    await pool.query("DELETE FROM schedule_fires");
  });

  it("walks a long downtime's fire times a chunk at a time, turning the event loop between chunks", async () => {
    const { log } = capture();
    const store = new ScheduleStore(pool);
    const now = new Date();
    const hourAgo = new Date(now.getTime() - 3_600_000);
    // Every second, last dealt with an hour ago: 3,600 fire times to walk (all but a minute missed).
    const spec = normalizeSpec({ ...yearlyInput, cron: "* * * * * *" }).spec;
    await insertSchedule(store, "per-second", spec, hourAgo, new Date(hourAgo.getTime() + 1000));
    // Cron evaluations counted between two turns of the event loop (an operation count, not time).
    let calls = 0;
    let mark = 0;
    let most = 0;
    let turning = true;
    const nextRun = Object.getOwnPropertyDescriptor(Cron.prototype, "nextRun")?.value as Cron["nextRun"];
    Cron.prototype.nextRun = function (this: Cron, ...args: Parameters<Cron["nextRun"]>) {
      calls++;
      return nextRun.apply(this, args);
    };
    const turn = (): void => {
      most = Math.max(most, calls - mark);
      mark = calls;
      if (turning) setImmediate(turn);
    };
    setImmediate(turn);
    try {
      loop = new FireLoop({ store, fireStore: new FireStore(pool), engine: engineUp, log, pollMs: 10 });
      loop.start();
      await waitFor("the downtime walked", async () => (await store.get("per-second")).missedCount >= 3500);
    } finally {
      turning = false;
      Cron.prototype.nextRun = nextRun;
    }
    assert.ok(calls >= 3600, `${calls} evaluations`);
    assert.ok(most <= WALK_CHUNK + 8, `${most} cron evaluations without a turn of the event loop`);
  });

  it("catches up LAST once when the downtime takes several passes", async () => {
    const { log } = capture();
    const store = new ScheduleStore(pool);
    const tenMinutesAgo = new Date(Date.now() - 600_000);
    const spec = normalizeSpec({
      ...yearlyInput,
      cron: "* * * * * *",
      catchUpPolicy: "LAST",
      catchUpWindowMs: 3_600_000,
    }).spec;
    const row = await insertSchedule(
      store,
      "last",
      spec,
      tenMinutesAgo,
      new Date(tenMinutesAgo.getTime() + 1000),
    );
    // 600 fire times of the downtime, all within the window, 100 a pass.
    loop = new FireLoop({
      store,
      fireStore: new FireStore(pool),
      engine: engineUp,
      log,
      maxFiresPerPass: 100,
    });
    loop.start();
    const startedAt = loop.startedAt;
    await waitFor("the downtime walked", async () => (await store.get("last")).missedCount >= 598);
    const { rows } = await pool.query<{ fire_at: Date }>(
      "SELECT fire_at FROM schedule_fires WHERE schedule_uid = $1 AND fire_at < $2",
      [row.uid, startedAt],
    );
    assert.equal(
      rows.length,
      1,
      `fires of the downtime: ${rows.map((r) => r.fire_at.toISOString()).join(", ")}`,
    );
    assert.ok((rows[0]?.fire_at.getTime() ?? 0) > startedAt.getTime() - 1000, "the latest one");
  });
});
