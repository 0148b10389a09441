/**
 * The liveness tick and a Pong's list of held leases apply each run's rules through the engine's
 * confinement: the tick runs on a timer, where a throw would end the process, and one run's fault
 * must not keep the tick from the other runs and sessions.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "@nexusflow/common";
import type { SessionResponse } from "@nexusflow/gen";
import type { RunRules } from "../core/index.js";
import { started } from "../core/reports.js";
import { beginRun, Simulation, workflowOf } from "../core/simulation.js";
import type { RunState, TaskState } from "../model/run-state.js";
import type { SessionHandle } from "./dispatcher.js";
import { SessionLiveness } from "./session-liveness.js";

const flow = workflowOf({
  name: "beat",
  version: 1,
  steps: [{ id: "a", type: "t", retry: { maxAttempts: 3 }, timeouts: { heartbeat: "1s" } }],
});

/** Makes reading `task.lastHeartbeat` throw once. */
function faultOnHeartbeat(task: TaskState): void {
  let value = task.lastHeartbeat;
  let thrown = false;
  Object.defineProperty(task, "lastHeartbeat", {
    configurable: true,
    get: () => {
      if (!thrown) {
        thrown = true;
        throw new Error("injected heartbeat fault");
      }
      return value;
    },
    set: (v: number) => (value = v),
  });
}

describe("session liveness (faults confined per run)", () => {
  it("fails the run whose heartbeat check faults, and checks the others' and pings every session", () => {
    const sim = new Simulation();
    const s = sim.session("s");
    const runs = [beginRun(sim, flow), beginRun(sim, flow)];
    const tasks = runs.map(() => sim.lease(s) as TaskState);
    for (const t of tasks) assert.equal(started(sim.core, s, sim.key(t), sim.at()), null);
    faultOnHeartbeat(tasks[0] as TaskState);
    sim.clock += 5_000; // both overdue
    const sent: SessionResponse[] = [];
    const handle = Object.assign(s, {
      types: new Set(["t"]),
      credit: 0,
      draining: false,
      lastSeen: sim.clock,
      send: (m: SessionResponse) => void sent.push(m),
      close: () => undefined,
    }) as unknown as SessionHandle;
    const faults: { run: RunState | undefined; error: unknown }[] = [];
    const confine: RunRules = (run, fn) => {
      try {
        return fn();
      } catch (error) {
        faults.push({ run, error });
        return undefined;
      }
    };
    const liveness = new SessionLiveness({
      core: sim.core,
      log: createLogger("liveness-test", "silent"),
      sessionTimeoutMs: 60_000,
      sessions: () => [handle],
      moment: () => sim.at(),
      detach: () => undefined,
      judges: () => true,
      pump: () => undefined,
      confine,
    });
    assert.doesNotThrow(() => liveness.tick());
    assert.equal(faults.length, 1);
    assert.equal(faults[0]?.run, runs[0]);
    assert.match(String(faults[0]?.error), /injected heartbeat fault/);
    // The other run's overdue heartbeat was still judged, and the session still pinged.
    assert.equal(tasks[1]?.status, "RETRY_WAIT");
    assert.equal(sent.filter((m) => m.message.case === "ping").length, 1);
  });
});
