/**
 * The two crash windows of an event's match, set up exactly: an event stored with its matches
 * PENDING whose runs were never started (the crash came before StartRun), and a match whose run
 * was committed but not recorded (the crash came before the match was settled). A scheduler
 * started afterwards starts the first's runs once and finds the second's run, even with the
 * engine's idempotency keys expired at once (retention 1 ms): the match's own key lookup is what
 * keeps it from starting a second run.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { EventMatchStatus, EventService } from "@nexusflow/gen";
import pg from "pg";
import type { Scheduler } from "../../src/index.js";
import { startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

describe("an event's match left pending by a crash", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler | undefined;
  let sql: pg.Client;

  before(async () => {
    db = await startTestDatabase();
    sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
  });

  after(async () => {
    await scheduler?.stop();
    await sql?.end();
    await db?.close();
  });

  it("starts its run once, or finds the run it started, after a restart", async () => {
    const options = { idempotencyKeyRetentionMs: 1 };
    scheduler = await startTestScheduler(db.url, options);
    const runs = workflowClient(scheduler.address);
    for (const name of ["pick", "audit"])
      await runs.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name,
            version: 1,
            steps: [{ id: "wait", type: "recovery.never" }],
            triggers: [{ event: name === "pick" ? "orders.created" : "orders.**" }],
          }),
        },
      });
    const events = createClient(
      EventService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    );
    const { event: published } = await events.publishEvent({
      key: "orders.created",
      payload: jsonToValue({ id: "o-1" }),
    });
    assert.ok(published);
    assert.deepEqual(
      published.matches.map((m) => [m.workflowName, m.status]),
      [
        ["audit", EventMatchStatus.STARTED],
        ["pick", EventMatchStatus.STARTED],
      ],
    );
    const pickRun = published.matches.find((m) => m.workflowName === "pick")?.runId;
    assert.ok(pickRun);
    await scheduler.stop();

    // Crash after the run was committed, before the match was settled.
    await sql.query(
      `UPDATE event_matches SET status = 'STARTING', run_id = NULL WHERE event_id = $1 AND workflow_name = 'pick'`,
      [published.eventId],
    );
    // Crash after the event and its matches were committed, before StartRun: matches with no runs.
    const unstarted = randomUUID();
    await sql.query(
      `INSERT INTO events (event_id, key, payload, idempotency_key, created_at)
       VALUES ($1, 'orders.created', '{"id":"o-2"}', NULL, now())`,
      [unstarted],
    );
    await sql.query(
      `INSERT INTO event_matches (event_id, workflow_name, workflow_version, trigger_index, status, created_at)
       VALUES ($1, 'pick', 1, 0, 'STARTING', now()), ($1, 'audit', 1, 0, 'STARTING', now())`,
      [unstarted],
    );

    scheduler = await startTestScheduler(db.url, options);
    await waitFor("no match STARTING", async () => {
      const { rows } = await sql.query(`SELECT 1 FROM event_matches WHERE status = 'STARTING'`);
      return rows.length === 0;
    });
    const { rows: matches } = await sql.query<{
      event_id: string;
      workflow_name: string;
      status: string;
      run_id: string | null;
    }>(`SELECT event_id, workflow_name, status, run_id FROM event_matches ORDER BY event_id, workflow_name`);
    assert.equal(matches.length, 4);
    assert.ok(
      matches.every((m) => m.status === "STARTED" && m.run_id !== null),
      JSON.stringify(matches),
    );
    assert.equal(
      matches.find((m) => m.event_id === published.eventId && m.workflow_name === "pick")?.run_id,
      pickRun,
      "the match settled late finds the run it started",
    );
    const { rows: counts } = await sql.query<{ event: string; workflow: string; n: string }>(
      `SELECT labels->>'event-id' AS event, workflow_name AS workflow, count(*) AS n FROM workflow_runs
       WHERE labels ? 'event-id' GROUP BY 1, 2`,
    );
    assert.deepEqual(
      counts.filter((c) => Number(c.n) !== 1),
      [],
      "an (event, workflow) with more than one run",
    );
    assert.equal(counts.length, 4, "one run per match");
    // The recovered runs have the stored payload as input.
    const client = workflowClient(scheduler.address);
    for (const m of matches.filter((x) => x.event_id === unstarted)) {
      const { run } = await client.getRun({ runId: m.run_id ?? "" });
      assert.deepEqual(valueToJson(run?.input), { id: "o-2" });
      assert.equal(run?.workflowName, m.workflow_name);
    }
    const { event: after } = await createClient(
      EventService,
      createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
    ).getEvent({ eventId: unstarted });
    assert.deepEqual(
      after?.matches.map((m) => m.status),
      [EventMatchStatus.STARTED, EventMatchStatus.STARTED],
    );
  });
});
