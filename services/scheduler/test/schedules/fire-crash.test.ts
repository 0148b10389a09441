/**
 * Schedules across scheduler crashes, with real processes: three schedules fire every second while
 * the scheduler process is SIGKILLed and started again twice. With catch-up ALL every second from
 * the first fire to the last has exactly one run (no gap, no double); with OFF the fire times of
 * the downtimes are missing and counted as missed; LAST catches up one fire time per downtime.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue } from "@nexusflow/common";
import { CatchUpPolicy, OverlapPolicy, ScheduleService, type Schedule } from "@nexusflow/gen";
import pg from "pg";
import { killAll, startSchedulerProcess, type ServiceProcess } from "../e2e/processes.js";
import { startTestDatabase, waitFor, workflowClient } from "../support.js";

const IDS = ["all", "off", "last"] as const;

describe("schedules across scheduler crashes", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;

  before(async () => {
    db = await startTestDatabase();
  });

  after(async () => {
    await killAll();
    await db?.close();
  });

  it("fires once per tick through two SIGKILLs: no gap, no double (catch-up ALL); OFF and LAST as documented", async () => {
    let proc: ServiceProcess | undefined;
    let schedules: Client<typeof ScheduleService> | undefined;
    const start = async (name: string): Promise<string> => {
      const started = await startSchedulerProcess(name, db.url, 0);
      proc = started.process;
      schedules = createClient(
        ScheduleService,
        createGrpcTransport({ baseUrl: `http://${started.address}` }),
      );
      return started.address;
    };
    const api = (): Client<typeof ScheduleService> => {
      assert.ok(schedules);
      return schedules;
    };
    const get = async (id: string): Promise<Schedule> => {
      const { schedule } = await api().getSchedule({ scheduleId: id });
      assert.ok(schedule);
      return schedule;
    };
    /** Waits until every schedule started `n` more runs than it had. */
    const waitStarted = async (n: bigint): Promise<void> => {
      const base = new Map<string, bigint>();
      for (const id of IDS) base.set(id, (await get(id)).startedCount);
      await waitFor(
        `every schedule to start ${n} more runs`,
        async () => {
          for (const id of IDS) if ((await get(id)).startedCount < (base.get(id) ?? 0n) + n) return false;
          return true;
        },
        60_000,
      );
    };

    const runs = workflowClient(await start("sched-1"));
    await runs.registerWorkflow({
      definition: {
        case: "specJson",
        value: JSON.stringify({ name: "tick", version: 1, steps: [{ id: "wait", type: "crash.never" }] }),
      },
    });
    const hour = { seconds: 3600n };
    const base = {
      cron: "* * * * * *",
      workflowName: "tick",
      input: jsonToValue({}),
      overlapPolicy: OverlapPolicy.ALLOW_ALL,
      maxConcurrentRuns: 1000,
      catchUpWindow: hour,
    };
    await api().createSchedule({ scheduleId: "all", spec: { ...base, catchUpPolicy: CatchUpPolicy.ALL } });
    await api().createSchedule({ scheduleId: "off", spec: { ...base, catchUpPolicy: CatchUpPolicy.OFF } });
    await api().createSchedule({ scheduleId: "last", spec: { ...base, catchUpPolicy: CatchUpPolicy.LAST } });
    await waitStarted(3n);
    for (const name of ["sched-2", "sched-3"]) {
      await proc?.kill();
      // The downtime must span a fire time (OFF and LAST are checked on it): a restart can take
      // less than a second on a quiet machine, so wait for the next whole second to pass first.
      const firstMissed = Math.ceil((Date.now() + 1) / 1000) * 1000;
      await waitFor("a fire time to pass while no scheduler runs", () => Date.now() > firstMissed);
      await start(name);
      await waitStarted(3n);
    }
    for (const id of IDS) await api().pauseSchedule({ scheduleId: id, note: "checked" });

    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const result = new Map<string, { fires: number[]; schedule: Schedule; absent: number }>();
      for (const id of IDS) {
        const schedule = await get(id);
        // Every run of the schedule, by its fire label, straight from the runs table.
        const { rows } = await client.query<{ fire: string; n: string | number }>(
          `SELECT labels->>'schedule-fire' AS fire, count(*) AS n FROM workflow_runs
           WHERE labels->>'schedule' = $1 GROUP BY 1 ORDER BY 1`,
          [id],
        );
        const doubled = rows.filter((r) => Number(r.n) !== 1);
        assert.deepEqual(doubled, [], `${id}: a fire time with more than one run`);
        const fires = rows.map((r) => Date.parse(r.fire));
        assert.equal(BigInt(fires.length), schedule.startedCount, `${id}: runs and started count`);
        const first = fires[0] as number;
        const last = fires.at(-1) as number;
        const absent = (last - first) / 1000 + 1 - fires.length;
        result.set(id, { fires, schedule, absent });
        const pending = await client.query(
          `SELECT f.fire_key, f.status FROM schedule_fires f JOIN schedules s ON s.uid = f.schedule_uid
           WHERE s.schedule_id = $1 AND f.status <> 'STARTED'`,
          [id],
        );
        assert.deepEqual(pending.rows, [], `${id}: fires not STARTED`);
      }
      const all = result.get("all");
      const off = result.get("off");
      const lastOnly = result.get("last");
      assert.ok(all && off && lastOnly);
      assert.equal(all.absent, 0, "catch-up ALL: a second without a run");
      assert.equal(all.schedule.missedCount, 0n);
      // The downtimes (a process start each) spanned fire times; OFF started none of them.
      assert.ok(off.absent >= 2, `OFF: ${off.absent} fire times missing`);
      assert.equal(BigInt(off.absent), off.schedule.missedCount);
      // LAST started the latest fire time of each of the two downtimes.
      assert.equal(BigInt(lastOnly.absent), lastOnly.schedule.missedCount);
      assert.equal(off.schedule.missedCount - lastOnly.schedule.missedCount, 2n);
      const errors = proc?.problems().filter((l) => typeof l["level"] === "number" && l["level"] >= 50);
      assert.deepEqual(errors, [], "errors logged by the last scheduler");
    } finally {
      await client.end();
    }
  });
});
