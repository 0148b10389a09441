import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkSchedules } from "./schedules.js";
import { compileWorkflow } from "./validate.js";

const flow = { name: "nightly-etl", version: 3 };

function errorsOf(value: unknown): { path: string; message: string }[] {
  return checkSchedules(value, "$.schedules", flow, null).errors;
}

function workflow(extra: Record<string, unknown>) {
  return {
    name: "nightly-etl",
    version: 3,
    input: { type: "object", required: ["day"], properties: { day: { type: "string" } } },
    steps: [{ id: "load", type: "etl.load" }],
    ...extra,
  };
}

describe("declared schedules", () => {
  it("normalizes a declaration into a schedule spec of the declaring workflow and version", () => {
    const { schedules, errors } = checkSchedules(
      [
        {
          id: "nightly",
          cron: "0 2 * * *",
          timeZone: "Europe/Lisbon",
          input: { day: "today" },
          labels: { team: "data" },
          overlapPolicy: "buffer-one",
          catchUpPolicy: "last",
          catchUpWindow: "6h",
        },
        { id: "every-minute", cron: "* * * * *", overlapPolicy: "allow-all", maxConcurrentRuns: 3 },
      ],
      "$.schedules",
      flow,
      null,
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(
      schedules.map((s) => [s.id, s.index, s.spec]),
      [
        [
          "nightly",
          0,
          {
            cron: "0 2 * * *",
            timeZone: "Europe/Lisbon",
            workflowName: "nightly-etl",
            workflowVersion: 3,
            input: { day: "today" },
            labels: { team: "data" },
            overlapPolicy: "BUFFER_ONE",
            maxConcurrentRuns: 10,
            catchUpPolicy: "LAST",
            catchUpWindowMs: 6 * 3600_000,
          },
        ],
        [
          "every-minute",
          1,
          {
            cron: "* * * * *",
            timeZone: "UTC",
            workflowName: "nightly-etl",
            workflowVersion: 3,
            input: null,
            labels: {},
            overlapPolicy: "ALLOW_ALL",
            maxConcurrentRuns: 3,
            catchUpPolicy: "ALL",
            catchUpWindowMs: 60_000,
          },
        ],
      ],
    );
  });

  it("names the field at fault of each bad declaration", () => {
    const cases: [unknown, string, RegExp][] = [
      [{}, "$.schedules", /must be an array/],
      [
        Array.from({ length: 21 }, (_, i) => ({ id: `s${i}`, cron: "* * * * *" })),
        "$.schedules",
        /at most 20/,
      ],
      [["x"], "$.schedules[0]", /must be an object/],
      [[{ cron: "* * * * *" }], "$.schedules[0].id", /id is required/],
      [[{ id: "a/b", cron: "* * * * *" }], "$.schedules[0].id", /is invalid/],
      [[{ id: 7, cron: "* * * * *" }], "$.schedules[0].id", /must be a string/],
      [[{ id: "a" }], "$.schedules[0].cron", /cron \(the expression\) is required/],
      [[{ id: "a", cron: "61 * * * *" }], "$.schedules[0].cron", /./],
      [[{ id: "a", cron: "* * *" }], "$.schedules[0].cron", /expected 5 fields/],
      [[{ id: "a", cron: "" }], "$.schedules[0].cron", /a cron expression is required/],
      [[{ id: "a", cron: "* * * * *", timeZone: "Mars/Olympus" }], "$.schedules[0].timeZone", /IANA/],
      [
        [{ id: "a", cron: "* * * * *", overlapPolicy: "SKIP" }],
        "$.schedules[0].overlapPolicy",
        /one of skip/,
      ],
      [
        [{ id: "a", cron: "* * * * *", catchUpPolicy: "some" }],
        "$.schedules[0].catchUpPolicy",
        /off, last, all/,
      ],
      [
        [{ id: "a", cron: "* * * * *", maxConcurrentRuns: 0 }],
        "$.schedules[0].maxConcurrentRuns",
        /1 to 1000/,
      ],
      [
        [{ id: "a", cron: "* * * * *", maxConcurrentRuns: 1.5 }],
        "$.schedules[0].maxConcurrentRuns",
        /1 to 1000/,
      ],
      [[{ id: "a", cron: "* * * * *", catchUpWindow: "soon" }], "$.schedules[0].catchUpWindow", /duration/],
      [[{ id: "a", cron: "* * * * *", catchUpWindow: "500ms" }], "$.schedules[0].catchUpWindow", /1 second/],
      [[{ id: "a", cron: "* * * * *", catchUpWindow: "400d" }], "$.schedules[0].catchUpWindow", /./],
      [
        [{ id: "a", cron: "* * * * *", labels: { schedule: "x" } }],
        "$.schedules[0].labels.schedule",
        /set by the scheduler/,
      ],
      [
        [{ id: "a", cron: "* * * * *", labels: { "bad key": "x" } }],
        '$.schedules[0].labels["bad key"]',
        /keys are/,
      ],
      [
        [{ id: "a", cron: "* * * * *", labels: { team: 1 } }],
        "$.schedules[0].labels.team",
        /must be a string/,
      ],
      [[{ id: "a", cron: "* * * * *", labels: [] }], "$.schedules[0].labels", /object of strings/],
      [[{ id: "a", cron: "* * * * *", every: "day" }], "$.schedules[0].every", /unknown field/],
      [
        [
          { id: "a", cron: "* * * * *" },
          { id: "a", cron: "0 * * * *" },
        ],
        "$.schedules[1].id",
        /duplicate schedule id "a" \(first used at \$\.schedules\[0\]\)/,
      ],
    ];
    for (const [value, path, message] of cases) {
      const errors = errorsOf(value);
      assert.ok(errors.length > 0, `${JSON.stringify(value).slice(0, 80)}: no error`);
      assert.equal(errors[0]?.path, path, JSON.stringify(value).slice(0, 80));
      assert.match(errors[0]?.message ?? "", message, JSON.stringify(value).slice(0, 80));
    }
  });

  it("checks each schedule's input against the workflow's input schema when registered", () => {
    const bad = compileWorkflow(
      workflow({
        schedules: [
          { id: "ok", cron: "0 2 * * *", input: { day: "mon" } },
          { id: "no-input", cron: "0 3 * * *" },
          { id: "wrong", cron: "0 4 * * *", input: { day: 4 } },
        ],
      }),
    );
    assert.equal(bad.ok, false);
    assert.deepEqual(!bad.ok && bad.errors.map((e) => e.path), [
      "$.schedules[1].input",
      "$.schedules[2].input.day",
    ]);
    const good = compileWorkflow(
      workflow({ schedules: [{ id: "ok", cron: "0 2 * * *", input: { day: "mon" } }] }),
    );
    assert.ok(good.ok);
    assert.deepEqual(good.workflow.spec.schedules, [{ id: "ok", cron: "0 2 * * *", input: { day: "mon" } }]);
  });

  it("reports schedule problems with the rest of the definition's", () => {
    const r = compileWorkflow(
      workflow({ timeout: "soon", schedules: [{ id: "a", cron: "0 2 * * *", timeZone: "Nowhere" }] }),
    );
    assert.equal(r.ok, false);
    const paths = !r.ok ? r.errors.map((e) => e.path) : [];
    assert.ok(paths.includes("$.timeout"));
    assert.ok(paths.includes("$.schedules[0].timeZone"));
    assert.ok(paths.includes("$.schedules[0].input"));
  });
});
