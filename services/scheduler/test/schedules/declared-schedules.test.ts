/**
 * Schedules declared in workflow definitions against a real scheduler and PostgreSQL: registering
 * a version creates its schedules (`<workflow>/<id>`, firing runs of that version), a later one
 * updates, adds and deletes them while schedules made by CreateSchedule stay as they are, a version
 * below the latest (or the same one again) changes nothing, racing registrations leave the highest
 * version's, bad declarations are refused naming `$.schedules[i]...` with nothing stored, and the
 * WorkflowSpec message carries triggers and schedules both ways. No executor serves the steps.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, type Client } from "@connectrpc/connect";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import {
  OverlapPolicy,
  type ScheduleService,
  WorkflowSpecSchema,
  type Schedule,
  type WorkflowService,
} from "@nexusflow/gen";
import type { Scheduler } from "../../src/index.js";
import {
  refusal,
  scheduleClient,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  workflowClient,
} from "../support.js";

describe("schedules declared in workflow definitions", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let schedules: Client<typeof ScheduleService>;
  let runs: Client<typeof WorkflowService>;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    schedules = scheduleClient(scheduler.address);
    runs = workflowClient(scheduler.address);
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  const register = (spec: Record<string, unknown>) =>
    runs.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });
  const etl = (version: number, declared: unknown[]) => ({
    name: "etl",
    version,
    input: { type: "object", properties: { day: { type: "string" } } },
    steps: [{ id: "load", type: "declared.never" }],
    schedules: declared,
  });
  const list = async (workflowName: string): Promise<Schedule[]> =>
    (await schedules.listSchedules({ workflowName })).schedules;
  const get = async (id: string): Promise<Schedule> => {
    const { schedule } = await schedules.getSchedule({ scheduleId: id });
    assert.ok(schedule);
    return schedule;
  };
  const runsOf = async (id: string) =>
    (await runs.listRuns({ labels: { schedule: id }, pageSize: 1000 })).runs;
  const inputOf = async (runId: string | undefined): Promise<unknown> =>
    valueToJson((await runs.getRun({ runId: runId ?? "" })).run?.input);

  it("creates, updates and deletes a workflow's schedules with its versions, leaving API-made ones", async () => {
    await register(
      etl(1, [
        {
          id: "every-second",
          cron: "* * * * * *",
          input: { day: "v1" },
          overlapPolicy: "allow-all",
          maxConcurrentRuns: 1000,
        },
        { id: "nightly", cron: "0 2 * * *", timeZone: "Europe/Lisbon", catchUpPolicy: "last", input: {} },
      ]),
    );
    // Made through the API on the same workflow: no version of it touches this one.
    const manual = await schedules.createSchedule({
      scheduleId: "etl-manual",
      spec: { cron: "0 5 * * *", workflowName: "etl", input: jsonToValue({ day: "manual" }) },
      paused: true,
      note: "by hand",
    });
    const v1 = await list("etl");
    assert.deepEqual(
      v1.map((s) => [
        s.scheduleId,
        s.declaredBy?.workflowName,
        s.declaredBy?.workflowVersion,
        s.declaredBy?.id,
      ]),
      [
        ["etl-manual", undefined, undefined, undefined],
        ["etl/every-second", "etl", 1, "every-second"],
        ["etl/nightly", "etl", 1, "nightly"],
      ],
    );
    const nightly = await get("etl/nightly");
    assert.equal(nightly.spec?.timeZone, "Europe/Lisbon");
    assert.equal(nightly.spec?.workflowVersion, 1);
    assert.equal(nightly.nextFireTimes.length, 10);

    // It fires: runs of version 1 with the declared input and the schedule's label.
    await waitFor("two runs of etl/every-second", async () =>
      (await get("etl/every-second")).startedCount >= 2n ? true : undefined,
    );
    const first = (await runsOf("etl/every-second")).at(-1);
    assert.equal(first?.workflowVersion, 1);
    assert.deepEqual(await inputOf(first?.id), { day: "v1" });
    const before = await get("etl/every-second");

    // Version 2: every-second with another input, nightly gone, weekly new.
    await register(
      etl(2, [
        {
          id: "every-second",
          cron: "* * * * * *",
          input: { day: "v2" },
          overlapPolicy: "allow-all",
          maxConcurrentRuns: 1000,
        },
        { id: "weekly", cron: "0 6 * * MON", timeZone: "America/New_York", input: {} },
      ]),
    );
    assert.deepEqual(
      (await list("etl")).map((s) => [s.scheduleId, s.declaredBy?.workflowVersion]),
      [
        ["etl-manual", undefined],
        ["etl/every-second", 2],
        ["etl/weekly", 2],
      ],
    );
    assert.equal((await refusal(schedules.getSchedule({ scheduleId: "etl/nightly" }))).code, Code.NotFound);
    const updated = await get("etl/every-second");
    assert.equal(updated.spec?.workflowVersion, 2);
    assert.deepEqual(valueToJson(updated.spec?.input), { day: "v2" });
    assert.ok(updated.startedCount >= before.startedCount, "the same schedule, its counters kept");
    assert.deepEqual(updated.createTime, before.createTime);
    const untouched = await get("etl-manual");
    assert.ok(manual.schedule);
    assert.deepEqual(pick(untouched), pick(manual.schedule));

    // Its next fires start runs of version 2 with the new input.
    const v2run = await waitFor("a run of version 2", async () =>
      (await runsOf("etl/every-second")).find((r) => r.workflowVersion === 2),
    );
    assert.deepEqual(await inputOf(v2run.id), { day: "v2" });

    // The same version again, and a version below the latest, change nothing.
    const again = await register(
      etl(2, [
        {
          id: "every-second",
          cron: "* * * * * *",
          input: { day: "v2" },
          overlapPolicy: "allow-all",
          maxConcurrentRuns: 1000,
        },
        { id: "weekly", cron: "0 6 * * MON", timeZone: "America/New_York", input: {} },
      ]),
    );
    assert.equal(again.created, false);
    await register({ ...etl(5, []), schedules: undefined });
    assert.deepEqual(
      (await list("etl")).map((s) => s.scheduleId),
      ["etl-manual"],
      "a latest version declaring none deletes them all, but not the API's",
    );
    assert.equal((await register(etl(4, [{ id: "older", cron: "@daily", input: {} }]))).created, true);
    assert.deepEqual(
      (await list("etl")).map((s) => s.scheduleId),
      ["etl-manual"],
    );
    assert.deepEqual(pick(await get("etl-manual")), pick(untouched));
  });

  it("lets the API pause, resume and trigger a declared schedule, not delete it", async () => {
    await register({
      name: "ops",
      version: 1,
      steps: [{ id: "run", type: "declared.never" }],
      schedules: [{ id: "daily", cron: "@daily" }],
    });
    const r = await refusal(schedules.deleteSchedule({ scheduleId: "ops/daily" }));
    assert.equal(Code[r.code], Code[Code.FailedPrecondition]);
    assert.match(r.message, /declared by workflow ops v1: register a version of the workflow without it/);
    const paused = await schedules.pauseSchedule({ scheduleId: "ops/daily", note: "holiday" });
    assert.equal(paused.schedule?.paused, true);
    // A new version keeps an operator's pause, even with a new expression.
    await register({
      name: "ops",
      version: 2,
      steps: [{ id: "run", type: "declared.never" }],
      schedules: [{ id: "daily", cron: "0 4 * * *" }],
    });
    const kept = await get("ops/daily");
    assert.equal(kept.paused, true);
    assert.equal(kept.note, "holiday");
    assert.equal(kept.spec?.cron, "0 4 * * *");
    assert.deepEqual(kept.nextFireTimes, []);
    const resumed = await schedules.resumeSchedule({ scheduleId: "ops/daily", note: "back" });
    assert.equal(resumed.schedule?.nextFireTimes.length, 10);
    assert.equal(new Date(Number(resumed.schedule?.nextFireTimes[0]?.seconds) * 1000).getUTCHours(), 4);
    const fired = await schedules.triggerSchedule({ scheduleId: "ops/daily", idempotencyKey: "k" });
    const { run } = await runs.getRun({ runId: fired.fire?.runId ?? "" });
    assert.equal(run?.workflowVersion, 2);
    assert.equal(run?.labels["schedule"], "ops/daily");
    // CreateSchedule cannot take a declared schedule's id, nor any id with a '/'.
    const made = await refusal(
      schedules.createSchedule({
        scheduleId: "ops/other",
        spec: { cron: "@daily", workflowName: "ops" },
      }),
    );
    assert.equal(Code[made.code], Code[Code.InvalidArgument]);
    assert.match(made.message, /^schedule_id: .*schedules declared in workflow definitions/);
    for (const id of ["ops/", "/daily", "Ops/daily", "ops/da ily", "ops/daily/x"]) {
      const bad = await refusal(schedules.getSchedule({ scheduleId: id }));
      assert.equal(Code[bad.code], Code[Code.InvalidArgument], id);
    }
  });

  it("refuses bad declarations naming the field, storing nothing", async () => {
    const base = { name: "refused", version: 1, steps: [{ id: "s", type: "declared.never" }] };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ schedules: [{ id: "a", cron: "61 * * * *" }] }, /\$\.schedules\[0\]\.cron: /],
      [
        { schedules: [{ id: "a", cron: "@daily", timeZone: "Mars/Olympus" }] },
        /\$\.schedules\[0\]\.timeZone: /,
      ],
      [
        { schedules: [{ id: "a", cron: "@daily", overlapPolicy: "never" }] },
        /\$\.schedules\[0\]\.overlapPolicy: /,
      ],
      [
        {
          input: { type: "object", required: ["day"] },
          schedules: [{ id: "a", cron: "@daily", input: {} }],
        },
        /\$\.schedules\[0\]\.input\.day: is required/,
      ],
      [
        // Every fire would fail: the workflow's concurrency key reads a field the input lacks.
        {
          concurrency: [{ key: "input.customer", limit: 1 }],
          schedules: [{ id: "a", cron: "@daily", input: { other: 1 } }],
        },
        /\$\.schedules\[0\]\.input: concurrency key "input\.customer"/,
      ],
    ];
    for (const [extra, message] of cases) {
      const r = await refusal(register({ ...base, ...extra }));
      assert.equal(Code[r.code], Code[Code.InvalidArgument], r.message);
      assert.match(r.message, message);
    }
    assert.equal((await refusal(runs.getWorkflow({ name: "refused", version: 1 }))).code, Code.NotFound);
    assert.deepEqual(await list("refused"), []);
  });

  it("reconciles racing registrations to the highest version", async () => {
    const versions = [3, 7, 1, 6, 2, 5, 4];
    await Promise.all(
      versions.map((v) =>
        register({
          name: "race",
          version: v,
          steps: [{ id: "s", type: "declared.never" }],
          schedules: [
            { id: `v${v}`, cron: "@hourly" },
            { id: "shared", cron: `${v} * * * *` },
          ],
        }),
      ),
    );
    const left = await list("race");
    assert.deepEqual(
      left.map((s) => [s.scheduleId, s.spec?.cron, s.declaredBy?.workflowVersion]),
      [
        ["race/shared", "7 * * * *", 7],
        ["race/v7", "@hourly", 7],
      ],
    );
  });

  it("takes triggers and schedules in the WorkflowSpec message and gives them back", async () => {
    const spec = create(WorkflowSpecSchema, {
      name: "typed",
      version: 1,
      steps: [{ id: "s", type: "declared.never" }],
      triggers: [{ event: "orders.*", filter: "event.payload.total > 10" }, { event: "orders.vip" }],
      schedules: [
        {
          id: "nightly",
          cron: "30 2 * * *",
          timeZone: "Europe/Lisbon",
          input: jsonToValue({ full: true }),
          labels: { team: "data" },
          overlapPolicy: "buffer-one",
          maxConcurrentRuns: 2,
          catchUpPolicy: "off",
          catchUpWindow: "1h",
        },
      ],
    });
    await runs.registerWorkflow({ definition: { case: "spec", value: spec } });
    const { workflow } = await runs.getWorkflow({ name: "typed", version: 1 });
    assert.deepEqual(
      workflow?.spec?.triggers.map((t) => [t.event, t.filter]),
      [
        ["orders.*", "event.payload.total > 10"],
        ["orders.vip", ""],
      ],
    );
    const [declared] = workflow?.spec?.schedules ?? [];
    assert.equal(declared?.id, "nightly");
    assert.equal(declared?.timeZone, "Europe/Lisbon");
    assert.equal(declared?.overlapPolicy, "buffer-one");
    assert.equal(declared?.catchUpWindow, "1h");
    assert.deepEqual(valueToJson(declared?.input), { full: true });
    const made = await get("typed/nightly");
    assert.equal(made.spec?.overlapPolicy, OverlapPolicy.BUFFER_ONE);
    assert.equal(made.spec?.maxConcurrentRuns, 2);
    assert.equal(made.spec?.catchUpWindow?.seconds, 3600n);
    assert.deepEqual(made.spec?.labels, { team: "data" });
    // A bad one in the message is refused with the definition's path.
    const bad = create(WorkflowSpecSchema, {
      name: "typed",
      version: 2,
      steps: [{ id: "s", type: "declared.never" }],
      triggers: [{ event: "orders..x" }],
      schedules: [{ id: "x", cron: "* *" }],
    });
    const r = await refusal(runs.registerWorkflow({ definition: { case: "spec", value: bad } }));
    assert.equal(Code[r.code], Code[Code.InvalidArgument]);
    assert.match(r.message, /\$\.triggers\[0\]\.event: /);
    assert.match(r.message, /\$\.schedules\[0\]\.cron: /);
  });
});

/** What registering a workflow must leave alone on a schedule the API made. */
function pick(s: Schedule) {
  return { spec: s.spec, paused: s.paused, note: s.note, createTime: s.createTime, updateTime: s.updateTime };
}
