/** How the UI reads and shows values (ui/src/format.ts). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStatus, TaskStatus } from "@nexusflow/gen";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  TERMINAL_RUN_STATUSES,
  cutString,
  formatTimeIn,
  parseLabels,
  previewJson,
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

  it("writes JSON as JSON.stringify does, from plain values and from protobuf Values", () => {
    const json = {
      a: [1, -2.5, true, null, 'x"y\\\n<b>'],
      b: {},
      c: [],
      "d e": { f: [{ g: "😀" }] },
    };
    for (const indent of ["  ", ""]) {
      const want = JSON.stringify(json, null, indent);
      assert.deepEqual(previewJson(json, 1000, indent), { text: want, truncated: false });
      assert.deepEqual(previewJson(fromJson(ValueSchema, json), 1000, indent), {
        text: want,
        truncated: false,
      });
    }
    // Values inside plain objects (a task error's details); undefined members left out.
    const mixed = { type: "E", details: fromJson(ValueSchema, { n: [1] }), missing: undefined };
    assert.equal(previewJson(mixed).text, JSON.stringify({ type: "E", details: { n: [1] } }, null, 2));
    assert.equal(previewJson([undefined]).text, "[\n  null\n]");
  });

  it("cuts a large value at its budget, never inside a surrogate pair", () => {
    const huge = fromJson(ValueSchema, {
      blob: "x".repeat(10 * 1024 * 1024),
      list: Array.from({ length: 1_000_000 }, (_, i) => i),
    });
    const preview = previewJson(huge, 1000);
    assert.equal(preview.truncated, true);
    assert.ok(preview.text.length <= 1000, `${preview.text.length} characters`);
    assert.ok(preview.text.startsWith('{\n  "blob": "xxxx'));
    const list = previewJson(
      fromJson(
        ValueSchema,
        Array.from({ length: 200_000 }, (_, i) => i),
      ),
      50,
    );
    assert.equal(list.truncated, true);
    assert.ok(list.text.length <= 50);
    // "😀" is two UTF-16 units: a cut between them would leave a lone surrogate.
    assert.equal(cutString("a😀", 2), "a");
    assert.equal(cutString("a😀", 3), "a😀");
    const emoji = previewJson("😀".repeat(100), 10);
    assert.equal(emoji.truncated, true);
    assert.ok(!/[\ud800-\udbff]$/.test(emoji.text), JSON.stringify(emoji.text));
    assert.equal(emoji.text, `"${"😀".repeat(4)}`);
  });
});
