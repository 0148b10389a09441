import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  CompletedSchema,
  FailedSchema,
  type LeaseKey,
  ReleaseSchema,
  StartedSchema,
  TaskErrorSchema,
} from "@nexusflow/gen";
import { type Report, ReportLedger, type SendReport } from "./report-ledger.js";
import { leaseKeyId } from "./task-attempt.js";

function key(n: number): LeaseKey {
  return {
    $typeName: "nexusflow.v1.LeaseKey",
    taskRunId: `task-run-${n}`,
    attempt: 1,
    fencingToken: BigInt(n),
    runId: "",
  };
}
const started = (n: number): Report => ({ case: "started", value: create(StartedSchema, { key: key(n) }) });
const completed = (n: number): Report => ({
  case: "completed",
  value: create(CompletedSchema, { key: key(n) }),
});
const failed = (n: number): Report => ({
  case: "failed",
  value: create(FailedSchema, { key: key(n), error: create(TaskErrorSchema, { type: "X" }) }),
});
const release = (n: number): Report => ({
  case: "release",
  value: create(ReleaseSchema, { key: key(n), reason: "no free slot" }),
});

/** A session that records what it was sent; `accept` says how many more writes it takes. */
function session(accept = Number.POSITIVE_INFINITY): { send: SendReport; sent: string[] } {
  const sent: string[] = [];
  let left = accept;
  return {
    sent,
    send: (report) => {
      if (left <= 0) return false;
      left--;
      sent.push(`${report.case} ${report.value.key?.taskRunId ?? "?"}`);
      return true;
    },
  };
}

