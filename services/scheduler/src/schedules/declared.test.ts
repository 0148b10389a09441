import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkSchedules } from "../dag/index.js";
import { planDeclared, type DeclaredRow } from "./declared.js";

function declared(version: number, value: unknown[]) {
  const { schedules, errors } = checkSchedules(value, "$.schedules", { name: "etl", version }, null);
  assert.deepEqual(errors, []);
  return schedules;
}

describe("planDeclared", () => {
  const now = new Date("2026-03-29T00:30:00Z");
  const v1 = declared(1, [
    { id: "nightly", cron: "0 2 * * *", timeZone: "Europe/Lisbon" },
    { id: "hourly", cron: "0 * * * *" },
    { id: "gone", cron: "*/5 * * * *" },
  ]);
  const stored = (paused = false): DeclaredRow[] =>
    v1.map((d) => ({
      scheduleId: `etl/${d.id}`,
      spec: d.spec,
      paused,
      cursorAt: new Date("2026-03-29T01:00:00Z"),
    }));

  it("creates every declaration of a first version, from now", () => {
    const changes = planDeclared("etl", [], v1, now);
    assert.deepEqual(
      changes.map((c) => [c.kind, c.scheduleId, c.kind === "create" ? c.nextFireAt?.toISOString() : null]),
      [
        // 02:00 in Lisbon on the night summer time begins is 01:00 UTC.
        ["create", "etl/nightly", "2026-03-29T01:00:00.000Z"],
        ["create", "etl/hourly", "2026-03-29T01:00:00.000Z"],
        ["create", "etl/gone", "2026-03-29T00:35:00.000Z"],
      ],
    );
  });

  it("updates kept ones (the version always, the cursor only with the expression) and deletes the rest", () => {
    const v2 = declared(2, [
      { id: "nightly", cron: "0 2 * * *", timeZone: "Europe/Lisbon" },
      { id: "hourly", cron: "30 * * * *" },
      { id: "new", cron: "@daily" },
    ]);
    const changes = planDeclared("etl", stored(), v2, now);
    assert.deepEqual(
      changes.map((c) =>
        c.kind === "update"
          ? [
              c.kind,
              c.scheduleId,
              c.spec.workflowVersion,
              c.changed,
              c.reset?.nextFireAt?.toISOString() ?? null,
            ]
          : [c.kind, c.scheduleId],
      ),
      [
        ["update", "etl/nightly", 2, false, null],
        // The stored cursor (01:00) is after now: the new expression fires after it.
        ["update", "etl/hourly", 2, true, "2026-03-29T01:30:00.000Z"],
        ["create", "etl/new"],
        ["delete", "etl/gone"],
      ],
    );
  });

  it("keeps a paused schedule without a next fire time when its expression changes", () => {
    const v2 = declared(2, [{ id: "hourly", cron: "15 * * * *" }]);
    const [update] = planDeclared("etl", stored(true), v2, now).filter((c) => c.kind === "update");
    assert.equal(update?.kind === "update" && update.reset?.nextFireAt, null);
  });

  it("sees a changed input, label or policy as a change, the version alone as none", () => {
    const cases: [Record<string, unknown>, boolean][] = [
      [{}, false],
      [{ input: { full: true } }, true],
      [{ labels: { team: "data" } }, true],
      [{ overlapPolicy: "allow-all" }, true],
      [{ catchUpWindow: "1h" }, true],
    ];
    for (const [over, changed] of cases) {
      const [update] = planDeclared(
        "etl",
        stored(),
        declared(7, [{ id: "hourly", cron: "0 * * * *", ...over }]),
        now,
      ).filter((c) => c.kind === "update");
      assert.equal(update?.kind === "update" && update.changed, changed, JSON.stringify(over));
    }
  });
});
