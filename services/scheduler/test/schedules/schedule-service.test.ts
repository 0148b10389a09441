/**
 * ScheduleService against a real scheduler and PostgreSQL: bad requests refused naming the field,
 * schedules firing every second (two with one expression stay two), each overlap policy with runs
 * that stay active (no executor serves their steps), trigger, backfill, pause, resume and delete.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type Client } from "@connectrpc/connect";
import {
  OverlapPolicy,
  RunStatus,
  type ScheduleService,
  type Schedule,
  type ScheduleSpec,
  type WorkflowService,
} from "@nexusflow/gen";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ScheduleSpecSchema } from "@nexusflow/gen";
import { jsonToValue } from "@nexusflow/common";
import type { Scheduler } from "../../src/index.js";
import {
  refusal,
  scheduleClient,
  startTestDatabase,
  startTestScheduler,
  waitFor,
  workflowClient,
} from "../support.js";

type SpecInit = MessageInitShape<typeof ScheduleSpecSchema>;

describe("ScheduleService", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let schedules: Client<typeof ScheduleService>;
  let runs: Client<typeof WorkflowService>;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    schedules = scheduleClient(scheduler.address);
    runs = workflowClient(scheduler.address);
    // One step of a type no executor serves: its runs stay active until cancelled.
    await runs.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "tick",
          version: 1,
          input: { type: "object", properties: { n: { type: "number" } } },
          steps: [{ id: "wait", type: "sched.never" }],
        }),
      },
    });
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  const spec = (over: Omit<SpecInit, "$typeName"> = {}): SpecInit => ({
    cron: "* * * * * *",
    workflowName: "tick",
    input: jsonToValue({}),
    ...over,
  });
  const get = async (id: string): Promise<Schedule> => {
    const { schedule } = await schedules.getSchedule({ scheduleId: id });
    assert.ok(schedule);
    return schedule;
  };
  const waitSchedule = (id: string, what: string, ok: (s: Schedule) => boolean): Promise<Schedule> =>
    waitFor(`${id}: ${what}`, async () => {
      const s = await get(id);
      return ok(s) ? s : undefined;
    });
  const runsOf = async (id: string) =>
    (await runs.listRuns({ labels: { schedule: id }, pageSize: 1000 })).runs;

  it("refuses bad input, naming the field", async () => {
    const cases: [SpecInit | undefined, string, Code, RegExp][] = [
      [spec({ cron: "61 * * * *" }), "ok", Code.InvalidArgument, /^spec\.cron: /],
      [spec({ cron: "* * *" }), "ok", Code.InvalidArgument, /^spec\.cron: expected 5 fields/],
      [spec({ cron: "0 0 30 2 *" }), "ok", Code.InvalidArgument, /^spec\.cron: the expression never fires/],
      [spec({ timeZone: "Europe/Nowhere" }), "ok", Code.InvalidArgument, /^spec\.time_zone: /],
      [spec({ maxConcurrentRuns: -1 }), "ok", Code.InvalidArgument, /^spec\.max_concurrent_runs: /],
      [spec({ maxConcurrentRuns: 5000 }), "ok", Code.InvalidArgument, /^spec\.max_concurrent_runs: /],
      [spec({ catchUpWindow: { seconds: -5n } }), "ok", Code.InvalidArgument, /^spec\.catch_up_window: /],
      [spec({ catchUpWindow: { nanos: 5 } }), "ok", Code.InvalidArgument, /^spec\.catch_up_window: /],
      [spec({ overlapPolicy: 42 as OverlapPolicy }), "ok", Code.InvalidArgument, /^spec\.overlap_policy: /],
      [spec({ workflowVersion: -1 }), "ok", Code.InvalidArgument, /^spec\.workflow_version: /],
      [spec({ labels: { schedule: "x" } }), "ok", Code.InvalidArgument, /^spec\.labels\[schedule\]: /],
      [spec({ workflowName: "no-such-flow" }), "ok", Code.NotFound, /^spec\.workflow_name: .*no-such-flow/],
      [spec({ workflowVersion: 7 }), "ok", Code.NotFound, /^spec\.workflow_name: .*version 7/],
      [
        spec({ input: { kind: { case: "numberValue", value: Number.NaN } } }),
        "ok",
        Code.InvalidArgument,
        /^spec\.input/,
      ],
      [
        spec({ input: { kind: { case: "stringValue", value: "not an object" } } }),
        "ok",
        Code.InvalidArgument,
        /^spec\.input/,
      ],
      [undefined, "ok", Code.InvalidArgument, /^spec: /],
      [spec(), "", Code.InvalidArgument, /^schedule_id: /],
      [spec(), "-bad-", Code.InvalidArgument, /^schedule_id: /],
    ];
    // A workflow whose concurrency key is read from the input: an input without it would fail
    // every fire, so the schedule is refused at once.
    await runs.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({
          name: "keyed",
          version: 1,
          concurrency: [{ key: "input.customer", limit: 1 }],
          steps: [{ id: "wait", type: "sched.never" }],
        }),
      },
    });
    cases.push([
      spec({ workflowName: "keyed" }),
      "ok",
      Code.InvalidArgument,
      /^spec\.input: concurrency key "input\.customer" .*has no field "customer"/,
    ]);
    for (const [s, id, code, message] of cases) {
      const r = await refusal(
        schedules.createSchedule({ scheduleId: id, ...(s === undefined ? {} : { spec: s }) }),
      );
      assert.equal(
        Code[r.code],
        Code[code],
        `${JSON.stringify(s, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))}: ${r.message}`,
      );
      assert.match(r.message, message);
    }
    assert.equal((await refusal(schedules.getSchedule({ scheduleId: "missing" }))).code, Code.NotFound);
    assert.equal((await refusal(schedules.deleteSchedule({ scheduleId: "missing" }))).code, Code.NotFound);
    assert.equal((await refusal(schedules.triggerSchedule({ scheduleId: "missing" }))).code, Code.NotFound);
    assert.match((await refusal(schedules.listSchedules({ pageSize: -1 }))).message, /^page_size: /);
    // A forged page token (base64url JSON like ours) naming what no schedule id can be.
    for (const after of ["\u0000", "x".repeat(100_000), 5]) {
      const pageToken = Buffer.from(JSON.stringify({ after })).toString("base64url");
      const r = await refusal(schedules.listSchedules({ pageToken }));
      assert.equal(Code[r.code], Code[Code.InvalidArgument], r.message);
      assert.match(r.message, /^page_token: /);
    }
    // Nothing was created by any of the refused calls.
    assert.deepEqual((await schedules.listSchedules({})).schedules, []);
  });

  it("fires every second, and two schedules with one expression fire each", async () => {
    const many: SpecInit = spec({ overlapPolicy: OverlapPolicy.ALLOW_ALL, maxConcurrentRuns: 1000 });
    const created = await schedules.createSchedule({ scheduleId: "twin-a", spec: many });
    assert.equal(created.created, true);
    const next = created.schedule?.nextFireTimes.map((t) => timestampMs(t)) ?? [];
    assert.equal(next.length, 10);
    for (let i = 1; i < next.length; i++) assert.equal((next[i] as number) - (next[i - 1] as number), 1000);
    await schedules.createSchedule({ scheduleId: "twin-b", spec: many });
    for (const id of ["twin-a", "twin-b"]) {
      await waitSchedule(id, "3 runs started", (s) => s.startedCount >= 3n);
    }
    await schedules.pauseSchedule({ scheduleId: "twin-a", note: "enough" });
    await schedules.pauseSchedule({ scheduleId: "twin-b", note: "enough" });
    for (const id of ["twin-a", "twin-b"]) {
      const s = await get(id);
      const list = await runsOf(id);
      assert.equal(BigInt(list.length), s.startedCount);
      const fires = list.map((r) => Date.parse(r.labels["schedule-fire"] ?? "")).sort((a, b) => a - b);
      assert.equal(new Set(fires).size, fires.length, "one run per fire time");
      for (let i = 1; i < fires.length; i++)
        assert.equal((fires[i] as number) - (fires[i - 1] as number), 1000);
      assert.equal(s.skippedCount, 0n);
      assert.deepEqual(s.nextFireTimes, [], "a paused schedule has no next fire times");
      assert.equal(s.note, "enough");
    }
  });

  /** Creates a per-second schedule with `policy`; returns its id. */
  const policySchedule = async (id: string, over: SpecInit): Promise<string> => {
    await schedules.createSchedule({ scheduleId: id, spec: spec(over) });
    return id;
  };
  const stop = (id: string) => schedules.pauseSchedule({ scheduleId: id });

  it("SKIP starts nothing while its run is active", async () => {
    const id = await policySchedule("skip", {});
    const s = await waitSchedule(id, "two fires skipped", (x) => x.skippedCount >= 2n);
    await stop(id);
    assert.equal(s.startedCount, 1n);
    assert.equal((await runsOf(id)).length, 1);
  });

  it("ALLOW_ALL starts up to its bound", async () => {
    const id = await policySchedule("allow", {
      overlapPolicy: OverlapPolicy.ALLOW_ALL,
      maxConcurrentRuns: 2,
    });
    const s = await waitSchedule(id, "a fire skipped", (x) => x.skippedCount >= 1n);
    await stop(id);
    assert.equal(s.startedCount, 2n);
  });

  it("BUFFER_ONE keeps one fire waiting and starts it once the active run ended", async () => {
    const id = await policySchedule("buffer", { overlapPolicy: OverlapPolicy.BUFFER_ONE });
    const waiting = await waitSchedule(
      id,
      "a buffered fire",
      (x) => x.bufferedFireTime !== undefined && x.skippedCount >= 1n,
    );
    assert.equal(waiting.startedCount, 1n);
    const [first] = await runsOf(id);
    assert.ok(first);
    await runs.cancelRun({ runId: first.id });
    const s = await waitSchedule(id, "the buffered fire started", (x) => x.startedCount >= 2n);
    await stop(id);
    // The second run is a fire time that waited, not the fire time after the cancel.
    const second = s.recentFires[0];
    assert.ok(second?.fireTime && waiting.bufferedFireTime);
    assert.ok(timestampMs(second.fireTime) <= timestampMs(s.lastFireTime ?? second.fireTime));
    assert.ok(timestampMs(second.fireTime) >= timestampMs(waiting.bufferedFireTime));
  });

  for (const policy of [OverlapPolicy.TERMINATE_OTHER, OverlapPolicy.CANCEL_OTHER]) {
    it(`${OverlapPolicy[policy]} ends the active run for the next fire`, async () => {
      const id = await policySchedule(OverlapPolicy[policy].toLowerCase().replace("_", "-"), {
        overlapPolicy: policy,
      });
      await waitSchedule(id, "two runs", (x) => x.startedCount >= 2n);
      await stop(id);
      const list = await runsOf(id);
      const oldest = list.at(-1);
      assert.ok(oldest);
      await waitFor("the first run ended", async () => {
        const { run } = await runs.getRun({ runId: oldest.id });
        return run?.status === RunStatus.CANCELLED || run?.status === RunStatus.COMPENSATED ? run : undefined;
      });
    });
  }

  it("triggers now (once per key), backfills a past range once, pauses, resumes and deletes", async () => {
    const daily = spec({ cron: "0 3 * * *", timeZone: "Europe/Lisbon" });
    const made = await schedules.createSchedule({
      scheduleId: "nightly",
      spec: daily,
      paused: true,
      note: "not yet",
    });
    assert.deepEqual(made.schedule?.nextFireTimes, []);
    assert.equal((await schedules.createSchedule({ scheduleId: "nightly", spec: daily })).created, false);
    const other = await refusal(schedules.createSchedule({ scheduleId: "nightly", spec: spec() }));
    assert.equal(other.code, Code.AlreadyExists);

    // A trigger starts a run even while paused; the same key names the same run.
    const t1 = await schedules.triggerSchedule({ scheduleId: "nightly", idempotencyKey: "deploy-42" });
    const t2 = await schedules.triggerSchedule({ scheduleId: "nightly", idempotencyKey: "deploy-42" });
    const t3 = await schedules.triggerSchedule({ scheduleId: "nightly" });
    assert.equal(t1.created, true);
    assert.equal(t2.created, false);
    assert.equal(t2.fire?.runId, t1.fire?.runId);
    assert.notEqual(t3.fire?.runId, t1.fire?.runId);

    const end = Date.now();
    const start = end - 3 * 24 * 3600 * 1000;
    const range = { scheduleId: "nightly", startTime: timestampFromMs(start), endTime: timestampFromMs(end) };
    const b1 = await schedules.backfillSchedule(range);
    assert.equal(b1.fires.length, 3);
    assert.equal(b1.startedCount, 3);
    for (const f of b1.fires) {
      // 03:00 in Lisbon (WET in winter, WEST in summer).
      const local = new Intl.DateTimeFormat("en-GB", {
        timeZone: "Europe/Lisbon",
        hour: "2-digit",
        minute: "2-digit",
      });
      assert.equal(local.format(timestampDate(f.fireTime ?? timestampFromMs(0))), "03:00");
    }
    const b2 = await schedules.backfillSchedule(range);
    assert.equal(b2.startedCount, 0);
    assert.deepEqual(
      b2.fires.map((f) => f.runId),
      b1.fires.map((f) => f.runId),
    );
    assert.match(
      (await refusal(schedules.backfillSchedule({ ...range, endTime: timestampFromMs(end + 3_600_000) })))
        .message,
      /^end_time: must not be in the future/,
    );
    assert.match(
      (await refusal(schedules.backfillSchedule({ scheduleId: "nightly" }))).message,
      /^start_time: /,
    );
    assert.equal((await runsOf("nightly")).length, 5);

    const resumed = await schedules.resumeSchedule({ scheduleId: "nightly", note: "go" });
    const times = resumed.schedule?.nextFireTimes.map((t) => timestampMs(t)) ?? [];
    assert.equal(times.length, 10);
    assert.ok((times[0] as number) > Date.now());
    assert.equal(resumed.schedule?.note, "go");
    assert.equal(resumed.schedule?.paused, false);
    const listed = await schedules.listSchedules({ workflowName: "tick", pageSize: 2 });
    assert.equal(listed.schedules.length, 2);
    assert.notEqual(listed.nextPageToken, "");
    // A token continues its own listing: for every workflow's schedules it is refused.
    const unfiltered = await refusal(schedules.listSchedules({ pageToken: listed.nextPageToken }));
    assert.equal(unfiltered.code, Code.InvalidArgument, unfiltered.message);
    assert.match(
      unfiltered.message,
      /^page_token: was returned for other filters: list with the same workflow_name/,
    );
    assert.ok(
      (await schedules.listSchedules({ workflowName: "tick", pageToken: listed.nextPageToken })).schedules,
    );

    await schedules.deleteSchedule({ scheduleId: "nightly" });
    assert.equal((await refusal(schedules.getSchedule({ scheduleId: "nightly" }))).code, Code.NotFound);
    // Its runs remain.
    assert.equal((await runsOf("nightly")).length, 5);
  });

  it("shows a fire whose run was refused, with why, and does not retry it", async () => {
    const define = (version: number, input?: unknown) =>
      runs.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "evolving",
            version,
            ...(input === undefined ? {} : { input }),
            steps: [{ id: "wait", type: "sched.never" }],
          }),
        },
      });
    await define(1);
    await schedules.createSchedule({
      scheduleId: "evolving",
      spec: spec({ workflowName: "evolving", overlapPolicy: OverlapPolicy.ALLOW_ALL }),
    });
    await waitSchedule("evolving", "a run", (x) => x.startedCount >= 1n);
    // The latest version now needs an input field the schedule does not send.
    await define(2, { type: "object", required: ["region"], properties: { region: { type: "string" } } });
    const s = await waitSchedule(
      "evolving",
      "a refused fire",
      (x) => x.recentFires[0]?.error !== "" && x.recentFires[0]?.error !== undefined,
    );
    await stop("evolving");
    const refused = s.recentFires[0];
    assert.equal(refused?.runId, "");
    assert.match(refused?.error ?? "", /input does not match the input schema of evolving v2/);
    const started = await runsOf("evolving");
    assert.equal(BigInt(started.length), (await get("evolving")).startedCount, "refused fires start no run");
    // A trigger or a backfill is refused the same way: the request is fine, the stored spec is
    // what no longer fits, so FAILED_PRECONDITION naming spec.input (not the engine's own field).
    const trigger = await refusal(schedules.triggerSchedule({ scheduleId: "evolving" }));
    assert.equal(Code[trigger.code], Code[Code.FailedPrecondition], trigger.message);
    assert.match(
      trigger.message,
      /^schedule "evolving" cannot start its run: spec\.input\.region: .*is required/,
    );
    const created = timestampMs(s.createTime ?? assert.fail("no create time"));
    const backfill = await refusal(
      schedules.backfillSchedule({
        scheduleId: "evolving",
        startTime: timestampFromMs(created - 5000),
        endTime: timestampFromMs(created - 2000),
      }),
    );
    assert.equal(Code[backfill.code], Code[Code.FailedPrecondition], backfill.message);
    assert.match(
      backfill.message,
      /cannot start the runs of 3 fires \(the first: spec\.input\.region: .*is required\)/,
    );
    assert.equal((await runsOf("evolving")).length, started.length);
  });

  it("applies the spec's defaults and shows them", async () => {
    const { schedule } = await schedules.createSchedule({
      scheduleId: "pinned",
      spec: spec({ workflowVersion: 1, cron: "0 0 1 1 *", timeZone: "" }),
    });
    const s: ScheduleSpec | undefined = schedule?.spec;
    assert.equal(s?.timeZone, "UTC");
    assert.equal(s?.overlapPolicy, OverlapPolicy.SKIP);
    assert.equal(s?.maxConcurrentRuns, 10);
    assert.equal(s?.catchUpWindow?.seconds, 60n);
    await schedules.deleteSchedule({ scheduleId: "pinned" });
  });
});
