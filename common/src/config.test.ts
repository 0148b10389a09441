import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadExecutorConfig } from "./config.js";

describe("executor configuration", () => {
  it("takes the session token as a value or as a file read per session, not both", () => {
    assert.deepEqual(
      [loadExecutorConfig({ EXECUTOR_TOKEN: "abc" })].map((c) => [c.token, c.tokenFile]),
      [["abc", undefined]],
    );
    assert.deepEqual(
      [loadExecutorConfig({ EXECUTOR_TOKEN_FILE: "/var/run/secrets/token" })].map((c) => [
        c.token,
        c.tokenFile,
      ]),
      [[undefined, "/var/run/secrets/token"]],
    );
    assert.throws(
      () => loadExecutorConfig({ EXECUTOR_TOKEN: "abc", EXECUTOR_TOKEN_FILE: "/t" }),
      (e: unknown) =>
        e instanceof ConfigError && e.variable === "EXECUTOR_TOKEN_FILE" && /not both/.test(e.message),
    );
  });
});
