/**
 * The elements of a map step share the step id, so each stores in its own folder
 * (`runs/{run}/{step}/element-{i}/attempt-{n}/`, Lease.element_index): a report's output_ref and
 * logs keys must be in its element's folder, not in the step's nor in another element's, from a
 * session of protocol version 3 (ELEMENT_FOLDERS_VERSION). An executor of an older session stores
 * every element in the step's attempt folder, as releases before element folders did: there, the
 * step's folder is taken too (a rolling upgrade must not fail every map element).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { attemptPrefix } from "@nexusflow/common/artifacts";
import type { TaskState } from "../model/run-state.js";
import { ELEMENT_FOLDERS_VERSION } from "@nexusflow/common";
import type { SessionLeases } from "./context.js";
import { completed, failed } from "./reports.js";
import { reclaim } from "./sessions.js";
import { beginRun, settleRuns, Simulation, workflowOf } from "./simulation.js";

const fan = workflowOf({
  name: "fan",
  version: 1,
  steps: [
    { id: "split", type: "split" },
    {
      id: "each",
      type: "double",
      dependsOn: ["split"],
      map: { items: "steps.split.output" },
      input: { x: "{{ item }}" },
      retry: { maxAttempts: 1 },
    },
  ],
});

/**
 * A run of `fan` whose 12 elements are all leased, by index, to a session of `protocolVersion`
 * (null: none named, which is 1).
 */
function leasedElements(protocolVersion: number | null = ELEMENT_FOLDERS_VERSION): {
  sim: Simulation;
  s: SessionLeases;
  elements: TaskState[];
} {
  const sim = new Simulation();
  const s: SessionLeases = Object.assign(
    sim.session("s"),
    protocolVersion === null ? {} : { protocolVersion },
  );
  beginRun(sim, fan);
  const split = sim.lease(s)!;
  const items = Array.from({ length: 12 }, (_, i) => i);
  assert.equal(completed(sim.core, s, sim.key(split), items, null, null, sim.at()), null);
  settleRuns(sim);
  const elements: TaskState[] = [];
  for (let t = sim.lease(s); t !== undefined; t = sim.lease(s)) elements.push(t);
  elements.sort((a, b) => (a.elementIndex ?? -1) - (b.elementIndex ?? -1));
  assert.deepEqual(
    elements.map((e) => e.elementIndex),
    items,
  );
  return { sim, s, elements };
}

/** The folder of `t`'s attempt: its own, or element `elementIndex`'s (null: the step's). */
const folder = (t: TaskState, elementIndex: number | null | undefined = t.elementIndex): string =>
  attemptPrefix(t.runId, t.stepId, t.attempt, t.kind, elementIndex ?? undefined);

