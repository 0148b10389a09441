import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type JsonValue, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { type LeaseKey, LeaseKeySchema, ReportSchema, SessionRequestSchema } from "@nexusflow/gen";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  MAX_ENCODED_PAYLOAD_BYTES,
  MAX_PAYLOAD_DEPTH,
  PayloadError,
  toJsonPayload,
  toValue,
} from "./payload.js";
import { outcomeReport } from "./task-reports.js";

/** `levels` arrays (or objects), one in the other, around 1 (or around nothing). */
function nested(levels: number, kind: "array" | "object" | "empty" = "array"): JsonValue {
  let value: JsonValue = kind === "empty" ? [] : 1;
  for (let i = kind === "empty" ? 1 : 0; i < levels; i++) value = kind === "object" ? { a: value } : [value];
  return value;
}

const key: LeaseKey = create(LeaseKeySchema, { taskRunId: "tr", attempt: 1, fencingToken: 1n });

/** Whether the scheduler decodes every report carrying `json`: alone, and as an item of Reports. */
function decodable(json: JsonValue): boolean {
  const reports = [
    outcomeReport(key, { status: "completed", output: json, logs: undefined }),
    outcomeReport(key, {
      status: "failed",
      failure: { type: "T", message: "m", retryable: false, details: json },
      logs: undefined,
    }),
  ];
  try {
    for (const report of reports) {
      fromBinary(
        SessionRequestSchema,
        toBinary(SessionRequestSchema, create(SessionRequestSchema, { message: report })),
      );
      fromBinary(ReportSchema, toBinary(ReportSchema, create(ReportSchema, { report })));
    }
    return true;
  } catch {
    return false;
  }
}

const tooDeep = (e: unknown): boolean =>
  e instanceof PayloadError &&
  e.problem === "TOO_DEEP" &&
  e.message.includes(`nested deeper than ${MAX_PAYLOAD_DEPTH} levels of arrays and objects`);

describe("toJsonPayload", () => {
  it("takes values as deep as every report carries and refuses deeper ones (TOO_DEEP), which the scheduler could not decode", () => {
    for (const kind of ["array", "object", "empty"] as const) {
      const deepest = nested(MAX_PAYLOAD_DEPTH, kind);
      assert.deepEqual(toJsonPayload(deepest, 10_000), deepest, kind);
      assert.ok(decodable(deepest), `${kind}: ${MAX_PAYLOAD_DEPTH} levels decode in every report`);
      const deeper = nested(MAX_PAYLOAD_DEPTH + 1, kind);
      assert.throws(() => toJsonPayload(deeper, 10_000), tooDeep, kind);
    }
    // One level more fails to decode in some report: the limit is the scheduler's.
    assert.equal(decodable(nested(MAX_PAYLOAD_DEPTH + 1)), false);
    // 200 bytes, 100 levels (an http response body): refused, not thrown later while reporting.
    assert.throws(() => toJsonPayload(JSON.parse("[".repeat(100) + "]".repeat(100)), 10_000), tooDeep);
  });

  it("refuses a value within the JSON limit that is larger than a report may carry as protobuf (TOO_LARGE)", () => {
    // 3 MiB of `[0,0,...]` (the default limit) is 17 MB as protobuf, past the scheduler's 16 MiB.
    const zeros = Array.from({ length: 1_500_000 }, () => 0);
    assert.throws(
      () => toJsonPayload(zeros, 3 * 1024 * 1024),
      (e: unknown) =>
        e instanceof PayloadError &&
        e.problem === "TOO_LARGE" &&
        /^3000001 bytes of JSON are \d+ bytes as protobuf, more than the 15728640/.test(e.message),
    );
    // As large in JSON, but text: about as large as protobuf, taken.
    const text = "x".repeat(3_000_000);
    assert.equal(toJsonPayload(text, 3 * 1024 * 1024), text);
    assert.ok(toBinary(ValueSchema, toValue(text)).byteLength <= MAX_ENCODED_PAYLOAD_BYTES);
  });
});
