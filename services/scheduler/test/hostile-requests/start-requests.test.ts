/**
 * Hostile requests to the calls that start or wake runs, on a real scheduler and PostgreSQL (no
 * executor: wait steps need none): a malformed workflow name, idempotency keys the scheduler keeps
 * for its own runs (events, schedules), keyed starts racing, a 1,000-item StartRuns of good and bad
 * items, and a forged ListEvents page token. Each bad input is INVALID_ARGUMENT (or the code
 * StartRun would answer) naming the field, and the scheduler goes on serving.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, type ConnectError } from "@connectrpc/connect";
import { jsonToValue } from "@nexusflow/common";
import { EventMatchStatus, RunStatus, RunView, TaskStatus } from "@nexusflow/gen";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { StartRunRequestSchema } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { RESERVED_KEY_PREFIXES } from "../../src/engine/keyed-starts.js";
import { fireIdempotencyKey } from "../../src/schedules/fires.js";
import { matchIdempotencyKey } from "../../src/triggers/match-loop.js";
import type { Scheduler } from "../../src/scheduler.js";
import {
  eventClient,
  failure,
  registerSpec,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

function fields(e: ConnectError): string[] {
  return e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
}

describe("hostile requests that start or wake runs", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let runs: ReturnType<typeof workflowClient>;
  let events: ReturnType<typeof eventClient>;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    runs = workflowClient(scheduler.address);
    events = eventClient(scheduler.address);
    await registerSpec(runs, {
      name: "approval",
      version: 1,
      steps: [{ id: "approve", wait: { signal: "approval", timeout: "1h" } }],
      triggers: [{ event: "orders.created" }],
    });
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  it("refuses a malformed workflow name as INVALID_ARGUMENT naming workflow_name, without echoing it", async () => {
    for (const workflowName of ["x".repeat(1024 * 1024), "Approval", "a b", "a\u0000b", "-approval"]) {
      const e = await failure(runs.startRun({ workflowName }));
      assert.equal(e.code, Code.InvalidArgument, e.rawMessage.slice(0, 200));
      assert.deepEqual(fields(e), ["workflow_name"]);
      assert.ok(e.rawMessage.length < 500, `a message of ${e.rawMessage.length} characters`);
    }
    const { results } = await runs.startRuns({
      runs: [{ workflowName: "approval" }, { workflowName: "y".repeat(100_000) }],
    });
    assert.equal(results[0]?.result.case, "started");
    const bad = results[1]?.result;
    assert.equal(bad?.case, "error");
    assert.equal(bad.value.code, Code.InvalidArgument);
    assert.match(bad.value.message, /^runs\[1\]: workflow_name: /);
    assert.ok(bad.value.message.length < 500);
  });

  it("refuses idempotency keys the scheduler starts its own runs with, naming the field", async () => {
    // The prefixes are those events' matches and schedules' fires key their runs with.
    assert.ok(RESERVED_KEY_PREFIXES.some((p) => matchIdempotencyKey("e").startsWith(p)));
    assert.ok(RESERVED_KEY_PREFIXES.some((p) => fireIdempotencyKey("u", "f").startsWith(p)));
    const published = await events.publishEvent({ key: "orders.created", payload: jsonToValue({ n: 1 }) });
    const eventId = published.event?.eventId ?? "";
    const taken = [matchIdempotencyKey(eventId), fireIdempotencyKey("0123", "2026-01-01T00:00:00Z")];
    for (const idempotencyKey of taken) {
      const e = await failure(runs.startRun({ workflowName: "approval", idempotencyKey }));
      assert.equal(e.code, Code.InvalidArgument);
      assert.deepEqual(fields(e), ["idempotency_key"]);
    }
    const { results } = await runs.startRuns({
      runs: [
        { workflowName: "approval", idempotencyKey: "mine" },
        { workflowName: "approval", idempotencyKey: taken[1] ?? "" },
      ],
    });
    assert.equal(results[0]?.result.case, "started");
    assert.equal(results[1]?.result.case, "error");
    assert.match(results[1].result.value.message, /^runs\[1\]: idempotency_key: /);
    // The event's own match still started its run, under its key.
    const match = published.event?.matches[0];
    assert.equal(match?.status, EventMatchStatus.STARTED);
    const { run: started } = await runs.getRun({ runId: match.runId });
    assert.equal(started?.idempotencyKey, matchIdempotencyKey(eventId));
    // RerunRun keys share StartRun's key space.
    await runs.signalRun({ runId: match.runId, name: "approval", payload: jsonToValue("ok") });
    await waitForRun(runs, match.runId);
    const e = await failure(
      runs.rerunRun({ runId: match.runId, fromStep: "approve", idempotencyKey: `event:${eventId}` }),
    );
    assert.equal(e.code, Code.InvalidArgument);
    assert.deepEqual(fields(e), ["idempotency_key"]);
  });

  it("answers racing identical keyed StartRuns with one run, and other requests with ALREADY_EXISTS", async () => {
    const same = await Promise.all(
      Array.from({ length: 20 }, () =>
        runs.startRun({
          workflowName: "approval",
          idempotencyKey: "race",
          input: jsonToValue({ a: 1 }),
          view: RunView.BASIC,
        }),
      ),
    );
    assert.equal(new Set(same.map((r) => r.run?.id)).size, 1);
    assert.equal(same.filter((r) => r.created).length, 1);
    const other = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) =>
        runs.startRun({ workflowName: "approval", idempotencyKey: "race", input: jsonToValue({ a: i + 2 }) }),
      ),
    );
    for (const o of other) {
      assert.equal(o.status, "rejected");
      assert.equal((o.reason as ConnectError).code, Code.AlreadyExists);
    }
  });

  it("starts every good item of a 1,000-item StartRuns and answers each bad one alone", async () => {
    const items: MessageInitShape<typeof StartRunRequestSchema>[] = [];
    const expect: (string | RegExp)[] = [];
    for (let i = 0; i < 1000; i++) {
      if (i % 7 === 3) {
        items.push({ workflowName: "approval", idempotencyKey: "a\u0000b" });
        expect.push(new RegExp(`^runs\\[${i}\\]: idempotency_key: `));
      } else if (i % 11 === 5) {
        items.push({ workflowName: "no-such-flow" });
        expect.push(new RegExp(`^runs\\[${i}\\]: workflow no-such-flow is not registered`));
      } else if (i % 13 === 0) {
        items.push({ workflowName: "approval", idempotencyKey: "batch-dup", input: jsonToValue(i) });
        expect.push(i === 0 ? "started" : new RegExp(`^runs\\[${i}\\]: idempotency key "batch-dup"`));
      } else if (i % 17 === 1) {
        items.push({ workflowName: "approval", view: RunView.FULL });
        expect.push(new RegExp(`^runs\\[${i}\\]: view: `));
      } else {
        items.push({ workflowName: "approval", input: { kind: { case: "numberValue", value: i } } });
        expect.push("started");
      }
    }
    const { results } = await runs.startRuns({ runs: items });
    assert.equal(results.length, 1000);
    const ids = new Set<string>();
    for (const [i, r] of results.entries()) {
      const want = expect[i];
      if (want === "started") {
        assert.equal(r.result.case, "started", `runs[${i}]`);
        ids.add(r.result.value.run?.id ?? "");
      } else {
        assert.equal(r.result.case, "error", `runs[${i}]`);
        assert.match(r.result.value.message, want as RegExp);
      }
    }
    const started = expect.filter((x) => x === "started").length;
    assert.equal(ids.size, started);
    // Every run answered as started is there to read.
    await waitFor("the batch's runs to be readable", async () => {
      const page = await runs.listRuns({ workflowName: "approval", pageSize: 1000 });
      const listed = new Set(page.runs.map((r) => r.id));
      return [...ids].every((id) => listed.has(id)) ? true : undefined;
    });
  });

  it("refuses values nested deeper than the run taking them could be read back, naming the field", async () => {
    /** `levels` arrays, one in the other, around 1. */
    const nested = (levels: number) => jsonToValue(JSON.parse(`${"[".repeat(levels)}1${"]".repeat(levels)}`));
    const readable = async (runId: string): Promise<void> => {
      const { run } = await runs.getRun({ runId });
      assert.equal(run?.id, runId);
    };
    const refusedAt = async (call: Promise<unknown>, field: string): Promise<void> => {
      const e = await failure(call);
      assert.equal(e.code, Code.InvalidArgument, e.rawMessage);
      assert.deepEqual(fields(e), [field]);
    };
    // StartRun: the input as Run.input, 48 levels at most.
    const deepest = await runs.startRun({ workflowName: "approval", input: nested(48), view: RunView.BASIC });
    const deepestId = deepest.run?.id ?? "";
    await readable(deepestId);
    await refusedAt(runs.startRun({ workflowName: "approval", input: nested(49) }), "input");
    // (A StartRuns item sits one message deeper: its decoder refuses 49 levels already.)
    // SignalRun: the payload as the wait's output inside the run's output, 47 levels at most.
    await refusedAt(runs.signalRun({ runId: deepestId, name: "approval", payload: nested(48) }), "payload");
    await runs.signalRun({ runId: deepestId, name: "approval", payload: nested(47) });
    const ended = await waitForRun(runs, deepestId);
    assert.ok(ended.output !== undefined);
    // RerunRun: the step's new input as TaskRun.input, 48 levels at most.
    await refusedAt(
      runs.rerunRun({ runId: deepestId, fromStep: "approve", stepInput: nested(49) }),
      "step_input",
    );
    const rerun = await runs.rerunRun({
      runId: deepestId,
      fromStep: "approve",
      stepInput: nested(48),
      view: RunView.BASIC,
    });
    await readable(rerun.run?.id ?? "");
    // PublishEvent: the payload as the output of a wait it ends, in the run's output: 46 levels.
    await registerSpec(runs, {
      name: "restock",
      version: 1,
      steps: [{ id: "w", wait: { event: "inventory.restocked", timeout: "1h" } }],
    });
    const waiting = await runs.startRun({ workflowName: "restock", view: RunView.BASIC });
    const waitingId = waiting.run?.id ?? "";
    await waitFor("the wait to wait", async () => {
      const { run } = await runs.getRun({ runId: waitingId });
      return run?.tasks[0]?.status === TaskStatus.WAITING ? true : undefined;
    });
    await refusedAt(events.publishEvent({ key: "inventory.restocked", payload: nested(47) }), "payload");
    await refusedAt(events.publishEvent({ key: "orders.created", payload: nested(47) }), "payload");
    await events.publishEvent({ key: "inventory.restocked", payload: nested(46) });
    const woken = await waitForRun(runs, waitingId);
    assert.equal(woken.status, RunStatus.SUCCEEDED);
    const started = await events.publishEvent({ key: "orders.created", payload: nested(46) });
    await readable(started.event?.matches[0]?.runId ?? "");
    await events.getEvent({ eventId: started.event?.eventId ?? "" });
  });

  it("refuses a ListEvents page token past PostgreSQL's bigint as INVALID_ARGUMENT naming page_token", async () => {
    for (const seq of ["9223372036854775808", "9999999999999999999"]) {
      const pageToken = Buffer.from(JSON.stringify({ seq })).toString("base64url");
      const e = await failure(events.listEvents({ pageToken }));
      assert.equal(e.code, Code.InvalidArgument, e.rawMessage);
      assert.deepEqual(fields(e), ["page_token"]);
    }
    const last = Buffer.from(JSON.stringify({ seq: "9223372036854775807" })).toString("base64url");
    const page = await events.listEvents({ pageToken: last });
    assert.ok(page.events.length > 0);
  });
});
