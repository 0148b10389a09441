import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bearerToken } from "./bearer.js";
import { isExecutorError } from "./errors.js";

describe("bearerToken", () => {
  it("makes metadata carrying a fixed token, a fresh copy for every session", async () => {
    const provider = bearerToken(" abc ");
    const first = await provider();
    const second = await provider();
    assert.deepEqual(first.get("authorization"), ["Bearer abc"]);
    assert.notEqual(first, second, "each session gets its own metadata");
  });

  it("asks a token function again for every session, so a rotated token is used", async () => {
    const tokens = ["one", "two"];
    const provider = bearerToken(() => Promise.resolve(tokens.shift() ?? ""));
    assert.deepEqual((await provider()).get("authorization"), ["Bearer one"]);
    assert.deepEqual((await provider()).get("authorization"), ["Bearer two"]);
    await assert.rejects(
      async () => provider(),
      (e: unknown) => isExecutorError(e, "INVALID_OPTIONS"),
    );
  });

  it("refuses an empty token at once", () => {
    assert.throws(
      () => bearerToken(""),
      (e: unknown) => isExecutorError(e, "INVALID_OPTIONS"),
    );
    assert.throws(
      () => bearerToken(undefined as unknown as string),
      (e: unknown) => isExecutorError(e, "INVALID_OPTIONS"),
    );
  });
});
