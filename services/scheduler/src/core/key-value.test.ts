/** A key that cannot be evaluated fails the key, whatever went wrong: never an exception out of a turn. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseExpression } from "../dag/expr.js";
import { keyString } from "./key-value.js";

describe("keyString", () => {
  it("fails the key on V8's RangeError (a string or stack too large), as on an evaluation error", () => {
    const scope = {
      input: {},
      run: undefined,
      step: undefined,
      stepView: () => {
        throw new RangeError("Invalid string length");
      },
    };
    const fail = (message: string, options?: ErrorOptions) =>
      Object.assign(new Error(message, options), { key: true });
    assert.throws(
      () =>
        keyString(
          parseExpression("steps.a.output.k"),
          scope,
          'concurrency key "steps.a.output.k"',
          "a concurrency key",
          fail,
        ),
      (e: unknown) =>
        e instanceof Error &&
        (e as { key?: boolean }).key === true &&
        /Invalid string length/.test(e.message),
    );
    // Anything else is a bug and still thrown as it is.
    const broken = {
      ...scope,
      stepView: () => {
        throw new TypeError("bug");
      },
    };
    assert.throws(
      () => keyString(parseExpression("steps.a.output.k"), broken, "k", "a key", fail),
      (e: unknown) => e instanceof TypeError,
    );
  });
});
