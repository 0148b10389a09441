import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type pg from "pg";
import { schedulerReadiness } from "./health.js";

/** A pool that counts its queries and answers each when the test says. */
function countingPool(): { pool: pg.Pool; queries: () => number; answerAll: () => void } {
  let queries = 0;
  const waiting: (() => void)[] = [];
  const pool = {
    query: () => {
      queries++;
      return new Promise<{ rows: unknown[] }>((resolve) =>
        waiting.push(() => resolve({ rows: [{ "?column?": 1 }] })),
      );
    },
  } as unknown as pg.Pool;
  return {
    pool,
    queries: () => queries,
    answerAll: () => {
      for (const w of waiting.splice(0)) w();
    },
  };
}

describe("the scheduler's readiness", () => {
  it("asks PostgreSQL once for a flood of health checks (the hot-path pool keeps its connections)", async () => {
    const db = countingPool();
    const ready = schedulerReadiness({ running: () => true, pool: db.pool });
    const answers = Array.from({ length: 1000 }, () => ready());
    assert.equal(db.queries(), 1);
    db.answerAll();
    assert.deepEqual(new Set(await Promise.all(answers)), new Set([undefined]));
    assert.equal(await ready(), undefined);
    assert.equal(db.queries(), 1);
  });

  it("says at once, without a query, that a scheduler that is not running is not ready", async () => {
    const db = countingPool();
    let running = true;
    const ready = schedulerReadiness({ running: () => running, pool: db.pool });
    const first = ready();
    db.answerAll();
    assert.equal(await first, undefined);
    // The database's answer is still fresh; the scheduler's state is read on every call.
    running = false;
    assert.match((await ready()) ?? "", /not running/);
    assert.equal(db.queries(), 1);
  });
});
