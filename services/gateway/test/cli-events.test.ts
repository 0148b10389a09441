/**
 * `nexusflow events publish|get|list` spawned as processes, and EventService over REST, against a
 * real gateway (authentication on) and scheduler on a real embedded PostgreSQL: a published event
 * starts the run of a workflow whose trigger matches it, with the payload as input; the same
 * idempotency key again starts nothing; an event ends a run's step waiting for it (`runs why`
 * names what it waits for); bad input refused naming the field.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { waitFor } from "@nexusflow/common/testing";
import { nexusflow } from "./cli-process.js";
import { type CliStack, startCliStack } from "./cli-stack.js";

const T = { timeout: 120_000 };

/** The parts of EventService's JSON these tests read. */
interface EventJson {
  eventId: string;
  key: string;
  payload?: unknown;
  matches?: { workflowName: string; status: string; runId?: string; error?: string }[];
  waits?: { runId: string; stepId: string; status: string }[];
}
interface ResponseJson {
  created?: boolean;
  event?: EventJson;
  events?: EventJson[];
  message?: string;
  code?: number;
}

describe("nexusflow events and /v1/events against a live stack", () => {
  let stack: CliStack | undefined;
  let dataDir: string;
  let env: Record<string, string>;
  let url: string;
  let token: string;

  before(async () => {
    stack = await startCliStack("nf-cli-events-");
    ({ dataDir, url, token, env } = stack);
    const file = join(dataDir, "on-order.json");
    await writeFile(
      file,
      JSON.stringify({
        name: "on-order",
        version: 1,
        triggers: [{ event: "orders.*", filter: "event.payload.total >= 100" }],
        steps: [{ id: "wait", type: "cli-events.never" }],
      }),
    );
    const applied = await nexusflow(["apply", file], env);
    assert.equal(applied.code, 0, applied.stderr);
  });

  after(async () => {
    await stack?.close();
  });

  const rest = async (
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: ResponseJson }> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    return { status: res.status, json: (await res.json()) as ResponseJson };
  };

  it("publishes with the CLI, once per idempotency key, and shows and lists events", T, async () => {
    const payloadFile = join(dataDir, "payload.json");
    await writeFile(payloadFile, JSON.stringify({ id: "o-1", total: 250 }));
    const args = [
      "events",
      "publish",
      "orders.created",
      "--payload",
      `@${payloadFile}`,
      "--idempotency-key",
      "o-1",
    ];
    const first = await nexusflow([...args, "--output", "json"], env);
    assert.equal(first.code, 0, first.stderr);
    const published = JSON.parse(first.stdout) as ResponseJson;
    assert.equal(published.created, true);
    const match = published.event?.matches?.[0];
    assert.equal(match?.workflowName, "on-order");
    assert.equal(match?.status, "EVENT_MATCH_STATUS_STARTED");
    const runId = match?.runId ?? "";
    const run = await nexusflow(["runs", "get", runId, "--output", "json"], env);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual((JSON.parse(run.stdout) as { input: unknown }).input, { id: "o-1", total: 250 });

    const again = await nexusflow(args, env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /^\(existing event for this idempotency key\)\n/);
    assert.match(again.stdout, new RegExp(`on-order +1 +0 +started +${runId}\\n`));

    const failing = await nexusflow(
      ["events", "publish", "orders.updated", "--payload", '{"id":"o-2"}'],
      env,
    );
    assert.equal(failing.code, 0, failing.stderr);
    assert.match(
      failing.stdout,
      /on-order +1 +0 +failed +triggers\[0\]\.filter: event\.payload\.total does not resolve/,
    );

    const shown = await nexusflow(["events", "get", published.event?.eventId ?? ""], env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^event [0-9a-f-]{36} orders\.created at /);
    assert.match(shown.stdout, new RegExp(`started +${runId}`));

    const listed = await nexusflow(["events", "list", "--prefix", "orders.", "--limit", "1"], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /orders\.updated/);
    assert.doesNotMatch(listed.stdout, /orders\.created/);
    assert.match(listed.stderr, /more: --page-token \S+/);

    const bad = await nexusflow(["events", "publish", "orders.*"], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /INVALID_ARGUMENT: key: "orders\.\*" is invalid/);
    const notJson = await nexusflow(["events", "publish", "a", "--payload", "{nope"], env);
    assert.notEqual(notJson.code, 0);
    assert.match(notJson.stderr, /--payload is not JSON/);
  });

  it("publishes over REST and refuses bad input naming the field", T, async () => {
    const created = await rest("POST", "/v1/events", {
      key: "orders.created",
      payload: { id: "o-9", total: 120 },
      idempotencyKey: "rest-1",
    });
    assert.equal(created.status, 200, JSON.stringify(created.json));
    assert.equal(created.json.created, true);
    const runId = created.json.event?.matches?.[0]?.runId;
    assert.ok(runId);
    const again = await rest("POST", "/v1/events", {
      key: "orders.created",
      payload: {},
      idempotencyKey: "rest-1",
    });
    assert.equal(again.json.event?.eventId, created.json.event?.eventId);
    assert.equal(again.json.event?.matches?.[0]?.runId, runId);
    const got = await rest("GET", `/v1/events/${created.json.event?.eventId ?? ""}`);
    assert.equal(got.status, 200);
    assert.deepEqual(got.json.event?.payload, { id: "o-9", total: 120 });
    const listed = await rest("GET", "/v1/events?keyPrefix=orders.&pageSize=1");
    assert.equal(listed.json.events?.length, 1);

    const empty = await rest("POST", "/v1/events", { key: "" });
    assert.equal(empty.status, 400);
    assert.match(empty.json.message ?? "", /^key: an event key is required/);
    const huge = await rest("POST", "/v1/events", { key: "a", payload: { s: "x".repeat(300 * 1024) } });
    assert.equal(huge.status, 400);
    assert.match(huge.json.message ?? "", /^payload: is \d+ bytes as JSON/);
    const unknown = await rest("POST", "/v1/events", { key: "a", bogus: 1 });
    assert.equal(unknown.status, 400);
    assert.match(unknown.json.message ?? "", /"bogus" is unknown/);
    const badId = await rest("GET", "/v1/events/nope");
    assert.equal(badId.status, 400);
    assert.match(badId.json.message ?? "", /^event_id: not an event id/);
  });

  it("ends a step waiting for an event with the CLI's publish, and shows it over REST", T, async () => {
    const file = join(dataDir, "await-shipment.json");
    await writeFile(
      file,
      JSON.stringify({
        name: "await-shipment",
        version: 1,
        steps: [
          {
            id: "shipped",
            wait: { event: "shipments.*", filter: "event.payload.order == input.order", timeout: "1h" },
          },
        ],
        output: { carrier: "{{ steps.shipped.output.payload.carrier }}" },
      }),
    );
    const applied = await nexusflow(["apply", file], env);
    assert.equal(applied.code, 0, applied.stderr);
    const started = await nexusflow(
      ["runs", "start", "await-shipment", "--input", '{"order":"o-7"}', "--output", "json"],
      env,
    );
    assert.equal(started.code, 0, started.stderr);
    const runId = (JSON.parse(started.stdout) as { run: { id: string } }).run.id;
    const why = await waitFor("the step waiting", async () => {
      const r = await nexusflow(["runs", "why", runId, "shipped"], env);
      return /WAITING/.test(r.stdout) ? r.stdout : undefined;
    });
    assert.match(
      why,
      /it waits for an event "shipments\.\*" for which event\.payload\.order == input\.order published while it waits, and fails with WAIT_TIMEOUT unless one is by /,
    );
    const other = await nexusflow(
      ["events", "publish", "shipments.sent", "--payload", '{"order":"o-8"}'],
      env,
    );
    assert.equal(other.code, 0, other.stderr);
    assert.doesNotMatch(other.stdout, /WAITING RUN/);
    const hit = await nexusflow(
      ["events", "publish", "shipments.sent", "--payload", '{"order":"o-7","carrier":"ctt"}'],
      env,
    );
    assert.equal(hit.code, 0, hit.stderr);
    assert.match(hit.stdout, new RegExp(`WAITING RUN +STEP +STATUS\n${runId} +shipped +satisfied`));
    const done = await nexusflow(["runs", "watch", runId], env);
    assert.equal(done.code, 0, done.stderr);
    const run = await nexusflow(["runs", "get", runId, "--output", "json"], env);
    assert.deepEqual((JSON.parse(run.stdout) as { output: unknown }).output, { carrier: "ctt" });
    const eventId = /^event ([0-9a-f-]{36}) /.exec(hit.stdout)?.[1] ?? "";
    const got = await rest("GET", `/v1/events/${eventId}`);
    assert.deepEqual(got.json.event?.waits, [
      { runId, stepId: "shipped", status: "EVENT_WAIT_MATCH_STATUS_SATISFIED" },
    ]);
  });
});