describe("ReportLedger", () => {
  it("holds a lease while a report on it is queued or sent and not acknowledged", () => {
    const ledger = new ReportLedger();
    const s = session();
    ledger.record(completed(1), undefined); // queued: no session
    ledger.record(failed(2), s.send);
    assert.equal(ledger.holds(key(1)), true);
    assert.equal(ledger.holds(key(2)), true);
    assert.equal(ledger.holds(key(3)), false);
    assert.equal(ledger.holds({ ...key(2), fencingToken: 3n }), false, "another token: another lease");
    assert.equal(ledger.ack(1), "acked");
    assert.equal(ledger.holds(key(2)), false, "acknowledged");
    assert.equal(ledger.holds(key(1)), true);
  });

  it("keeps a report sent on the attached session until Acked covers it; a Started is not kept", () => {
    const ledger = new ReportLedger();
    const s = session();
    ledger.record(started(1), s.send);
    ledger.record(completed(1), s.send);
    ledger.record(release(2), s.send);
    assert.deepEqual(s.sent, ["started task-run-1", "completed task-run-1", "release task-run-2"]);
    assert.equal(ledger.size, 2);
    assert.equal(ledger.ack(1), "acked");
    assert.equal(ledger.size, 1);
    assert.equal(ledger.ack(2), "acked");
    assert.equal(ledger.size, 0);
  });

  it("ignores an Acked that covers nothing new or more than was sent", () => {
    const ledger = new ReportLedger();
    const s = session();
    ledger.record(completed(1), s.send);
    assert.equal(ledger.ack(0), "stale");
    assert.equal(ledger.ack(2), "ahead");
    assert.equal(ledger.unacknowledged, 1);
    assert.equal(ledger.ack(1), "acked");
    assert.equal(ledger.ack(1), "stale");
    assert.equal(ledger.ackedThrough, 1);
  });

  it("queues reports made without a session and sends them in order on the next one", () => {
    const ledger = new ReportLedger();
    ledger.record(started(1), undefined);
    ledger.record(completed(2), undefined);
    ledger.record(failed(3), undefined);
    assert.equal(ledger.queued, 3);
    const s = session();
    assert.equal(ledger.resend(s.send), 3);
    assert.deepEqual(s.sent, ["started task-run-1", "completed task-run-2", "failed task-run-3"]);
    assert.deepEqual([ledger.queued, ledger.unacknowledged], [0, 2]);
  });

  it("a report the session refuses is queued, and a resend cut short keeps the rest in order", () => {
    const ledger = new ReportLedger();
    ledger.record(completed(1), session(0).send);
    ledger.record(completed(2), undefined);
    ledger.record(completed(3), undefined);
    const s = session(1);
    assert.equal(ledger.resend(s.send), 1);
    ledger.record(completed(4), undefined);
    const next = session();
    ledger.resend(next.send);
    assert.deepEqual(s.sent, ["completed task-run-1"]);
    assert.deepEqual(next.sent, ["completed task-run-2", "completed task-run-3", "completed task-run-4"]);
  });

  it("when a session ends, its unacknowledged reports go again first, and Acked counts anew", () => {
    const ledger = new ReportLedger();
    const first = session();
    ledger.record(completed(1), first.send);
    ledger.record(completed(2), first.send);
    assert.equal(ledger.ack(1), "acked");
    ledger.record(completed(3), undefined); // e.g. after stop() half-closed the session
    ledger.detach();
    assert.deepEqual([ledger.queued, ledger.unacknowledged, ledger.ackedThrough], [2, 0, 0]);
    const second = session();
    ledger.resend(second.send);
    assert.deepEqual(second.sent, ["completed task-run-2", "completed task-run-3"]);
    assert.equal(ledger.ack(1), "acked", "the new session's count starts at zero");
    assert.equal(ledger.ack(2), "acked");
    assert.equal(ledger.size, 0);
  });

  it("lists the leases its reports still hold, Releases not delivered included, each once", () => {
    const ledger = new ReportLedger();
    ledger.record(started(1), undefined);
    ledger.record(completed(1), undefined);
    ledger.record(release(2), undefined);
    ledger.record(failed(3), undefined);
    assert.deepEqual(
      ledger.heldLeases().map((k) => k.taskRunId),
      ["task-run-1", "task-run-2", "task-run-3"],
    );
  });

  it("drops the queued reports of a revoked lease, and only those", () => {
    const ledger = new ReportLedger();
    ledger.record(started(1), undefined);
    ledger.record(completed(1), undefined);
    ledger.record(completed(2), undefined);
    assert.equal(ledger.revoke(key(1)), true);
    assert.equal(ledger.revoke(key(1)), false);
    assert.equal(
      ledger.revoke({ ...key(2), fencingToken: 99n }),
      false,
      "another lease of the same task run",
    );
    const s = session();
    ledger.resend(s.send);
    assert.deepEqual(s.sent, ["completed task-run-2"]);
  });

  it("whenEmpty resolves true once every report is acknowledged, false when its signal aborts", async () => {
    const ledger = new ReportLedger();
    assert.equal(await ledger.whenEmpty(new AbortController().signal), true);

    const s = session();
    ledger.record(completed(1), s.send);
    ledger.record(started(2), undefined);
    const empty = ledger.whenEmpty(new AbortController().signal);
    ledger.ack(1);
    ledger.detach();
    ledger.resend(s.send); // the Started goes out; nothing is left to acknowledge
    assert.equal(await empty, true);

    ledger.record(completed(3), undefined);
    const abort = new AbortController();
    const waiting = ledger.whenEmpty(abort.signal);
    abort.abort();
    assert.equal(await waiting, false);
    assert.equal(ledger.size, 1);
  });

  it("moves queued reports to another ledger with their run and origin, and finds the one a rejection names", () => {
    const from = new ReportLedger();
    const to = new ReportLedger();
    from.record(completed(1), undefined, "run-1", "b");
    from.record(failed(2), undefined, "run-2", "b");
    assert.deepEqual(
      from.heldLeases().map((k) => [k.taskRunId, k.runId]),
      [
        ["task-run-1", "run-1"],
        ["task-run-2", "run-2"],
      ],
      "held leases name their runs, for the replicas to judge their own",
    );
    const moved = from.take((e) => e.runId === "run-2");
    assert.deepEqual(
      moved.map((e) => [e.report.case, e.origin]),
      [["failed", "b"]],
    );
    assert.equal(from.size, 1);
    const s = session();
    for (const e of moved) to.put(e, s.send);
    assert.deepEqual(s.sent, ["failed task-run-2"]);
    assert.equal(to.sentOn(key(2))?.runId, "run-2");
    assert.equal(to.sentOn(key(1)), undefined);
    assert.equal(to.ack(1), "acked");
    assert.equal(to.sentOn(key(2)), undefined, "acknowledged: no longer held");
  });

  it("holds a lease through every way its reports enter and leave the ledger", () => {
    const ledger = new ReportLedger();
    const other = new ReportLedger();
    const held = (): number[] => [1, 2, 3, 4, 5].filter((n) => ledger.holds(key(n)));

    // A queued Started holds its lease until it goes out; sent, it is done with (never acknowledged).
    ledger.record(started(1), undefined);
    ledger.record(completed(1), undefined);
    ledger.record(started(2), undefined);
    ledger.record(release(3), session(0).send); // refused by the session: queued
    assert.deepEqual(held(), [1, 2, 3]);
    const first = session(3); // takes Started 1, Completed 1, Started 2; refuses the Release
    assert.equal(ledger.resend(first.send), 3);
    assert.deepEqual(held(), [1, 3], "lease 2 had only a Started; lease 1 still has its Completed");

    // Two acknowledged reports on one lease: acknowledging the first leaves it held.
    const live = session(); // the same session, taking more now
    ledger.record(failed(4), live.send);
    ledger.record(release(4), live.send);
    assert.equal(ledger.ack(1), "acked"); // Completed 1
    assert.deepEqual(held(), [3, 4]);
    assert.equal(ledger.ack(2), "acked"); // Failed 4
    assert.deepEqual(held(), [3, 4], "the Release on lease 4 waits for its Acked");

    // A session that ends: its unacknowledged reports are retransmitted, and held meanwhile.
    ledger.detach();
    assert.deepEqual(held(), [3, 4]);
    const second = session();
    assert.equal(ledger.resend(second.send), 2);
    assert.deepEqual(second.sent, ["release task-run-4", "release task-run-3"]);
    assert.deepEqual(held(), [3, 4]);
    assert.equal(ledger.ack(5), "ahead");
    assert.deepEqual(held(), [3, 4], "an Acked ahead of what was sent acknowledges nothing");
    assert.equal(ledger.ack(1), "acked");
    assert.deepEqual(held(), [3]);

    // Moved to another ledger: held there, no longer here; revoked: held nowhere.
    ledger.record(completed(5), undefined);
    const moved = ledger.take((e) => e.report.value.key?.taskRunId === "task-run-5");
    assert.equal(moved.length, 1);
    assert.deepEqual(held(), [3]);
    for (const e of moved) other.put(e, undefined);
    assert.equal(other.holds(key(5)), true);
    assert.equal(other.revoke(key(5)), true);
    assert.equal(other.holds(key(5)), false);
    assert.equal(ledger.ack(2), "acked");
    assert.deepEqual(held(), []);
    assert.equal(ledger.size, 0);
  });

  it("holds exactly the leases its queued and unacknowledged reports are on, whatever happens", () => {
    const keys = [1, 2, 3];
    const reportArb = fc
      .tuple(fc.constantFrom(started, completed, failed, release), fc.constantFrom(...keys))
      .map(([make, n]) => make(n));
    const op = fc.oneof(
      fc.record({
        t: fc.constant("record" as const),
        report: reportArb,
        accept: fc.nat(2),
        live: fc.boolean(),
      }),
      fc.record({ t: fc.constant("resend" as const), accept: fc.nat(4) }),
      fc.record({ t: fc.constant("ack" as const), n: fc.integer({ min: -1, max: 3 }) }),
      fc.record({ t: fc.constant("detach" as const) }),
      fc.record({ t: fc.constant("revoke" as const), n: fc.constantFrom(...keys) }),
      fc.record({ t: fc.constant("take" as const), n: fc.constantFrom(...keys) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const ledger = new ReportLedger();
        for (const o of ops) {
          if (o.t === "record") ledger.record(o.report, o.live ? session(o.accept).send : undefined);
          else if (o.t === "resend") ledger.resend(session(o.accept).send);
          else if (o.t === "ack") ledger.ack(ledger.ackedThrough + o.n);
          else if (o.t === "detach") ledger.detach();
          else if (o.t === "revoke") ledger.revoke(key(o.n));
          else ledger.take((e) => e.report.value.key?.taskRunId === key(o.n).taskRunId);
          // heldLeases lists the leases of the reports themselves (queued and sent): the oracle.
          const listed = new Set(ledger.heldLeases().map(leaseKeyId));
          for (const n of keys)
            assert.equal(ledger.holds(key(n)), listed.has(leaseKeyId(key(n))), `lease ${n}`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("names the report last sent on a lease, and revoking drops only that lease's queued reports", () => {
    const ledger = new ReportLedger();
    ledger.record(release(1), session(0).send); // refused: queued
    ledger.record(completed(1), session().send); // sent before the Release
    ledger.record(completed(2), undefined);
    assert.equal(ledger.sentOn(key(1))?.report.case, "completed");
    assert.equal(ledger.resend(session().send), 2);
    assert.equal(ledger.sentOn(key(1))?.report.case, "release", "sent last, though made first");
    ledger.record(failed(1), undefined);
    assert.equal(ledger.revoke(key(1)), true, "the queued Failed");
    assert.equal(ledger.holds(key(1)), true, "its sent reports still wait for their Acked");
    assert.equal(ledger.sentOn(key(1))?.report.case, "release");
    assert.equal(ledger.revoke(key(1)), false, "nothing queued on it any more");
    assert.equal(ledger.ack(2), "acked"); // Completed 1, Release 1
    assert.equal(ledger.sentOn(key(1)), undefined);
    assert.equal(ledger.holds(key(1)), false);
    ledger.detach(); // Completed 2 (sent after the Release) goes again
    assert.equal(ledger.sentOn(key(2)), undefined, "nothing is sent on the next session yet");
    assert.equal(ledger.resend(session().send), 1);
    assert.equal(ledger.sentOn(key(2))?.report.case, "completed");
    assert.equal(ledger.ack(1), "acked", "Completed 2, sent again on the new session");
    assert.equal(ledger.size, 0);
  });

  it("finds the report a rejection names and drops a revoked lease's reports without a scan (10,000 waiting)", () => {
    const ledger = new ReportLedger();
    const s = session();
    let reads = 0;
    /** A Completed whose key counts how often it is read: a scan reads every waiting report's key. */
    const counted = (n: number): Report => {
      const value = create(CompletedSchema, {});
      const k = key(n);
      Object.defineProperty(value, "key", {
        enumerable: true,
        get: () => {
          reads++;
          return k;
        },
      });
      return { case: "completed", value };
    };
    const reports: Report[] = [];
    for (let n = 0; n < 10_000; n++) reports.push(counted(n));
    for (let n = 0; n < 5_000; n++) ledger.record(reports[n]!, s.send); // sent, not acknowledged
    for (let n = 5_000; n < 10_000; n++) ledger.record(reports[n]!, undefined); // queued
    assert.equal(ledger.size, 10_000);
    reads = 0;

    // A Rejected for each report sent (thousands at once): each names its own.
    for (let n = 0; n < 5_000; n++) assert.equal(ledger.sentOn(key(n))?.report, reports[n]);
    for (let n = 5_000; n < 5_100; n++) assert.equal(ledger.sentOn(key(n)), undefined, "queued, not sent");
    assert.equal(ledger.sentOn(key(20_000)), undefined);
    assert.equal(ledger.ack(1_000), "acked");
    assert.equal(ledger.sentOn(key(999)), undefined, "acknowledged");
    assert.equal(ledger.sentOn(key(1_000))?.report, reports[1_000]);

    // A re-attach: what was sent is queued again, and the scheduler revokes most of it.
    ledger.detach();
    assert.equal(ledger.queued, 9_000);
    for (let n = 1_000; n < 9_000; n++) assert.equal(ledger.revoke(key(n)), true);
    for (let n = 0; n < 1_000; n++) assert.equal(ledger.revoke(key(n)), false, "acknowledged already");
    assert.equal(ledger.revoke(key(20_000)), false);
    assert.equal(ledger.queued, 1_000);
    // Scans of every waiting report read 54 million keys here; an index by lease reads none.
    assert.equal(reads, 0, "no waiting report of another lease was looked at");

    // What is left goes out in order, and its Acked counts one report at a time.
    const next = session();
    assert.equal(ledger.resend(next.send), 1_000);
    assert.deepEqual(
      next.sent,
      Array.from({ length: 1_000 }, (_, i) => `completed task-run-${9_000 + i}`),
    );
    for (let through = 1; through <= 1_000; through++) {
      assert.equal(ledger.ack(through), "acked");
      assert.equal(ledger.unacknowledged, 1_000 - through);
    }
    assert.equal(ledger.size, 0);
  });

  it("tells whether it holds a lease without looking at the reports waiting (10,000 of them)", () => {
    const ledger = new ReportLedger();
    const s = session();
    let reads = 0;
    /** A Completed whose key counts how often it is read. */
    const counted = (n: number): Report => {
      const value = create(CompletedSchema, {});
      const k = key(n);
      Object.defineProperty(value, "key", {
        enumerable: true,
        get: () => {
          reads++;
          return k;
        },
      });
      return { case: "completed", value };
    };
    for (let n = 0; n < 5_000; n++) ledger.record(counted(n), s.send); // sent, not acknowledged
    for (let n = 5_000; n < 10_000; n++) ledger.record(counted(n), undefined); // queued
    assert.equal(ledger.size, 10_000);
    reads = 0;
    for (let n = 0; n < 1_000; n++) assert.equal(ledger.holds(key(20_000 + n)), false);
    assert.equal(ledger.holds(key(0)), true);
    assert.equal(ledger.holds(key(9_999)), true);
    assert.equal(reads, 0, "no waiting report was looked at");
  });
});
