/**
 * A fire the engine cannot start for now (UNAVAILABLE: its database away) stays STARTING and is
 * tried again on later passes, each further apart (up to 5 s) rather than on every poll, with one
 * warning for the burst rather than one per attempt; once the engine takes runs again the fire
 * starts its run and the loop says so. The loop runs over a real PostgreSQL; the engine is a
 * stand-in that refuses while told to.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { ApiError, Code, createLogger } from "@nexusflow/common";
import pg from "pg";
import { FireLoop } from "../../src/schedules/fire-loop.js";
import { FireStore } from "../../src/schedules/fire-store.js";
import type { RunStarter } from "../../src/schedules/fires.js";
import { normalizeSpec } from "../../src/schedules/spec.js";
import { ScheduleStore } from "../../src/schedules/store.js";
import { startTestDatabase, startTestScheduler, waitFor } from "../support.js";

describe("a fire that cannot start for now", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let pool: pg.Pool;
  let loop: FireLoop | undefined;

  before(async () => {
    db = await startTestDatabase();
    // The scheduler migrates the database; the loop under test runs on its own.
    await (await startTestScheduler(db.url)).stop();
    pool = new pg.Pool({ connectionString: db.url, max: 4 });
  });

  after(async () => {
    await loop?.stop();
    await pool?.end();
    await db?.close();
  });

  it("is retried with a growing pause and one warning, then starts its run", async () => {
    const lines: { level: number; msg: string }[] = [];
    const log = createLogger("fire-retry", "debug", {
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[0]) },
    });
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
    const { spec, cron } = normalizeSpec({
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
    });
    const now = new Date();
    const { row } = await store.insert({
      scheduleId: "yearly",
      uid: randomUUID(),
      spec,
      paused: false,
      note: "",
      cursorAt: now,
      lastFireAt: null,
      nextFireAt: cron.next(now) ?? null,
      bufferedFireAt: null,
      startedCount: 0,
      skippedCount: 0,
      missedCount: 0,
      createdAt: now,
      updatedAt: now,
    });
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
});
