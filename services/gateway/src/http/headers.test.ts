import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { endToEndHeaders } from "./headers.js";

describe("endToEndHeaders", () => {
  it("drops hop-by-hop, framing, Connection-listed and internal headers and keeps the rest", () => {
    const out = endToEndHeaders(
      new Headers({
        authorization: "Bearer x",
        "x-request-id": "1",
        connection: "keep-alive, x-hop",
        "x-hop": "drop me",
        te: "trailers",
        "content-type": "application/json",
        "connect-protocol-version": "1",
        "grpc-timeout": "5S",
        traceparent: "00-abc-def-01",
        // A client posing as a scheduler replica that forwarded the call: never passed on.
        "nexusflow-forwarded-by": "x",
        "Nexusflow-Anything": "y",
      }),
    );
    assert.deepEqual([...out.keys()].sort(), ["authorization", "traceparent", "x-request-id"]);
  });
});
