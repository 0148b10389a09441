/** How the UI reads and shows values (ui/src/format.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import { TERMINAL_RUN_STATUSES, parseLabels, runStatusName, taskStatusName } from "../src/format";

describe("format", () => {
  it("parses the labels filter, and names what is not key=value", () => {
    assert.deepEqual(parseLabels(""), { labels: {} });
    assert.deepEqual(parseLabels(" env=prod , team = ops ,"), { labels: { env: "prod", team: "ops" } });
    assert.deepEqual(parseLabels("url=a=b"), { labels: { url: "a=b" } });
    assert.deepEqual(parseLabels("empty="), { labels: { empty: "" } });
    assert.deepEqual(parseLabels("env=prod, oops"), { problem: 'Labels: "oops" is not key=value.' });
    assert.deepEqual(parseLabels("=x"), { problem: 'Labels: "=x" is not key=value.' });
  });

  it("names statuses, and knows which runs have ended", () => {
    assert.equal(runStatusName(RunStatus.COMPENSATION_FAILED), "COMPENSATION_FAILED");
    assert.equal(taskStatusName(TaskStatus.RETRY_WAIT), "RETRY_WAIT");
    assert.equal(TERMINAL_RUN_STATUSES.has(RunStatus.COMPENSATED), true);
    assert.equal(TERMINAL_RUN_STATUSES.has(RunStatus.COMPENSATING), false);
    assert.equal(TERMINAL_RUN_STATUSES.has(RunStatus.RUNNING), false);
  });
});
