import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadExecutorConfig } from "@nexusflow/common";
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
});