describe("map elements' artifact folders (reports)", () => {
  it("accepts an element's output and logs in its own folder", () => {
    const { sim, s, elements } = leasedElements();
    const e = elements[10]!;
    assert.equal(folder(e), `runs/${e.runId}/each/element-10/attempt-1/`);
    const ref = { key: `${folder(e)}output.json` };
    const logs = { key: `${folder(e)}logs.jsonl`, lines: "2" };
    assert.equal(completed(sim.core, s, sim.key(e), null, ref, logs, sim.at()), null);
    assert.deepEqual(e.outputRef, ref);
  });

  it("rejects an element's keys in the step's folder or in another element's (1 is not 10)", () => {
    const { sim, s, elements } = leasedElements();
    const e = elements[1]!;
    const other = elements[10]!;
    for (const prefix of [folder(e, null), folder(other), folder(e, 10), folder(e, 0)]) {
      const rejection = completed(
        sim.core,
        s,
        sim.key(e),
        null,
        { key: `${prefix}output.json` },
        null,
        sim.at(),
      );
      assert.equal(rejection?.code, "INVALID_ARGUMENT", prefix);
      assert.match(rejection.message, /element-1\/attempt-1\//);
      const logRejection = failed(
        sim.core,
        s,
        sim.key(e),
        { type: "BOOM", message: "broke", retryable: false },
        0,
        { key: `${prefix}logs.jsonl`, lines: "1" },
        sim.at(),
      );
      assert.equal(logRejection?.code, "INVALID_ARGUMENT", prefix);
    }
    assert.equal(e.status, "LEASED", "nothing changed");
    // Its own folder then goes through.
    assert.equal(
      completed(sim.core, s, sim.key(e), null, { key: `${folder(e)}output.json` }, null, sim.at()),
      null,
    );
  });

  for (const protocolVersion of [null, 1, 2])
    it(`takes an element's keys in the step's attempt folder too from a session of version ${protocolVersion ?? "unnamed"}`, () => {
      const { sim, s, elements } = leasedElements(protocolVersion);
      const [e, other, own] = [elements[1]!, elements[2]!, elements[3]!];
      const step = folder(e, null);
      assert.equal(step, `runs/${e.runId}/each/attempt-1/`);
      const ref = { key: `${step}output.json` };
      const logs = { key: `${step}logs.jsonl`, lines: "2" };
      assert.equal(completed(sim.core, s, sim.key(e), null, ref, logs, sim.at()), null);
      assert.deepEqual(e.outputRef, ref);
      // Its own folder is taken as well; another element's, or another attempt's, still is not.
      assert.equal(
        completed(sim.core, s, sim.key(own), null, { key: `${folder(own)}output.json` }, null, sim.at()),
        null,
      );
      for (const key of [`${folder(e)}output.json`, `runs/${e.runId}/each/attempt-2/output.json`]) {
        const rejection = completed(sim.core, s, sim.key(other), null, { key }, null, sim.at());
        assert.equal(rejection?.code, "INVALID_ARGUMENT", key);
      }
      const failure = { type: "BOOM", message: "broke", retryable: false };
      assert.equal(
        failed(sim.core, s, sim.key(other), failure, 0, { key: `${step}logs.jsonl`, lines: "1" }, sim.at()),
        null,
      );
    });

  it("judges by the session a lease was granted on, not by the one reporting it", () => {
    // Granted on version 2 (the executor stores in the step's folder), then its executor
    // re-attached to an upgraded scheduler at version 3 and reports there.
    const { sim, s, elements } = leasedElements(2);
    const e = elements[4]!;
    const s3: SessionLeases = Object.assign(sim.session("s3"), {
      executorId: s.executorId,
      protocolVersion: ELEMENT_FOLDERS_VERSION,
    });
    assert.deepEqual(reclaim(sim.core, s3, [sim.key(e)]), []);
    assert.equal(e.sessionId, s3.id);
    const ref = { key: `${folder(e, null)}output.json` };
    assert.equal(completed(sim.core, s3, sim.key(e), null, ref, null, sim.at()), null);
    // A lease recovered from storage (granted by an earlier process): whichever folder it used.
    const recovered = elements[5]!;
    recovered.elementFolder = undefined;
    assert.deepEqual(reclaim(sim.core, s3, [sim.key(recovered)]), []);
    const stepRef = { key: `${folder(recovered, null)}output.json` };
    assert.equal(completed(sim.core, s3, sim.key(recovered), null, stepRef, null, sim.at()), null);
    // Granted on version 3: its own folder only, whatever session reports it.
    const v3 = leasedElements(ELEMENT_FOLDERS_VERSION);
    const own = v3.elements[4]!;
    assert.equal(own.elementFolder, true);
    assert.equal(
      completed(
        v3.sim.core,
        v3.s,
        v3.sim.key(own),
        null,
        { key: `${folder(own, null)}output.json` },
        null,
        v3.sim.at(),
      )?.code,
      "INVALID_ARGUMENT",
    );
  });

  it("still wants a plain step's keys in the step's attempt folder", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    beginRun(sim, fan);
    const split = sim.lease(s)!;
    assert.equal(split.elementIndex, undefined);
    const wrong = { key: `${attemptPrefix(split.runId, "split", 1, "STEP", 0)}output.json` };
    assert.equal(
      completed(sim.core, s, sim.key(split), null, wrong, null, sim.at())?.code,
      "INVALID_ARGUMENT",
    );
    const ref = { key: `${attemptPrefix(split.runId, "split", 1)}output.json` };
    assert.equal(completed(sim.core, s, sim.key(split), null, ref, null, sim.at()), null);
  });
});
