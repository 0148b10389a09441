/** Map steps through the pure core (simulation.ts): no server, time by hand, operations counted. */
import { attemptPrefix } from "@nexusflow/common/artifacts";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { RunState, TaskState } from "../model/run-state.js";
import { explainPending, pendingReason } from "./explain.js";
import { mapElements, mapProgress } from "./maps.js";
import { recover } from "./recovery.js";
import { completed, failed, outputResolved } from "./reports.js";
import { advance, cancelRun } from "./runs.js";
import { beginRun, settleRuns, storedOf, Simulation, workflowOf } from "./simulation.js";

function fanFlow(map: Record<string, unknown>, retry: Record<string, unknown> = { maxAttempts: 1 }) {
  return workflowOf({
    name: "fan",
    version: 1,
    steps: [
      { id: "split", type: "split" },
      {
        id: "each",
        type: "double",
        dependsOn: ["split"],
        map: { items: "steps.split.output", ...map },
        input: { x: "{{ item }}", i: "{{ index }}" },
        retry,
      },
      { id: "join", type: "join", dependsOn: ["each"], input: "{{ steps.each.output }}" },
    ],
    output: "{{ steps.join.output }}",
  });
}

const unfinished = (run: RunState) => mapElements(run, true).length;

/** Leases the split task and completes it with `items`. */
function split(sim: Simulation, s: ReturnType<Simulation["session"]>, items: unknown[]): void {
  const t = sim.lease(s)!;
  assert.equal(t.stepId, "split");
  assert.equal(completed(sim.core, s, sim.key(t), items, null, null, sim.at()), null);
  settleRuns(sim);
  // A map ending as it starts (no items) asks for another evaluation, as the engine does soon after.
  settleRuns(sim);
}

/** Leases the next offered task if it is a map element (another task stays offered). */
function nextElement(sim: Simulation, s: ReturnType<Simulation["session"]>): TaskState | undefined {
  while (sim.offered.length > 0 && sim.offered[0]!.status !== "QUEUED") sim.offered.shift();
  return sim.offered[0]?.elementIndex === undefined ? undefined : sim.lease(s);
}

/** Runs every offered element to completion (doubling x, or failing those `fails` says), checking the bound. */
function drain(
  sim: Simulation,
  run: RunState,
  s: ReturnType<Simulation["session"]>,
  bound: number,
  fails: (t: TaskState) => boolean = () => false,
  stopAfter = Infinity,
): number {
  let done = 0;
  while (done < stopAfter) {
    const t = nextElement(sim, s);
    if (t === undefined) break;
    assert.ok(unfinished(run) <= bound, `at most ${bound} unfinished elements, got ${unfinished(run)}`);
    const input = t.input as { x: number; i: number };
    assert.equal(input.i, t.elementIndex);
    if (fails(t))
      failed(
        sim.core,
        s,
        sim.key(t),
        { type: "BOOM", message: `element ${input.i} broke`, retryable: true },
        0,
        null,
        sim.at(),
      );
    else completed(sim.core, s, sim.key(t), input.x * 2, null, null, sim.at());
    done++;
    settleRuns(sim);
  }
  return done;
}

