/** How the UI reads and shows values (ui/src/format.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  TERMINAL_RUN_STATUSES,
  formatTimeIn,
  parseLabels,
  runStatusName,
  taskStatusName,
} from "../src/format";

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

  it("shows a time in a schedule's zone, and local time for a zone it does not know", () => {
    const ts = timestampFromDate(new Date("2026-07-01T02:30:00Z"));
    assert.match(formatTimeIn(ts, "Europe/Lisbon"), /03:30:00/);
    assert.match(formatTimeIn(ts, "Asia/Tokyo"), /11:30:00/);
    assert.match(formatTimeIn(ts, ""), /02:30:00/);
    assert.equal(
      formatTimeIn(ts, "Nowhere/Atall"),
      formatTimeIn(ts, Intl.DateTimeFormat().resolvedOptions().timeZone),
    );
    assert.equal(formatTimeIn(undefined, "UTC"), "—");
  });
});
