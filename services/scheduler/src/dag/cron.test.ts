import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isApiError } from "@nexusflow/common";
import { fireTimesBetween, isTimeZone, nextFireTimes, parseCron } from "./cron.js";

const iso = (ds: readonly Date[]): string[] => ds.map((d) => d.toISOString());

/** The field an INVALID_ARGUMENT names. */
function fieldOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (isApiError(e) && e.code === 3) return e.violations[0]?.field;
    throw e;
  }
  return undefined;
}

describe("cron expressions", () => {
  it("reads five fields, six with seconds first, and nicknames", () => {
    const from = new Date("2026-01-01T00:00:00Z");
    assert.deepEqual(iso(nextFireTimes(parseCron("*/15 * * * *", ""), from, 2)), [
      "2026-01-01T00:15:00.000Z",
      "2026-01-01T00:30:00.000Z",
    ]);
    assert.deepEqual(iso(nextFireTimes(parseCron("*/20 * * * * *", "UTC"), from, 2)), [
      "2026-01-01T00:00:20.000Z",
      "2026-01-01T00:00:40.000Z",
    ]);
    assert.deepEqual(iso(nextFireTimes(parseCron("@daily", "UTC"), from, 1)), ["2026-01-02T00:00:00.000Z"]);
  });

  it("reads the expression in its time zone", () => {
    const nightly = parseCron("0 2 * * *", "Europe/Lisbon");
    // Winter (WET, UTC+0) then summer (WEST, UTC+1).
    assert.deepEqual(iso(nextFireTimes(nightly, new Date("2026-01-10T00:00:00Z"), 1)), [
      "2026-01-10T02:00:00.000Z",
    ]);
    assert.deepEqual(iso(nextFireTimes(nightly, new Date("2026-07-10T00:00:00Z"), 1)), [
      "2026-07-10T01:00:00.000Z",
    ]);
  });

  it("neither skips nor repeats a daily fire across Lisbon's daylight-saving changes", () => {
    // 2026-03-29 01:00 local becomes 02:00 (01:30 does not exist); 2026-10-25 02:00 becomes 01:00
    // again (01:30 occurs twice). A 01:30 job fires once each day, the spring day at the change.
    const job = parseCron("30 1 * * *", "Europe/Lisbon");
    assert.deepEqual(iso(nextFireTimes(job, new Date("2026-03-27T12:00:00Z"), 3)), [
      "2026-03-28T01:30:00.000Z",
      "2026-03-29T01:00:00.000Z",
      "2026-03-30T00:30:00.000Z",
    ]);
    assert.deepEqual(iso(nextFireTimes(job, new Date("2026-10-23T12:00:00Z"), 3)), [
      "2026-10-24T00:30:00.000Z",
      "2026-10-25T00:30:00.000Z",
      "2026-10-26T01:30:00.000Z",
    ]);
  });

  it("keeps an interval's real-time pace across both changes", () => {
    const every30 = parseCron("0 */30 * * * *", "Europe/Lisbon");
    for (const [from, to] of [
      ["2026-03-28T23:00:00Z", "2026-03-29T04:00:00Z"],
      ["2026-10-24T23:00:00Z", "2026-10-25T04:00:00Z"],
    ] as const) {
      const times = fireTimesBetween(every30, new Date(from), new Date(to), 100);
      assert.equal(times.length, 10, `${from}: ${iso(times).join(" ")}`);
      for (let i = 1; i < times.length; i++)
        assert.equal((times[i] as Date).getTime() - (times[i - 1] as Date).getTime(), 30 * 60_000);
    }
  });

  it("fires an hourly job once per real hour through the repeated hour", () => {
    const hourly = parseCron("0 * * * *", "Europe/Lisbon");
    const times = fireTimesBetween(
      hourly,
      new Date("2026-10-24T22:30:00Z"),
      new Date("2026-10-25T03:30:00Z"),
      100,
    );
    assert.deepEqual(iso(times), [
      "2026-10-24T23:00:00.000Z",
      "2026-10-25T00:00:00.000Z",
      "2026-10-25T01:00:00.000Z",
      "2026-10-25T02:00:00.000Z",
      "2026-10-25T03:00:00.000Z",
    ]);
  });

  it("lists the fire times of a range, strictly after its start, up to a limit", () => {
    const secondly = parseCron("* * * * * *", "UTC");
    const from = new Date("2026-01-01T00:00:00Z");
    assert.equal(fireTimesBetween(secondly, from, new Date("2026-01-01T00:00:10Z"), 100).length, 10);
    assert.equal(fireTimesBetween(secondly, from, new Date("2026-01-01T00:00:10Z"), 4).length, 4);
    assert.equal(fireTimesBetween(secondly, from, from, 4).length, 0);
  });

  it("names the field at fault for a bad expression or zone", () => {
    assert.equal(
      fieldOf(() => parseCron("61 * * * *", "UTC", "spec.cron", "spec.time_zone")),
      "spec.cron",
    );
    assert.equal(
      fieldOf(() => parseCron("* * *", "UTC", "spec.cron")),
      "spec.cron",
    );
    assert.equal(
      fieldOf(() => parseCron("", "UTC", "spec.cron")),
      "spec.cron",
    );
    assert.equal(
      fieldOf(() => parseCron("0 0 30 2 *", "UTC", "spec.cron")),
      "spec.cron",
    );
    assert.equal(
      fieldOf(() => parseCron("* * * * *", "Mars/Base", "c", "spec.time_zone")),
      "spec.time_zone",
    );
    assert.equal(
      fieldOf(() => parseCron("* * * * *", "Europe/Lisbon")),
      undefined,
    );
    assert.equal(isTimeZone("Europe/Lisbon"), true);
    assert.equal(isTimeZone("europe/nowhere"), false);
  });
});

