/** A map element whose input renders past what a lease carries, through the pure core (simulation.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { mapElements } from "./maps.js";
import { completed } from "./reports.js";
import { beginRun, settleRuns, Simulation, workflowOf } from "./simulation.js";

void describe("map element inputs (core)", () => {
  it("fails an element whose rendered input passes 15 MiB INPUT_TOO_LARGE, not TEMPLATE_ERROR", () => {
    // About 1 MB as protobuf, templated in 20 times by each element: past the bound while rendering.
    const rows = Array.from({ length: 50_000 }, (_, i) => `row-${i}`.padEnd(17, "."));
    const wf = workflowOf({
      name: "fan",
      version: 1,
      steps: [
        { id: "split", type: "split" },
        {
          id: "each",
          type: "x",
          dependsOn: ["split"],
          map: { items: "steps.split.output" },
          input: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, "{{ item }}"])),
          retry: { maxAttempts: 1 },
        },
      ],
    });
    const sim = new Simulation();
    const s = sim.session("s");
    const run = beginRun(sim, wf);
    const t = sim.lease(s);
    assert.equal(t?.stepId, "split");
    assert.equal(completed(sim.core, s, sim.key(t), [rows, "small"], null, null, sim.at()), null);
    settleRuns(sim);
    settleRuns(sim);
    const [big, small] = mapElements(run, false).sort(
      (a, b) => (a.elementIndex ?? 0) - (b.elementIndex ?? 0),
    );
    assert.equal(big?.status, "FAILED");
    assert.equal(big?.error?.type, TaskErrorType.INPUT_TOO_LARGE);
    assert.match(big?.error?.message ?? "", /^element \[0\]: .*larger than/);
    // Its sibling rendered: its failure is its own.
    assert.notEqual(small?.error?.type, TaskErrorType.INPUT_TOO_LARGE);
  });
});