void describe("map steps (core)", () => {
  it("1 -> 1000 -> 1 with parallelism 50: never more than 50 unfinished, outputs in order, linear work", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({ parallelism: 50 }));
    const items = Array.from({ length: 1000 }, (_, i) => i);
    split(sim, s, items);
    const each = run.tasks.get("each")!;
    assert.equal(each.status, "WAITING");
    assert.deepEqual(each.input, items);
    assert.equal(unfinished(run), 50);
    assert.deepEqual(mapProgress(run, "each"), {
      total: 1000,
      succeeded: 0,
      failed: 0,
      inFlight: 50,
      running: 0,
      waitingForParallelism: 950,
      parallelism: 50,
    });
    assert.equal(drain(sim, run, s, 50), 1000);
    assert.equal(each.status, "SUCCEEDED");
    assert.deepEqual(
      each.output,
      items.map((i) => i * 2),
    );
    const join = sim.lease(s)!;
    assert.equal(join.stepId, "join");
    assert.deepEqual(join.input, each.output);
    // Each element is touched a bounded number of times (made, ended, collected): no scan per end.
    assert.ok(run.maps!.get("each")!.work <= 3 * 1000, `work ${run.maps!.get("each")!.work}`);
    completed(sim.core, s, sim.key(join), "joined", null, null, sim.at());
    settleRuns(sim);
    assert.equal(run.status, "SUCCEEDED");
  });

  it("runs why for a map step: its elements by state, and its reason in one line", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(
      sim,
      fanFlow({ parallelism: 3 }, { maxAttempts: 2, initialInterval: "1s", jitter: "none" }),
    );
    split(sim, s, [0, 1, 2, 3, 4, 5, 6, 7]);
    const first = sim.lease(s)!;
    const second = sim.lease(s)!;
    completed(sim.core, s, sim.key(first), 0, null, null, sim.at());
    failed(sim.core, s, sim.key(second), { type: "BOOM", message: "b", retryable: true }, 0, null, sim.at());
    settleRuns(sim);
    const gates = explainPending(run, run.tasks.get("each")!);
    assert.deepEqual(gates, [
      {
        kind: "map-elements",
        total: 8,
        succeeded: 1,
        failed: 0,
        running: 0,
        queued: 3,
        waitingForParallelism: 4,
        parallelism: 3,
      },
    ]);
    assert.equal(
      pendingReason(gates),
      "waiting for its elements: 1 of 8 ended (0 failed), 0 running, 3 queued, 4 waiting for parallelism (3)",
    );
    const leased = sim.lease(s)!;
    assert.equal(leased.elementIndex, 2);
    assert.deepEqual(
      { ...explainPending(run, run.tasks.get("each")!)[0] },
      {
        kind: "map-elements",
        total: 8,
        succeeded: 1,
        failed: 0,
        running: 1,
        queued: 2,
        waitingForParallelism: 4,
        parallelism: 3,
      },
    );
  });

  it("10,000 elements cost O(n) bookkeeping, not O(n²)", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({ parallelism: 100 }));
    split(
      sim,
      s,
      Array.from({ length: 10_000 }, (_, i) => i),
    );
    assert.equal(drain(sim, run, s, 100), 10_000);
    assert.equal(run.tasks.get("each")!.status, "SUCCEEDED");
    assert.ok(run.maps!.get("each")!.work <= 3 * 10_000, `work ${run.maps!.get("each")!.work}`);
  });

  it("an offloaded element output counts once read back; the step's output holds the value read", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({ parallelism: 2 }));
    split(sim, s, [0, 1]);
    const a = sim.lease(s)!;
    const b = sim.lease(s)!;
    completed(sim.core, s, sim.key(a), 0, null, null, sim.at());
    const ref = { key: `${attemptPrefix(b.runId, b.stepId, b.attempt, b.kind, b.elementIndex)}output.json` };
    completed(sim.core, s, sim.key(b), null, ref, null, sim.at());
    settleRuns(sim);
    const each = run.tasks.get("each")!;
    // The simulation's read sets resolvedOutput to the ref; the engine then calls outputResolved.
    b.resolvedOutput = undefined;
    assert.equal(each.status, "WAITING", "waits for the offloaded output");
    outputResolved(sim.core, b, { big: true }, sim.at().now);
    settleRuns(sim);
    assert.equal(each.status, "SUCCEEDED");
    assert.deepEqual(each.output, [0, { big: true }]);
  });

  it("an empty array succeeds at once with []", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({}));
    split(sim, s, []);
    assert.equal(run.tasks.get("each")!.status, "SUCCEEDED");
    assert.deepEqual(run.tasks.get("each")!.output, []);
    assert.equal(sim.lease(s)?.stepId, "join");
  });

  it("fail-fast: an element failing for good (after its retries) fails the step and cancels the others", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(
      sim,
      fanFlow({ parallelism: 4 }, { maxAttempts: 2, initialInterval: "1s", jitter: "none" }),
    );
    split(sim, s, [0, 1, 2, 3, 4, 5, 6, 7]);
    const leased = [sim.lease(s)!, sim.lease(s)!, sim.lease(s)!];
    const bad = leased[1]!;
    const fail = () =>
      failed(
        sim.core,
        s,
        sim.key(bad),
        { type: "BOOM", message: "element 1 broke", retryable: true },
        0,
        null,
        sim.at(),
      );
    fail();
    assert.equal(bad.status, "RETRY_WAIT");
    assert.equal(run.tasks.get("each")!.status, "WAITING");
    sim.advanceTime(1000);
    assert.equal(bad.status, "QUEUED");
    const three = sim.lease(s)!;
    assert.equal(three.elementIndex, 3);
    assert.equal(sim.lease(s), bad);
    fail();
    settleRuns(sim);
    const each = run.tasks.get("each")!;
    assert.equal(each.status, "FAILED");
    assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENT_FAILED);
    assert.deepEqual((each.error?.details as { index: number }).index, 1);
    assert.match(each.error?.message ?? "", /element \[1\] failed: element 1 broke/);
    // The three leased others are told to stop; nothing more is made.
    assert.deepEqual(
      sim.cancels.map((c) => c.taskRunId).sort(),
      [leased[0]!.id, leased[2]!.id, three.id].sort(),
    );
    assert.equal(unfinished(run), 0);
    assert.equal(run.maps!.get("each")!.created, 4);
    assert.equal(run.status, "FAILED");
    assert.equal(run.tasks.get("join")!.status, "SKIPPED");
  });

  it("collect: every element runs, then the step fails listing the failures", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({ parallelism: 3, failure: "collect" }));
    split(sim, s, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(
      drain(sim, run, s, 3, (t) => t.elementIndex === 2 || t.elementIndex === 7),
      10,
    );
    const each = run.tasks.get("each")!;
    assert.equal(each.status, "FAILED");
    assert.equal(each.error?.type, TaskErrorType.MAP_ELEMENTS_FAILED);
    const details = each.error?.details as {
      failedCount: number;
      succeededCount: number;
      failed: { index: number; error: { message: string } }[];
    };
    assert.equal(details.failedCount, 2);
    assert.equal(details.succeededCount, 8);
    assert.deepEqual(
      details.failed.map((f) => [f.index, f.error.message]),
      [
        [2, "element 2 broke"],
        [7, "element 7 broke"],
      ],
    );
    assert.match(each.error?.message ?? "", /2 of 10 elements failed; the first, \[2\]: element 2 broke/);
    assert.equal(run.status, "FAILED");
  });

  it("a cancelled run cancels its unfinished elements and makes no more", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, fanFlow({ parallelism: 5 }));
    split(
      sim,
      s,
      Array.from({ length: 20 }, (_, i) => i),
    );
    const leased = [sim.lease(s)!, sim.lease(s)!];
    assert.ok(cancelRun(sim.core, run, "enough", false, sim.at().now));
    assert.equal(run.status, "CANCELLED");
    assert.equal(run.tasks.get("each")!.status, "CANCELLED");
    assert.equal(run.maps!.get("each")!.created, 5);
    assert.equal(mapElements(run, true).length, 0);
    assert.deepEqual(sim.cancels.map((c) => c.taskRunId).sort(), leased.map((t) => t.id).sort());
  });

  it("recovery rebuilds a map from its rows and goes on without running finished elements again", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const workflow = fanFlow({ parallelism: 4 }, { maxAttempts: 3, initialInterval: "1s", jitter: "none" });
    const before = beginRun(sim, workflow);
    split(
      sim,
      s,
      Array.from({ length: 12 }, (_, i) => i),
    );
    // Six elements done, one leased (its executor dies with the scheduler), three queued.
    assert.equal(
      drain(sim, before, s, 4, () => false, 6),
      6,
    );
    const held = sim.lease(s)!;
    assert.ok(held.elementIndex !== undefined);
    const rows = [...sim.written.tasks].filter((t) => t.runId === before.id);
    const stored = storedOf(before, rows);
    const doneBefore = new Set(
      rows.filter((t) => t.status === "SUCCEEDED" && t.elementIndex !== undefined).map((t) => t.elementIndex),
    );
    assert.equal(doneBefore.size, 6);
    const after = new Simulation();
    const { runs } = recover(after.core, stored, new Map([[1, workflow]]), new Map(), after.at());
    const run = runs[0]!;
    const map = run.maps!.get("each")!;
    assert.deepEqual(
      { created: map.created, succeeded: map.succeeded, inFlight: map.inFlight },
      { created: 10, succeeded: 6, inFlight: 4 },
    );
    const s2 = after.session("s2");
    // The held lease expires (its executor is gone): that element is offered again with the rest.
    after.advanceTime(after.core.sessionTimeoutMs + 1);
    after.advanceTime(1000);
    const ran: number[] = [];
    for (let t = after.lease(s2); t !== undefined && t.elementIndex !== undefined; t = after.lease(s2)) {
      assert.ok(mapElements(run, true).length <= 4);
      ran.push(t.elementIndex);
      completed(after.core, s2, after.key(t), (t.input as { x: number }).x * 2, null, null, after.at());
      after.settle((r) => advance(after.core, r, after.at().now));
    }
    for (const i of ran) assert.ok(!doneBefore.has(i), `element ${i} ran again`);
    assert.deepEqual(
      ran.sort((a, b) => a - b),
      [...Array(12).keys()].filter((i) => !doneBefore.has(i)),
    );
    assert.equal(run.tasks.get("each")!.status, "SUCCEEDED");
    assert.deepEqual(
      run.tasks.get("each")!.output,
      Array.from({ length: 12 }, (_, i) => i * 2),
    );
  });
});
