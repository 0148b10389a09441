import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isExecutorError } from "./errors.js";
import { EXECUTOR_VERSION, compileExecutorOptions } from "./options.js";

describe("compileExecutorOptions", () => {
  it("applies the documented defaults", () => {
    const o = compileExecutorOptions({});
    assert.equal(o.schedulerAddress, "127.0.0.1:50051");
    assert.equal(o.slots, 16);
    assert.equal(o.taskTypes, undefined);
    assert.deepEqual(o.reconnect, { initialDelayMs: 100, maxDelayMs: 5_000 });
    assert.equal(o.drainTimeoutMs, 30_000);
    assert.equal(o.replicaRefreshMs, 3_000);
    assert.equal(o.version, EXECUTOR_VERSION);
    assert.match(o.executorId, /-\d+$/);
    assert.equal(o.channelOptions["grpc.max_reconnect_backoff_ms"], 5_000);
    assert.equal(o.channelOptions["grpc.max_receive_message_length"], -1);
    assert.equal(
      compileExecutorOptions({ maxPayloadBytes: 15 * 1024 * 1024 }).maxPayloadBytes,
      15 * 1024 * 1024,
    );
  });

  it("rejects out-of-range values, naming the option", () => {
    for (const [options, name] of [
      [{ slots: 0 }, "slots"],
      [{ slots: 1.5 }, "slots"],
      [{ drainTimeoutMs: -1 }, "drainTimeoutMs"],
      [{ replicaRefreshMs: -1 }, "replicaRefreshMs"],
      [{ reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }, "reconnect.maxDelayMs"],
      [{ taskTypes: [] }, "taskTypes"],
      [{ executorId: " " }, "executorId"],
      // Over the scheduler's 16 MiB receive limit, with room for the report around it.
      [{ maxPayloadBytes: 16 * 1024 * 1024 }, "maxPayloadBytes"],
    ] as const) {
      assert.throws(
        () => compileExecutorOptions(options),
        (e) => isExecutorError(e, "INVALID_OPTIONS") && e.message.startsWith(name),
        name,
      );
    }
  });
});
