/**
 * What the client refuses before sending anything: a run input, a signal payload or a rerun step
 * input with no JSON form, or nested deeper than a protobuf Value can be, is a
 * NexusflowClientError INVALID_INPUT, whichever call it is given to.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { JsonValue } from "@bufbuild/protobuf";
import { NexusflowClient } from "./client.js";
import { isNexusflowClientError } from "./errors.js";

/** A JSON array nested `depth` levels deep. */
function nested(depth: number): JsonValue {
  let value: JsonValue = [];
  for (let i = 1; i < depth; i++) value = [value];
  return value;
}

describe("inputs that cannot be sent", () => {
  let sent = 0;
  const client = (): NexusflowClient =>
    new NexusflowClient({
      baseUrl: "127.0.0.1:1",
      retry: false,
      interceptors: [
        (next) => (req) => {
          sent++;
          return next(req);
        },
      ],
    });
  const bad: [string, JsonValue][] = [
    ["nested 200 deep", nested(200)],
    ["a function inside", { f: (() => 1) as unknown as JsonValue }],
    ["a bigint", 10n as unknown as JsonValue],
  ];

  for (const [what, value] of bad) {
    it(`are INVALID_INPUT for every call, and nothing is sent (${what})`, async () => {
      const nexusflow = client();
      sent = 0;
      try {
        const calls: [string, () => Promise<unknown>][] = [
          ["the run's input", () => nexusflow.startRun({ workflowName: "w", input: value })],
          ["runs[0]: the run's input", () => nexusflow.startRuns([{ workflowName: "w", input: value }])],
          ["the signal's payload", () => nexusflow.signalRun("r", "s", { payload: value })],
          ["the rerun step's input", () => nexusflow.rerunRun("r", "step", { stepInput: value })],
        ];
        for (const [label, call] of calls) {
          await assert.rejects(call(), (e: unknown) => {
            assert.ok(isNexusflowClientError(e, "INVALID_INPUT"), `${label}: ${String(e)}`);
            assert.ok(e.message.startsWith(`${label} cannot be sent as JSON: `), e.message);
            assert.doesNotMatch(e.message, /: Error: /);
            return true;
          });
        }
        assert.equal(sent, 0, "nothing reached the transport");
      } finally {
        nexusflow.close();
      }
    });
  }
});