describe("fixed times written as lists or ranges across daylight-saving changes", () => {
  const local = (d: Date, zone: string): string =>
    new Intl.DateTimeFormat("sv-SE", { timeZone: zone, dateStyle: "short", timeStyle: "short" }).format(d);

  it("fires a time spring skips at the change, as a single fixed time does", () => {
    const job = parseCron("30 2,14 * * *", "America/New_York");
    const fires = fireTimesBetween(
      job,
      new Date("2026-03-08T00:00:00Z"),
      new Date("2026-03-09T04:00:00Z"),
      10,
    );
    assert.deepEqual(
      fires.map((d) => local(d, "America/New_York")),
      ["2026-03-08 03:00", "2026-03-08 14:30"],
    );
    const berlin = parseCron("15,45 2 * * *", "Europe/Berlin");
    const day = fireTimesBetween(
      berlin,
      new Date("2026-03-28T23:00:00Z"),
      new Date("2026-03-29T22:00:00Z"),
      10,
    );
    assert.ok(day.length > 0, "no fire at all on 2026-03-29");
  });

  it("fires a time fall-back repeats once", () => {
    const job = parseCron("0,30 1 * * *", "America/New_York");
    const fires = fireTimesBetween(
      job,
      new Date("2026-11-01T00:00:00Z"),
      new Date("2026-11-01T12:00:00Z"),
      10,
    );
    assert.deepEqual(iso(fires), ["2026-11-01T05:00:00.000Z", "2026-11-01T05:30:00.000Z"]);
    const twice = parseCron("0 1,13 * * *", "America/New_York");
    assert.equal(
      fireTimesBetween(twice, new Date("2026-11-01T04:00:00Z"), new Date("2026-11-02T04:00:00Z"), 10).length,
      2,
    );
    // On other days a list fires every time it names, in order.
    const range = parseCron("0 9-11 * * 1-5", "Europe/Lisbon");
    assert.deepEqual(iso(nextFireTimes(range, new Date("2026-12-07T00:00:00Z"), 4)), [
      "2026-12-07T09:00:00.000Z",
      "2026-12-07T10:00:00.000Z",
      "2026-12-07T11:00:00.000Z",
      "2026-12-08T09:00:00.000Z",
    ]);
  });
});
