import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ConfigError, MAX_INLINE_OUTPUT_BYTES, loadExecutorConfig } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { Executor } from "./executor.js";
import { DEFAULT_MAX_PAYLOAD_BYTES } from "./options.js";
import { processExecutorOptions, shellBaseEnv } from "./process-options.js";

describe("processExecutorOptions", () => {
  it("takes identity and capacity from the configuration and keeps secrets out of shell tasks", () => {
    const env = {
      EXECUTOR_ID: "worker-7",
      EXECUTOR_SLOTS: "3",
      EXECUTOR_TASK_TYPES: "shell,noop",
      SCHEDULER_ADDRESS: "10.0.0.5:50051",
      S3_SECRET_KEY: "s3cret",
      EXECUTOR_TOKEN: "jwt",
      NEXUSFLOW_TOKEN: "operator-jwt",
      DATABASE_URL: "postgres://u:p@db/x",
      PATH: "/usr/bin",
    };
    const options = processExecutorOptions(loadExecutorConfig(env), env, {});
    assert.equal(options.executorId, "worker-7");
    assert.equal(options.slots, 3);
    assert.deepEqual(options.taskTypes, ["shell", "noop"]);
    assert.equal(options.schedulerAddress, "10.0.0.5:50051");
    const builtins = options.builtins;
    assert.ok(builtins !== undefined && builtins !== false);
    assert.deepEqual(builtins.shell?.baseEnv, {
      EXECUTOR_ID: "worker-7",
      EXECUTOR_SLOTS: "3",
      EXECUTOR_TASK_TYPES: "shell,noop",
      SCHEDULER_ADDRESS: "10.0.0.5:50051",
      PATH: "/usr/bin",
    });
  });

  it("drops unset variables from the shell's base environment", () => {
    assert.deepEqual(shellBaseEnv({ A: "1", B: undefined }), { A: "1" });
  });

  it("refuses ARTIFACT_OFFLOAD_THRESHOLD above the largest output sent inline in the configuration", () => {
    const env = { ARTIFACT_OFFLOAD_THRESHOLD: String(3 * 1024 * 1024 + 1) };
    assert.throws(
      () => loadExecutorConfig(env),
      (e) =>
        e instanceof ConfigError &&
        e.variable === "ARTIFACT_OFFLOAD_THRESHOLD" &&
        e.message.startsWith("ARTIFACT_OFFLOAD_THRESHOLD: must be between 1024 and 3145728 (") &&
        e.message.endsWith("got 3145729"),
    );
    assert.equal(
      MAX_INLINE_OUTPUT_BYTES,
      DEFAULT_MAX_PAYLOAD_BYTES,
      "the bound is the process's maxPayloadBytes",
    );
  });

  it("takes ARTIFACT_OFFLOAD_THRESHOLD up to the largest output sent inline", () => {
    const env = { ARTIFACT_OFFLOAD_THRESHOLD: String(3 * 1024 * 1024) };
    const artifacts = new FilesystemArtifactStore({
      root: join(tmpdir(), "nf-process-options-never-written"),
    });
    const options = processExecutorOptions(loadExecutorConfig(env), env, { artifacts });
    assert.deepEqual([options.offloadThresholdBytes, options.maxPayloadBytes], [3_145_728, 3_145_728]);
    assert.doesNotThrow(() => new Executor(options), "the executor takes them");
  });
});
