/**
 * Map elements' artifact folders across session protocol versions, against a real scheduler and
 * PostgreSQL, driven by raw grpc-js sessions. From version 3 a map element stores in its own folder
 * (`runs/{run}/{step}/element-{i}/attempt-{n}/`) and a report naming a key in the step's attempt
 * folder is rejected. An executor of version 2 (the release before element folders) ignores
 * Lease.element_index and stores every element in the step's `runs/{run}/{step}/attempt-{n}/`: its
 * reports are taken, so that a rolling upgrade does not fail every map element.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ELEMENT_FOLDERS_VERSION, jsonToValue } from "@nexusflow/common";
import { RunStatus, type SessionResponse } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, task } from "../e2e/harness.js";
import {
  RawSession,
  registerSpec,
  startRunOf,
  startTestDatabase,
  startTestScheduler,
  waitForRun,
  workflowClient,
} from "../support.js";

describe("map elements' folders by session protocol version", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let client: ReturnType<typeof workflowClient>;
  const sessions: RawSession[] = [];

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    for (const version of [2, 3])
      await registerSpec(client, {
        name: `efv-${version}`,
        version: 1,
        steps: [
          {
            id: "each",
            type: `efv.v${version}`,
            map: { items: "input.xs" },
            input: { x: "{{ item }}" },
            retry: { maxAttempts: 1 },
          },
        ],
      });
  });

  after(async () => {
    for (const s of sessions) s.close();
    await scheduler?.stop();
    await db?.close();
  });

  /** A raw session of `protocolVersion` for `efv.v{protocolVersion}`, and the cases it received. */
  const attach = async (protocolVersion: number) => {
    const s = new RawSession(scheduler.address);
    sessions.push(s);
    const cases: string[] = [];
    s.stream.on("data", (m: SessionResponse) => {
      if (m.message.case !== "ping") cases.push(m.message.case ?? "none");
    });
    s.send({
      case: "attach",
      value: {
        executorId: `efv-${protocolVersion}`,
        taskTypes: [`efv.v${protocolVersion}`],
        slots: 4,
        protocolVersion,
      },
    });
    assert.equal((await s.next("attachAck")).protocolVersion, protocolVersion);
    return { s, cases };
  };

  /** The next lease of the session (credit 1: it comes alone), an element of the map. */
  const element = async (s: RawSession) => {
    s.send({ case: "credit", value: { n: 1 } });
    const lease = await s.next("lease");
    assert.equal(lease.stepId, "each");
    assert.notEqual(lease.elementIndex, undefined, "a map element's lease carries its index");
    return lease;
  };

  /** Completes `lease` naming its log at `key` (nothing is read from the store). */
  const complete = (s: RawSession, lease: Awaited<ReturnType<typeof element>>, key: string) =>
    s.send({
      case: "completed",
      value: { key: lease.key, output: jsonToValue({ x: lease.elementIndex }), logs: { key, lines: 1n } },
    });

  it("takes a version 2 executor's element logs in the step's attempt folder", async () => {
    const { s, cases } = await attach(2);
    const runId = await startRunOf(client, "efv-2", { xs: ["a", "b"] });
    const stepFolder = `runs/${runId}/each/attempt-1/`;
    for (let n = 1; n <= 2; n++) {
      const lease = await element(s);
      complete(s, lease, `${stepFolder}logs.jsonl`);
      let through = 0n;
      while (through < BigInt(n)) through = (await s.next("acked")).through;
      assert.deepEqual(
        cases.filter((c) => c === "rejected"),
        [],
        "the report was taken",
      );
    }
    const done = await waitForRun(client, runId);
    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    for (const i of [0, 1])
      assert.equal(task(done, `each[${i}]`).attempts[0]?.logs?.key, `${stepFolder}logs.jsonl`);
  });

  it(`rejects a version ${ELEMENT_FOLDERS_VERSION} executor's element logs in the step's attempt folder`, async () => {
    const { s } = await attach(ELEMENT_FOLDERS_VERSION);
    const runId = await startRunOf(client, `efv-${ELEMENT_FOLDERS_VERSION}`, { xs: ["a", "b"] });
    const keys: string[] = [];
    for (let n = 1; n <= 2; n++) {
      const lease = await element(s);
      complete(s, lease, `runs/${runId}/each/attempt-1/logs.jsonl`);
      const rejected = await s.next("rejected");
      assert.equal(rejected.code, "INVALID_ARGUMENT");
      assert.equal(rejected.key?.taskRunId, lease.key?.taskRunId);
      const own = `runs/${runId}/each/element-${lease.elementIndex}/attempt-1/`;
      assert.ok(rejected.message.endsWith(`is not in the attempt's own folder ${own}`), rejected.message);
      // In its own folder, the same report is taken.
      keys[lease.elementIndex ?? -1] = `${own}logs.jsonl`;
      complete(s, lease, `${own}logs.jsonl`);
    }
    const done = await waitForRun(client, runId);
    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    for (const i of [0, 1]) assert.equal(task(done, `each[${i}]`).attempts[0]?.logs?.key, keys[i]);
  });
});
