/**
 * Rate limit pauses in a cluster (docs/replicas.md): a key paused through one replica's
 * RateLimitService is paused on every replica (told through NOTIFY, each reads the stored pauses),
 * and a resume through another replica resumes it everywhere. Before, only the replica that took
 * the call paused: the others went on leasing the key's tasks.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { RateLimitService } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler, waitFor } from "../support.js";

describe("rate limit pauses in a cluster", () => {
  let server: Awaited<ReturnType<typeof startTestDatabase>>;
  const started: Scheduler[] = [];

  before(async () => {
    server = await startTestDatabase();
  });
  after(async () => {
    for (const s of started.splice(0)) await s.stop();
    await server?.close();
  });

  const replica = async (): Promise<Scheduler> => {
    const s = await startTestScheduler(server.url, { cluster: true, partitionLeaseMs: 1000 });
    started.push(s);
    return s;
  };
  const limits = (s: Scheduler) =>
    createClient(RateLimitService, createGrpcTransport({ baseUrl: `http://${s.address}` }));
  const paused = (s: Scheduler, name: string): number =>
    s.engine.rateLimits.stats().find((x) => x.name === name)?.paused ?? 0;

  it("a pause through one replica holds on every replica, and a resume through another ends it everywhere", async () => {
    const a = await replica();
    const b = await replica();
    const c = await replica();
    await limits(a).pauseRateLimit({
      name: "partner",
      key: "acme",
      until: timestampFromMs(Date.now() + 60 * 60 * 1000),
      note: "partner maintenance",
    });
    assert.equal(paused(a, "partner"), 1);
    await waitFor(
      "the pause taken by the other replicas",
      () => paused(b, "partner") === 1 && paused(c, "partner") === 1,
    );
    const bucket = b.engine.rateLimits.stats().find((x) => x.name === "partner");
    assert.deepEqual(bucket, { name: "partner", waiting: 0, paused: 1 });

    await limits(b).resumeRateLimit({ name: "partner", key: "acme" });
    assert.equal(paused(b, "partner"), 0);
    await waitFor(
      "the resume taken by the other replicas",
      () => paused(a, "partner") === 0 && paused(c, "partner") === 0,
    );

    // A replica that starts later reads the pauses stored before it.
    await limits(c).pauseRateLimit({
      name: "partner",
      key: "globex",
      until: timestampFromMs(Date.now() + 60_000),
    });
    await waitFor("the second pause taken", () => paused(a, "partner") === 1 && paused(b, "partner") === 1);
    const d = await replica();
    assert.equal(paused(d, "partner"), 1);
  });

  it("reads the stored pauses now and then without a notification (one lost)", async () => {
    const e = await startTestScheduler(server.url, {
      cluster: true,
      partitionLeaseMs: 1000,
      rateLimitPauseReadMs: 100,
    });
    started.push(e);
    // Stored as a replica would, but its NOTIFY lost.
    const sql = new pg.Pool({ connectionString: server.url, max: 1 });
    try {
      await sql.query(
        `INSERT INTO rate_limit_buckets (name, key, tokens, refilled_at, seq, paused_until, paused_by, pause_note, full_at)
         VALUES ('quiet', 'k', 1, $1, 0, now() + interval '1 hour', 'ops', 'lost notification', NULL)`,
        [Date.now()],
      );
    } finally {
      await sql.end();
    }
    await waitFor("the pause read without a notification", () => paused(e, "quiet") === 1);
  });
});
