/**
 * Rate limits on a real scheduler, executor and PostgreSQL: 50 per second is never exceeded in
 * any one-second window (checked over the attempts' lease times from GetRun), across a scheduler
 * restart in the middle (the buckets are read back); a keyed limit's rows are purged once full
 * again; a step waiting for tokens holds up none of
 * the other work (work-conserving), and ExplainPending and GetRun name the limit and the time of
 * its next token; bad definitions are INVALID_ARGUMENT naming the field.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { createServer, type Server } from "node:http";
import pg from "pg";
import { Executor, TaskError } from "@nexusflow/executor";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RateLimitService, RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { date, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

/** The most of `times` (ms, any order) inside one window [t, t + windowMs). */
function busiestWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while ((sorted[hi] as number) - (sorted[lo] as number) >= windowMs) lo++;
    most = Math.max(most, hi - lo + 1);
  }
  return most;
}

/** Lease times (ms) of every attempt of `stepId` in `runs`. */
function leaseTimes(runs: Run[], stepId: string): number[] {
  return runs.flatMap((r) => task(r, stepId).attempts.map((a) => date(a.leaseTime, "lease time").getTime()));
}

describe("rate limits", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: WorkflowClient;
  let executor: Executor;
  let port = 0;
  let worked = 0;
  /** Pause asked by the rl.pausing handler's first attempt of each key, by key. */
  const pausedUntil = new Map<string, number>();
  /** A partner API: 429 with Retry-After: 2 on its first call, then 200. */
  let partner: Server;
  let partnerCalls: number[] = [];

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000 });
    port = Number(scheduler.address.slice(scheduler.address.lastIndexOf(":") + 1));
    client = workflowClient(scheduler.address);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "rl-exec",
      slots: 16,
      logger: testLogger("executor"),
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    executor.register("rl.work", () => {
      worked++;
      return { ok: true };
    });
    executor.register("rl.other", () => ({ ok: true }));
    executor.register("rl.pausing", (input: unknown) => {
      const { k } = input as { k: string };
      if (!pausedUntil.has(k)) {
        const until = Date.now() + 1500;
        pausedUntil.set(k, until);
        throw TaskError.retryable("SLOW_DOWN", "the partner asks for a pause", {
          pauseKeyUntil: new Date(until),
          retryAfterMs: 1,
        });
      }
      return { ok: true };
    });
    partner = createServer((_req, res) => {
      partnerCalls.push(Date.now());
      if (partnerCalls.length === 1) res.writeHead(429, { "retry-after": "2" }).end("slow down");
      else res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
    await new Promise<void>((resolve) => partner.listen(0, "127.0.0.1", resolve));
    await executor.start();
    await registerSpec(client, {
      name: "rl-fifty",
      version: 1,
      steps: [{ id: "call", type: "rl.work", rateLimits: [{ name: "partner", rate: 50 }] }],
    });
    await registerSpec(client, {
      name: "rl-slow",
      version: 1,
      steps: [
        {
          id: "call",
          type: "rl.other",
          rateLimits: [{ name: "slow", key: "input.account", rate: 1, per: "1h" }],
        },
      ],
    });
    await registerSpec(client, { name: "rl-bulk", version: 1, steps: [{ id: "call", type: "rl.other" }] });
  });

  after(async () => {
    partner?.close();
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
  });

  const start = async (workflowName: string, input: unknown): Promise<string> => {
    const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
    assert.ok(run);
    return run.id;
  };

  it("50 per second is never exceeded in any one-second window, across a scheduler restart", async () => {
    const ids = await Promise.all(Array.from({ length: 200 }, (_, i) => start("rl-fifty", { i })));
    await waitFor("a quarter of the work done", () => (worked >= 50 ? true : undefined), 60_000);
    assert.ok(worked < 200, "the restart happens mid-way");
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    const runs = await Promise.all(ids.map((id) => waitForRun(client, id, 120_000)));
    assert.deepEqual(
      runs.filter((r) => r.status !== RunStatus.SUCCEEDED).map((r) => r.id),
      [],
      "every run succeeds",
    );
    const times = leaseTimes(runs, "call");
    assert.ok(times.length >= 200);
    assert.ok(
      busiestWindow(times, 1000) <= 50,
      `at most 50 leases in a second, saw ${busiestWindow(times, 1000)}`,
    );
    // And the limit is a rate, not a stall: 200 leases at 50/s take about 4 s, not much more.
    const span = Math.max(...times) - Math.min(...times);
    assert.ok(span >= 3900, `200 leases at 50/s span at least 3.9 s, took ${span} ms`);
  });

  it("a restarted scheduler reads the buckets back: tokens taken before it stay taken, by a rerun too", async () => {
    await registerSpec(client, {
      name: "rl-hourly",
      version: 1,
      steps: [
        { id: "call", type: "rl.other", rateLimits: [{ name: "hourly", rate: 2, per: "1h", burst: 2 }] },
      ],
    });
    const done = [await start("rl-hourly", {}), await start("rl-hourly", {})];
    for (const id of done) assert.equal((await waitForRun(client, id, 30_000)).status, RunStatus.SUCCEEDED);
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    // A bucket made anew would hold 2 tokens: this run would be leased at once.
    const third = await start("rl-hourly", {});
    const gate = await waitFor("the rate limit gate after the restart", async () => {
      const r = await client.explainPending({ runId: third, stepId: "call" });
      const g = r.gates.find((x) => x.gate.case === "rateLimit");
      return g?.gate.case === "rateLimit" ? g.gate.value : undefined;
    });
    const next = date(gate.nextTokenAt, "next token").getTime();
    assert.ok(next > Date.now() + 20 * 60_000, "the next token is about 30 minutes away");
    const { run } = await client.getRun({ runId: third });
    assert.equal(run?.tasks[0]?.status, TaskStatus.QUEUED);
    await client.cancelRun({ runId: third });
    // A rerun takes from the same bucket: it waits too, it is not a way around the limit.
    const rerun = await client.rerunRun({ runId: done[0] as string, fromStep: "call" });
    const rerunId = rerun.run?.id ?? "";
    await waitFor("the rerun's rate limit gate", async () => {
      const r = await client.explainPending({ runId: rerunId, stepId: "call" });
      return r.gates.some((x) => x.gate.case === "rateLimit" && x.gate.value.name === "hourly")
        ? true
        : undefined;
    });
    await client.cancelRun({ runId: rerunId });
  });

  it("a keyed limit's rows go once their buckets are full again (the coordinator's purge); a key used again writes anew", async () => {
    await registerSpec(client, {
      name: "rl-keyed",
      version: 1,
      steps: [
        {
          id: "call",
          type: "rl.other",
          rateLimits: [{ name: "per-customer", key: "input.customer", rate: 100 }],
        },
      ],
    });
    const ids = await Promise.all(["a", "b", "c"].map((customer) => start("rl-keyed", { customer })));
    for (const id of ids) assert.equal((await waitForRun(client, id, 30_000)).status, RunStatus.SUCCEEDED);
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      const rows = async () =>
        (
          await pool.query<{ key: string; seq: string; refilled_at: number; full_at: number }>(
            `SELECT key, seq, refilled_at, full_at FROM rate_limit_grants WHERE name = 'per-customer' ORDER BY key`,
          )
        ).rows;
      const before = await rows();
      assert.deepEqual(
        before.map((r) => [r.key, r.full_at - r.refilled_at]),
        [
          ["a", 10],
          ["b", 10],
          ["c", 10],
        ],
        "one token of a burst of one at 100/s: full again 10 ms after the grant",
      );
      assert.equal(scheduler.rateLimitPurge.state, "RUNNING");
      // Full long ago (as after a quiet hour): the purge deletes them.
      await pool.query(
        `UPDATE rate_limit_grants SET full_at = full_at - 3600000 WHERE name = 'per-customer'`,
      );
      assert.ok((await scheduler.rateLimitPurge.purge()).grants >= 3);
      assert.deepEqual(await rows(), []);
      const again = await start("rl-keyed", { customer: "a" });
      assert.equal((await waitForRun(client, again, 30_000)).status, RunStatus.SUCCEEDED);
      const after = await rows();
      assert.deepEqual(
        after.map((r) => r.key),
        ["a"],
      );
      assert.ok(Number(after[0]?.seq) > Number(before[0]?.seq), "its grant comes after the purged one");
    } finally {
      await pool.end();
    }
  });

  it("a step waiting for tokens holds up no other work; ExplainPending and GetRun name the limit", async () => {
    // One token an hour for account a-1: the first run takes it, the second waits.
    const first = await start("rl-slow", { account: "a-1" });
    assert.equal((await waitForRun(client, first, 30_000)).status, RunStatus.SUCCEEDED);
    const second = await start("rl-slow", { account: "a-1" });
    // Another account has its own bucket.
    const other = await start("rl-slow", { account: "a-2" });
    const bulk = await Promise.all(Array.from({ length: 20 }, () => start("rl-bulk", {})));
    for (const id of [other, ...bulk])
      assert.equal((await waitForRun(client, id, 30_000)).status, RunStatus.SUCCEEDED);
    const gate = await waitFor("the rate limit gate", async () => {
      const r = await client.explainPending({ runId: second, stepId: "call" });
      return r.gates.find((g) => g.gate.case === "rateLimit");
    });
    assert.equal(gate.gate.case, "rateLimit");
    const v = gate.gate.value;
    assert.equal(v.name, "slow");
    assert.equal(v.key, "a-1");
    const next = date(v.nextTokenAt, "next token").getTime();
    assert.ok(next > Date.now() + 3_000_000, "the next token is about an hour away");
    const { run } = await client.getRun({ runId: second });
    const t = run?.tasks.find((x) => x.stepId === "call");
    assert.equal(t?.status, TaskStatus.QUEUED);
    assert.match(t?.pendingReason ?? "", /rate limit "slow" key "a-1": next token at /);
    // Executors are not shown as the reason: the task is out of its type's queue.
    assert.doesNotMatch(t?.pendingReason ?? "", /executor/);
    await client.cancelRun({ runId: second });
  });

  it("a handler's TaskError pauses its key until the time it names", async () => {
    await registerSpec(client, {
      name: "rl-pausing",
      version: 1,
      steps: [
        {
          id: "call",
          type: "rl.pausing",
          input: { k: "{{ input.k }}" },
          retry: { maxAttempts: 3, initialInterval: "1ms" },
          rateLimits: [{ name: "pausing", key: "input.k", rate: 1000 }],
        },
      ],
    });
    const first = await start("rl-pausing", { k: "p-1" });
    await waitFor("the pause asked", () => pausedUntil.get("p-1"));
    const until = pausedUntil.get("p-1") as number;
    const second = await start("rl-pausing", { k: "p-1" });
    const gate = await waitFor("the paused gate", async () => {
      const r = await client.explainPending({ runId: second, stepId: "call" });
      const g = r.gates.find((x) => x.gate.case === "rateLimit");
      return g?.gate.case === "rateLimit" && g.gate.value.pausedUntil !== undefined
        ? g.gate.value
        : undefined;
    });
    assert.equal(gate.name, "pausing");
    assert.equal(gate.key, "p-1");
    assert.equal(date(gate.pausedUntil, "paused until").getTime(), until);
    assert.match(gate.pausedBy, /^handler \(task run /);
    assert.match(gate.pauseNote, /SLOW_DOWN: the partner asks for a pause/);
    const runs = await Promise.all([first, second].map((id) => waitForRun(client, id, 30_000)));
    assert.ok(runs.every((r) => r.status === RunStatus.SUCCEEDED));
    // Every lease of key p-1 after the pause was asked waits for its end: the first run's retry
    // and the second run, which was queued meanwhile.
    const leases = leaseTimes(runs, "call").sort((a, b) => a - b);
    assert.equal(leases.length, 3);
    assert.ok((leases[1] as number) >= until, `the retry leased at ${leases[1]}, the pause ends ${until}`);
    assert.ok((leases[2] as number) >= until);
  });

  it("an HTTP step's 429 Retry-After pauses the key of its step's rate limits", async () => {
    const address = partner.address();
    assert.ok(address !== null && typeof address === "object");
    partnerCalls = [];
    await registerSpec(client, {
      name: "rl-http",
      version: 1,
      steps: [
        {
          id: "call",
          type: "http",
          input: { url: `http://127.0.0.1:${address.port}/api` },
          retry: { maxAttempts: 3, initialInterval: "1ms" },
          rateLimits: [{ name: "partner-http", rate: 1000 }],
        },
      ],
    });
    const first = await start("rl-http", {});
    await waitFor("the 429", () => (partnerCalls.length >= 1 ? true : undefined));
    const second = await start("rl-http", {});
    const gate = await waitFor("the paused gate", async () => {
      const r = await client.explainPending({ runId: second, stepId: "call" });
      const g = r.gates.find((x) => x.gate.case === "rateLimit");
      return g?.gate.case === "rateLimit" && g.gate.value.pausedUntil !== undefined
        ? g.gate.value
        : undefined;
    });
    assert.equal(gate.name, "partner-http");
    assert.match(gate.pauseNote, /HTTP_429/);
    const runs = await Promise.all([first, second].map((id) => waitForRun(client, id, 30_000)));
    assert.ok(runs.every((r) => r.status === RunStatus.SUCCEEDED));
    const [c429, ...after] = partnerCalls as [number, ...number[]];
    assert.equal(after.length, 2);
    // Retry-After: 2 (whole seconds): nobody called the partner again before about 2 s had passed.
    for (const t of after) assert.ok(t - c429 >= 1900, `a call ${t - c429} ms after the 429`);
  });

  it("an operator pauses a key until a time (it holds across a restart) and resumes it", async () => {
    const limits = () =>
      createClient(RateLimitService, createGrpcTransport({ baseUrl: `http://${scheduler.address}` }));
    await registerSpec(client, {
      name: "rl-operator",
      version: 1,
      steps: [
        {
          id: "call",
          type: "rl.other",
          rateLimits: [{ name: "operator", key: "input.k", rate: 1000 }],
        },
      ],
    });
    const until = Date.now() + 60 * 60 * 1000;
    const paused = await limits().pauseRateLimit({
      name: "operator",
      key: "o-1",
      until: timestampFromMs(until),
      note: "partner maintenance",
    });
    assert.equal(date(paused.bucket?.pausedUntil, "paused until").getTime(), until);
    assert.equal(paused.bucket?.pausedBy, "operator");
    // No task used the key: its bucket is full (its burst unknown here: +Infinity until a task's refill).
    assert.equal(paused.bucket?.tokens, Number.POSITIVE_INFINITY);
    const held = await start("rl-operator", { k: "o-1" });
    // Another key of the same limit is not paused.
    assert.equal(
      (await waitForRun(client, await start("rl-operator", { k: "o-2" }), 30_000)).status,
      RunStatus.SUCCEEDED,
    );
    const gate = async () => {
      const r = await client.explainPending({ runId: held, stepId: "call" });
      const g = r.gates.find((x) => x.gate.case === "rateLimit");
      return g?.gate.case === "rateLimit" && g.gate.value.pausedUntil !== undefined
        ? g.gate.value
        : undefined;
    };
    const before = await waitFor("the operator's pause named", gate);
    assert.equal(before.pauseNote, "partner maintenance");
    // The pause is stored: a restarted scheduler still holds the task back.
    await scheduler.stop();
    scheduler = await startTestScheduler(db.url, { sessionTimeoutMs: 10_000, port });
    const after = await waitFor("the pause after the restart", gate);
    assert.equal(date(after.pausedUntil, "paused until").getTime(), until);
    const listed = await limits().listRateLimits({ name: "operator" });
    assert.deepEqual(
      listed.buckets.map((b) => [b.key, b.pausedUntil === undefined, b.pauseNote]),
      [
        ["o-1", false, "partner maintenance"],
        ["o-2", true, ""],
      ],
    );
    const resumed = await limits().resumeRateLimit({ name: "operator", key: "o-1" });
    assert.equal(resumed.bucket?.pausedUntil, undefined);
    assert.equal((await waitForRun(client, held, 30_000)).status, RunStatus.SUCCEEDED);
  });

  it("ListRateLimits pages through the buckets in memory and the stored ones, each once, by code point", async () => {
    const limits = createClient(
      RateLimitService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    // In memory and stored: paused keys. Stored only: grant rows this scheduler never read.
    const paused = ["m-0", "m-1", "m-2", "z", "\u{1d49c}", "\ufffd"];
    for (const key of paused)
      await limits.pauseRateLimit({ name: "paging", key, until: timestampFromMs(Date.now() + 60_000) });
    const stored = ["s-0", "s-1", "s-2", "s-3", "a", "\u00e9", "\u{1f600}"];
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    try {
      for (const key of stored)
        await pool.query(
          `INSERT INTO rate_limit_grants (name, key, shard, tokens, refilled_at, seq, full_at)
           VALUES ('paging', $1, 0, 1, $2, 1, $3)`,
          [key, Date.now(), Date.now() + 3_600_000],
        );
    } finally {
      await pool.end();
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await limits.listRateLimits({ name: "paging", pageSize: 4, pageToken });
      assert.ok(page.buckets.length <= 4);
      seen.push(...page.buckets.map((b) => b.key));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 10);
    // Code point order, as PostgreSQL's "C" collation: U+FFFD before U+1D49C (not as UTF-16 sorts).
    const expected = [...paused, ...stored].sort((a, b) => {
      const x = [...a].map((c) => c.codePointAt(0) as number);
      const y = [...b].map((c) => c.codePointAt(0) as number);
      for (let i = 0; i < Math.min(x.length, y.length); i++)
        if (x[i] !== y[i]) return (x[i] as number) - (y[i] as number);
      return x.length - y.length;
    });
    assert.deepEqual(seen, expected);
    assert.equal(pages, 4);
    assert.ok(seen.indexOf("\ufffd") < seen.indexOf("\u{1d49c}"));
    const all = await limits.listRateLimits({ name: "paging", pageSize: 1000 });
    assert.equal(all.buckets.length, 13);
    assert.equal(all.nextPageToken, "");
    // A token of one filter is refused with another.
    const first = await limits.listRateLimits({ name: "paging", pageSize: 1 });
    await assert.rejects(
      limits.listRateLimits({ name: "", pageToken: first.nextPageToken }),
      (e: unknown) =>
        e instanceof ConnectError && e.code === Code.InvalidArgument && e.message.includes("page_token:"),
    );
    for (const key of paused) await limits.resumeRateLimit({ name: "paging", key });
  });

  it("bad RateLimitService input is INVALID_ARGUMENT naming the field", async () => {
    const limits = createClient(
      RateLimitService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    const invalid = async (call: Promise<unknown>, field: string) =>
      assert.rejects(call, (e: unknown) => {
        assert.ok(e instanceof ConnectError);
        assert.equal(e.code, Code.InvalidArgument);
        assert.ok(e.message.includes(`${field}:`), `${e.message} names ${field}`);
        return true;
      });
    const soon = timestampFromMs(Date.now() + 60_000);
    await invalid(limits.pauseRateLimit({ name: "", until: soon }), "name");
    await invalid(limits.pauseRateLimit({ name: "Bad Name", until: soon }), "name");
    await invalid(limits.pauseRateLimit({ name: "p" }), "until");
    await invalid(limits.pauseRateLimit({ name: "p", until: timestampFromMs(Date.now() - 1000) }), "until");
    await invalid(
      limits.pauseRateLimit({ name: "p", until: timestampFromMs(Date.now() + 31 * 24 * 3600 * 1000) }),
      "until",
    );
    await invalid(limits.pauseRateLimit({ name: "p", until: soon, note: "x".repeat(501) }), "note");
    await invalid(limits.pauseRateLimit({ name: "p", key: "a\u0000b", until: soon }), "key");
    await invalid(limits.resumeRateLimit({ name: "" }), "name");
    await invalid(limits.listRateLimits({ name: "NO" }), "name");
    await invalid(limits.listRateLimits({ pageSize: -1 }), "page_size");
    await invalid(limits.listRateLimits({ pageSize: 1001 }), "page_size");
    await invalid(limits.listRateLimits({ pageToken: "not-a-token" }), "page_token");
    await invalid(
      limits.listRateLimits({ pageToken: Buffer.from('{"n":1}').toString("base64url") }),
      "page_token",
    );
  });

  it("bad definitions are INVALID_ARGUMENT naming the field", async () => {
    const bad = async (rateLimits: unknown, field: string) => {
      await assert.rejects(
        registerSpec(client, { name: "rl-bad", version: 1, steps: [{ id: "a", type: "x", rateLimits }] }),
        (e: unknown) => {
          assert.ok(e instanceof ConnectError);
          assert.equal(e.code, Code.InvalidArgument);
          assert.ok(e.message.includes(field), `${e.message} names ${field}`);
          return true;
        },
      );
    };
    await bad([{ name: "p" }], "$.steps[0].rateLimits[0].rate");
    await bad([{ name: "p", rate: 1, per: "never" }], "$.steps[0].rateLimits[0].per");
    await bad([{ rate: 1 }], "$.steps[0].rateLimits[0].name");
    await bad([{ name: "p", rate: 1, perSecond: 5 }], "$.steps[0].rateLimits[0].perSecond");
  });
});
