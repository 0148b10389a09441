/**
 * createGateway's option checks: maxRequestBytes is at most 16 MiB, the scheduler's own receive
 * limit (a larger request reached the scheduler only to reset the gateway's one upstream HTTP/2
 * session, failing every client's calls on it).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createRouterTransport } from "@connectrpc/connect";
import { MAX_GATEWAY_REQUEST_BYTES } from "@nexusflow/common";
import { createGateway } from "./server.js";

/** A gateway over an in-process transport (no upstream session), with `maxRequestBytes`. */
const gateway = (maxRequestBytes: number | undefined) =>
  createGateway({
    schedulerAddress: "127.0.0.1:1",
    transport: createRouterTransport(() => {}),
    port: 0,
    uiDir: "/nonexistent",
    ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
  });

describe("createGateway maxRequestBytes", () => {
  it("takes the default and anything up to 16 MiB", async () => {
    for (const value of [undefined, 1, 64 * 1024, MAX_GATEWAY_REQUEST_BYTES]) await gateway(value).close();
  });

  it("refuses more than 16 MiB, and what is not a positive whole number, with a RangeError naming it", () => {
    for (const value of [
      MAX_GATEWAY_REQUEST_BYTES + 1,
      20_000_000,
      64 * 1024 * 1024,
      0,
      -1,
      1.5,
      NaN,
      Infinity,
    ]) {
      assert.throws(
        () => gateway(value),
        (e: unknown) =>
          e instanceof RangeError &&
          e.message ===
            `createGateway: maxRequestBytes must be a whole number from 1 to 16777216 (16 MiB, the ` +
              `largest message the scheduler accepts), got ${value}`,
        String(value),
      );
    }
  });
});
