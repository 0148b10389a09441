import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { isExecutorError } from "./errors.js";
import { EXECUTOR_VERSION, compileExecutorOptions } from "./options.js";

/** A store that is never written to here: options only hold it. */
const artifacts = new FilesystemArtifactStore({ root: join(tmpdir(), "nf-options-never-written") });

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

  it("refuses an offload threshold above maxPayloadBytes, which could never apply, naming both", () => {
    assert.throws(
      () => compileExecutorOptions({ artifacts, maxPayloadBytes: 100_000, offloadThresholdBytes: 100_001 }),
      (e) =>
        isExecutorError(e, "INVALID_OPTIONS") &&
        e.message.startsWith("offloadThresholdBytes (100001) must not exceed maxPayloadBytes (100000)"),
    );
    const at = compileExecutorOptions({
      artifacts,
      maxPayloadBytes: 100_000,
      offloadThresholdBytes: 100_000,
    });
    assert.equal(at.offloadThresholdBytes, 100_000);
    // The default threshold (256 KiB) follows a lower maxPayloadBytes; without a store it is unused.
    assert.equal(
      compileExecutorOptions({ artifacts, maxPayloadBytes: 100_000 }).offloadThresholdBytes,
      100_000,
    );
    assert.equal(compileExecutorOptions({ artifacts }).offloadThresholdBytes, 256 * 1024);
    assert.equal(
      compileExecutorOptions({ maxPayloadBytes: 100_000, offloadThresholdBytes: 200_000 })
        .offloadThresholdBytes,
      200_000,
    );
  });
});
