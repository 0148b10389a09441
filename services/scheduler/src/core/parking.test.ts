/** Parking through the pure core (simulation.ts): which runs may leave memory, and back again. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { keyMatches, type CompiledWorkflow } from "../dag/index.js";
import { childResolved } from "./children.js";
import { keyPatternRegex, parkable, parkRun, waitingChildren } from "./parking.js";
import { recover } from "./recovery.js";
import { cancelRun, startRun } from "./runs.js";
import { beginRun, settleRuns, Simulation, storedOf, workflowOf } from "./simulation.js";
import { signalReceived } from "./waits.js";

const flow = (steps: unknown[], extra: Record<string, unknown> = {}): CompiledWorkflow =>
  workflowOf({ name: "flow", version: 1, steps, ...extra });

void describe("parking (core)", () => {
  it("parks a run whose every unfinished task waits on a signal, an event, a sleep or a child", () => {
    const sim = new Simulation();
    const run = beginRun(
      sim,
      flow([
        { id: "w", wait: { signal: "go", timeout: "1h" } },
        { id: "e", wait: { event: "orders.*.paid" } },
        { id: "s", sleep: { for: "10m" } },
        { id: "c", workflow: { name: "other" } },
        { id: "after", type: "t", dependsOn: ["w"] },
      ]),
    );
    settleRuns(sim);
    assert.equal(parkable(sim.core, run), false, "its child is being started (the shell's read)");
    const child = flow([{ id: "w", wait: { signal: "go" } }]);
    childResolved(sim.core, run.id, "c", { definitionId: 1, workflow: child, input: {} }, sim.at().now);
    settleRuns(sim);
    assert.ok(parkable(sim.core, run));
    const entry = parkRun(sim.core, run);
    assert.equal(sim.core.runs.has(run.id), false);
    assert.equal(
      [...sim.core.tasks.values()].some((t) => t.runId === run.id),
      false,
    );
    assert.ok(sim.core.runs.size === 1, "its child stays");
    assert.deepEqual(waitingChildren(run, run.tasks.values()), [...sim.core.runs.keys()]);
    assert.equal(sim.core.eventWaits?.size ?? 0, 0, "its wait for an event left the index");
    // Its nearest wake-up: the sleep (10 minutes) before the wait's timeout (1 hour).
    assert.equal(entry.wakeAt?.getTime(), sim.at().now.getTime() + 10 * 60_000);
    assert.deepEqual(
      entry.eventWaits.map((w) => [w.key, w.pattern]),
      [[null, "^orders\\.[^.]*\\.paid$"]],
    );
  });

  it("keeps a run with a task queued, or cancelled, or that is a child run", () => {
    const sim = new Simulation();
    const queued = beginRun(
      sim,
      flow([
        { id: "w", wait: { signal: "go" } },
        { id: "t", type: "t" },
      ]),
    );
    settleRuns(sim);
    assert.equal(queued.tasks.get("t")?.status, "QUEUED");
    assert.equal(parkable(sim.core, queued), false);
    const waiting = beginRun(sim, flow([{ id: "w", wait: { signal: "go" } }]));
    settleRuns(sim);
    assert.ok(parkable(sim.core, waiting));
    cancelRun(sim.core, waiting, "no", false, sim.at().now);
    assert.equal(parkable(sim.core, waiting), false);
    const child = startRun(
      sim.core,
      {
        id: "00000000-0000-8000-8000-000000000001",
        definitionId: 1,
        workflow: flow([{ id: "w", wait: { signal: "go" } }]),
        input: {},
        idempotencyKey: null,
        requestHash: null,
        labels: {},
        parent: { runId: queued.id, stepId: "x", depth: 1 },
      },
      sim.at().now,
    );
    settleRuns(sim);
    assert.equal(child.tasks.get("w")?.status, "WAITING");
    assert.equal(parkable(sim.core, child), false, "a child run stays while its parent is in memory");
    sim.core.runs.delete(queued.id);
    assert.ok(parkable(sim.core, child), "and may park once its parent is out");
  });

  it("a parked run recovered from its rows takes a signal as it would have in memory", () => {
    const sim = new Simulation();
    const workflow = flow([{ id: "w", wait: { signal: "go" } }]);
    const run = beginRun(sim, workflow);
    settleRuns(sim);
    const entry = parkRun(sim.core, run);
    assert.equal(entry.wakeAt, null, "no timeout: nothing wakes it but a signal");
    const { runs } = recover(sim.core, storedOf(run), new Map([[1, workflow]]), new Map(), sim.at());
    const back = runs[0]!;
    assert.notEqual(back, run);
    signalReceived(sim.core, back, { name: "go", key: null, payload: 7 }, sim.at().now);
    assert.equal(back.status, "SUCCEEDED");
    assert.equal(back.tasks.get("w")?.output, 7);
  });

  it("a pattern's regular expression matches every key the pattern matches", () => {
    const cases: [string, string[], string[]][] = [
      ["a.*.c", ["a.b.c", "a..c"], ["a.b.c.d", "a.c", "x.b.c"]],
      ["a.**", ["a.b", "a.b.c", "a."], ["a", "b.a"]],
      ["**", ["a", "a.b"], []],
      ["x+y.*", ["x+y.z"], ["xxy.z"]],
    ];
    for (const [pattern, yes, no] of cases) {
      const segments = pattern.split(".");
      const re = new RegExp(keyPatternRegex(segments));
      for (const key of yes) {
        assert.ok(keyMatches(segments, key), `${pattern} matches ${key}`);
        assert.ok(re.test(key), `${re} matches ${key}`);
      }
      for (const key of no)
        assert.equal(keyMatches(segments, key) || re.test(key), false, `${pattern} ${key}`);
    }
  });
});
