/**
 * faultConfinement: a throw out of the rules applied to a run fails that run instead of escaping;
 * a run too broken to be failed the usual way is dropped (taken out of memory, ended in storage).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "@nexusflow/common";
import type { Core } from "../core/index.js";
import type { ErrorInfo, RunState } from "../model/run-state.js";
import { faultConfinement } from "./faults.js";

const log = createLogger("faults-test", "silent");

describe("faultConfinement", () => {
  const dropped: { runId: string; cause: string; error: ErrorInfo }[] = [];
  const confine = faultConfinement({
    log,
    core: () => ({ runs: new Map(), tasks: new Map() }) as unknown as Core,
    drop: (runId, cause, error) => dropped.push({ runId, cause: cause.message, error }),
  });

  it("returns what the rules return when they do not throw", () => {
    assert.equal(
      confine(undefined, () => 42),
      42,
    );
    assert.deepEqual(dropped, []);
  });

  it("logs a fault without a run (a rate limit's timer) and goes on", () => {
    assert.equal(
      confine(undefined, () => {
        throw new Error("bucket fault");
      }),
      undefined,
    );
    assert.deepEqual(dropped, []);
  });

  it("drops a run that cannot even be failed, with SCHEDULER_ERROR and the fault's message", () => {
    // A run whose tasks cannot be read: failing it (cancelling its tasks) throws too.
    const run = {
      id: "run-1",
      status: "RUNNING",
      get tasks(): never {
        throw new Error("tasks unreadable");
      },
    } as unknown as RunState;
    const out = confine(run, () => {
      throw new Error("x".repeat(5000));
    });
    assert.equal(out, undefined);
    assert.equal(dropped.length, 1);
    const [d] = dropped;
    assert.equal(d?.runId, "run-1");
    assert.equal(d?.cause, "tasks unreadable");
    assert.equal(d?.error.type, "SCHEDULER_ERROR");
    assert.equal(d?.error.retryable, false);
    assert.match(d?.error.message ?? "", /^the scheduler could not advance the run: x+/);
    assert.ok((d?.error.message.length ?? 0) < 1100, "the fault's message is cut");
  });
});
