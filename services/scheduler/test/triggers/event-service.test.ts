/**
 * EventService against a real scheduler and PostgreSQL: bad requests refused naming the field,
 * an event starting the runs of the workflows whose triggers match it with its payload as input
 * (exact and wildcard keys, filters, two triggers of one workflow making one run, the latest
 * version only; a registration that commits after a later one was seen), a filter failing on an
 * event recorded as a failed match, idempotent publishes, and listing by key prefix a page at a time. No executor serves the steps: runs stay active.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, type Client } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import { EventMatchStatus, type EventService, type WorkflowService } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/index.js";
import {
  eventClient,
  refusal,
  registerSpec,
  startTestDatabase,
  startTestScheduler,
  workflowClient,
} from "../support.js";

describe("EventService", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let events: Client<typeof EventService>;
  let runs: Client<typeof WorkflowService>;

  const register = (spec: Record<string, unknown>): Promise<void> => registerSpec(runs, spec);
  const flow = (name: string, triggers: unknown, extra: Record<string, unknown> = {}) => ({
    name,
    version: 1,
    steps: [{ id: "wait", type: "events.never" }],
    triggers,
    ...extra,
  });

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    events = eventClient(scheduler.address);
    runs = workflowClient(scheduler.address);
    await register(flow("on-created", [{ event: "orders.created" }]));
    await register(flow("on-any-order", [{ event: "orders.*", filter: "event.payload.total > 100" }]));
    await register(
      flow("on-deep", [
        { event: "orders.**", filter: "event.payload.country == 'PT'" },
        { event: "orders.created", filter: "event.payload.total > 10" },
      ]),
    );
    await register(
      flow("on-shipped", [{ event: "orders.shipped" }], {
        input: { type: "object", required: ["tracking"], properties: { tracking: { type: "string" } } },
      }),
    );
    await register(flow("retired", [{ event: "orders.created" }]));
    await register({ name: "retired", version: 2, steps: [{ id: "wait", type: "events.never" }] });
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  it("refuses bad input, naming the field", async () => {
    const cases: [() => Promise<unknown>, Code, RegExp][] = [
      [() => events.publishEvent({ key: "" }), Code.InvalidArgument, /^key: an event key is required/],
      [() => events.publishEvent({ key: "orders.*" }), Code.InvalidArgument, /^key: .*invalid/],
      [() => events.publishEvent({ key: "orders..x" }), Code.InvalidArgument, /^key: /],
      [() => events.publishEvent({ key: "a".repeat(256) }), Code.InvalidArgument, /^key: .*at most 255/],
      [
        () => events.publishEvent({ key: "a", payload: jsonToValue({ big: "x".repeat(300 * 1024) }) }),
        Code.InvalidArgument,
        /^payload: .*at most 262144/,
      ],
      [
        () =>
          events.publishEvent({ key: "a", payload: { kind: { case: "numberValue", value: Number.NaN } } }),
        Code.InvalidArgument,
        /^payload: NaN/,
      ],
      [
        () => events.publishEvent({ key: "a", payload: jsonToValue({ s: "nul\u0000" }) }),
        Code.InvalidArgument,
        /^payload\.s: .*NUL/,
      ],
      [
        () => events.publishEvent({ key: "a", idempotencyKey: "k".repeat(201) }),
        Code.InvalidArgument,
        /^idempotency_key: /,
      ],
      [() => events.getEvent({ eventId: "nope" }), Code.InvalidArgument, /^event_id: not an event id/],
      [() => events.getEvent({ eventId: "" }), Code.InvalidArgument, /^event_id: /],
      [
        () => events.getEvent({ eventId: "00000000-0000-4000-8000-000000000000" }),
        Code.NotFound,
        /does not exist/,
      ],
      [() => events.listEvents({ pageSize: 5000 }), Code.InvalidArgument, /^page_size: /],
      [() => events.listEvents({ pageToken: "garbage" }), Code.InvalidArgument, /^page_token: /],
      [() => events.listEvents({ keyPrefix: "x".repeat(300) }), Code.InvalidArgument, /^key_prefix: /],
    ];
    for (const [call, code, message] of cases) {
      const got = await refusal(call());
      assert.equal(got.code, code, got.message);
      assert.match(got.message, message);
    }
  });

  it("refuses a definition with a bad trigger, naming the field", async () => {
    const cases: [unknown, RegExp][] = [
      [[{ event: "orders.*", filter: "event.payload.total == NaN" }], /\$\.triggers\[0\]\.filter: /],
      [[{ event: "orders.*", filtre: "true" }], /\$\.triggers\[0\]\.filtre: unknown field/],
      [[{ event: "orders.**.x" }], /\$\.triggers\[0\]\.event: /],
      [[{ event: "orders.*", filter: "input.total > 1" }], /\$\.triggers\[0\]\.filter: .*only the event/],
      [{ event: "orders.*" }, /\$\.triggers: triggers must be an array/],
    ];
    for (const [triggers, message] of cases) {
      const got = await refusal(register(flow("bad-trigger", triggers)));
      assert.equal(got.code, Code.InvalidArgument, got.message);
      assert.match(got.message, message);
    }
  });

  it("starts one run per matching workflow with the payload as input", async () => {
    const payload = { id: "o-1", total: 150, country: "PT" };
    const { event, created } = await events.publishEvent({
      key: "orders.created",
      payload: jsonToValue(payload),
    });
    assert.ok(event);
    assert.equal(created, true);
    assert.equal(event.key, "orders.created");
    assert.deepEqual(valueToJson(event.payload), payload);
    // on-deep matches by both of its triggers and makes one match (its first trigger's); the
    // retired workflow's latest version has no triggers; on-shipped's key does not match.
    assert.deepEqual(
      event.matches.map((m) => [m.workflowName, m.workflowVersion, m.triggerIndex, m.status]),
      [
        ["on-any-order", 1, 0, EventMatchStatus.STARTED],
        ["on-created", 1, 0, EventMatchStatus.STARTED],
        ["on-deep", 1, 0, EventMatchStatus.STARTED],
      ],
    );
    for (const m of event.matches) {
      const { run } = await runs.getRun({ runId: m.runId });
      assert.equal(run?.workflowName, m.workflowName);
      assert.deepEqual(valueToJson(run?.input), payload);
      assert.equal(run?.labels["event-id"], event.eventId);
      assert.equal(run?.labels["event-key"], "orders.created");
    }
    const { event: again } = await events.getEvent({ eventId: event.eventId });
    assert.deepEqual(
      again?.matches.map((m) => m.runId),
      event.matches.map((m) => m.runId),
    );
  });

  it("matches wildcards and filters, and records a filter failing on the event as a failed match", async () => {
    const { event: small } = await events.publishEvent({
      key: "orders.updated",
      payload: jsonToValue({ total: 5, country: "ES" }),
    });
    assert.deepEqual(small?.matches, [], "no filter is true, none fails");
    const { event: eu } = await events.publishEvent({
      key: "orders.eu.created",
      payload: jsonToValue({ total: 1, country: "PT" }),
    });
    assert.deepEqual(
      eu?.matches.map((m) => [m.workflowName, m.status]),
      [["on-deep", EventMatchStatus.STARTED]],
    );
    // on-any-order's filter reads event.payload.total, which this payload lacks.
    const { event: failing } = await events.publishEvent({
      key: "orders.cancelled",
      payload: jsonToValue({ country: "ES" }),
    });
    assert.equal(failing?.matches.length, 1);
    const failed = failing?.matches[0];
    assert.equal(failed?.workflowName, "on-any-order");
    assert.equal(failed?.status, EventMatchStatus.FAILED);
    assert.equal(failed?.runId, "");
    assert.match(failed?.error ?? "", /^triggers\[0\]\.filter: event\.payload\.total does not resolve/);
    const { event: stored } = await events.getEvent({ eventId: failing?.eventId ?? "" });
    assert.equal(stored?.matches[0]?.error, failed?.error);
  });

  it("records a payload its workflow's input schema refuses as a failed match", async () => {
    const shipped = (m: { workflowName: string }): boolean => m.workflowName === "on-shipped";
    const { event } = await events.publishEvent({
      key: "orders.shipped",
      payload: jsonToValue({ n: 1, total: 0, country: "ES" }),
    });
    assert.deepEqual(
      event?.matches.map((m) => m.workflowName),
      ["on-shipped"],
    );
    assert.equal(event?.matches.find(shipped)?.status, EventMatchStatus.FAILED);
    assert.match(event?.matches.find(shipped)?.error ?? "", /input does not match the input schema/);
    const { event: ok } = await events.publishEvent({
      key: "orders.shipped",
      payload: jsonToValue({ tracking: "T1" }),
    });
    // on-any-order's and on-deep's filters fail on this payload (no total, no country).
    assert.equal(ok?.matches.find(shipped)?.status, EventMatchStatus.STARTED);
    assert.equal(ok?.matches.length, 3);
  });

  it("answers the same idempotency key with the stored event and starts nothing new", async () => {
    const first = await events.publishEvent({
      key: "orders.created",
      payload: jsonToValue({ total: 500 }),
      idempotencyKey: "order-42",
    });
    assert.equal(first.created, true);
    const all = await Promise.all(
      Array.from({ length: 5 }, () =>
        events.publishEvent({
          key: "orders.created",
          payload: jsonToValue({ total: 1 }),
          idempotencyKey: "order-42",
        }),
      ),
    );
    for (const r of all) {
      assert.equal(r.created, false);
      assert.equal(r.event?.eventId, first.event?.eventId);
      assert.deepEqual(valueToJson(r.event?.payload), { total: 500 });
      assert.deepEqual(
        r.event?.matches.map((m) => m.runId),
        first.event?.matches.map((m) => m.runId),
      );
    }
    const { runs: started } = await runs.listRuns({
      labels: { "event-id": first.event?.eventId ?? "" },
      pageSize: 100,
    });
    assert.equal(started.length, first.event?.matches.length);
    // Concurrent first publishes with one key: one event.
    const racing = await Promise.all(
      Array.from({ length: 5 }, () =>
        events.publishEvent({
          key: "orders.created",
          payload: jsonToValue({ total: 7 }),
          idempotencyKey: "race",
        }),
      ),
    );
    assert.equal(new Set(racing.map((r) => r.event?.eventId)).size, 1);
    assert.equal(racing.filter((r) => r.created).length, 1);
  });

  it("matches a workflow whose registration committed after one with a higher id was seen", async () => {
    // Its registration inserts (taking id N), then waits in its transaction on the lock of its
    // declared schedules, held here; another registers meanwhile (id N+1, committed).
    const blocker = new pg.Client({ connectionString: db.url });
    await blocker.connect();
    try {
      await blocker.query("BEGIN");
      await blocker.query("SELECT pg_advisory_xact_lock(1313231684, hashtext('late-commit'))");
      const late = register(flow("late-commit", [{ event: "parcels.sent" }]));
      await waitFor("the registration to wait on the lock, its row inserted", async () => {
        const { rows } = await blocker.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        );
        return rows[0]?.n === 1;
      });
      await register(flow("early-commit", [{ event: "parcels.other" }]));
      // The index is read now, with the higher id and without the registration in flight.
      const before = await events.publishEvent({ key: "parcels.sent", idempotencyKey: "parcels-1" });
      assert.deepEqual(before.event?.matches, []);
      await blocker.query("COMMIT");
      await late;
      const after = await events.publishEvent({ key: "parcels.sent", idempotencyKey: "parcels-2" });
      assert.deepEqual(
        after.event?.matches.map((m) => m.workflowName),
        ["late-commit"],
      );
    } finally {
      await blocker.end();
    }
  });

  it("lists events by key prefix, newest first, a page at a time", async () => {
    for (let i = 0; i < 5; i++)
      await events.publishEvent({ key: `invoices.n${i}`, payload: jsonToValue({ i }) });
    await events.publishEvent({ key: "invoicesx", payload: jsonToValue({}) });
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await events.listEvents({ keyPrefix: "invoices.", pageSize: 2, pageToken });
      assert.ok(page.events.length <= 2);
      seen.push(...page.events.map((e) => e.key));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    assert.deepEqual(seen, ["invoices.n4", "invoices.n3", "invoices.n2", "invoices.n1", "invoices.n0"]);
    // A token continues its own listing: with another prefix it is refused, naming the field.
    const first = await events.listEvents({ keyPrefix: "invoices.", pageSize: 2 });
    const other = await refusal(events.listEvents({ keyPrefix: "invoices", pageToken: first.nextPageToken }));
    assert.equal(other.code, Code.InvalidArgument, other.message);
    assert.match(other.message, /^page_token: was returned for other filters: list with the same key_prefix/);
    // "_" is no wildcard in a prefix.
    assert.deepEqual((await events.listEvents({ keyPrefix: "invoices_" })).events, []);
  });
});
