/**
 * `nexusflow schedules ...` spawned as processes, and ScheduleService over REST, against a real
 * gateway (authentication on) and scheduler on a real embedded PostgreSQL: create, get, list,
 * trigger, backfill, pause, resume and delete; bad input refused naming the flag or the field.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { waitFor } from "../../scheduler/test/support.js";
import { nexusflow } from "./cli-process.js";
import { type CliStack, startCliStack } from "./cli-stack.js";

const T = { timeout: 120_000 };

/** The parts of ScheduleService's JSON these tests read. */
interface ScheduleJson {
  scheduleId: string;
  paused?: boolean;
  note?: string;
  nextFireTimes?: string[];
  recentFires?: unknown[];
  spec: { overlapPolicy?: string; catchUpWindow?: string };
}
interface ResponseJson {
  created?: boolean;
  schedule?: ScheduleJson;
  schedules?: ScheduleJson[];
  fire?: { runId: string };
  message?: string;
}

describe("nexusflow schedules and /v1/schedules against a live stack", () => {
  let stack: CliStack | undefined;
  let env: Record<string, string>;
  let url: string;
  let token: string;

  before(async () => {
    stack = await startCliStack("nf-cli-sched-");
    ({ url, token, env } = stack);
    const applied = await nexusflow(["apply", "examples/hello-world.json"], env);
    assert.equal(applied.code, 0, applied.stderr);
  });

  after(async () => {
    await stack?.close();
  });

  const rest = async (
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: ResponseJson }> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    return { status: res.status, json: (await res.json()) as ResponseJson };
  };

  it("creates, shows, triggers, backfills, pauses, resumes, lists and deletes", T, async () => {
    const created = await nexusflow(
      [
        "schedules",
        "create",
        "nightly",
        "--workflow",
        "hello-world",
        "--cron",
        "0 30 2 * * *",
        "--zone",
        "Europe/Lisbon",
        "--input",
        '{"name":"night"}',
        "--overlap",
        "buffer-one",
        "--catch-up",
        "last",
        "--catch-up-window",
        "1h",
        "--output",
        "json",
      ],
      env,
    );
    assert.equal(created.code, 0, created.stderr);
    const json = JSON.parse(created.stdout) as ResponseJson;
    assert.equal(json.created, true);
    assert.equal(json.schedule?.nextFireTimes?.length, 10);
    assert.equal(json.schedule.spec.overlapPolicy, "OVERLAP_POLICY_BUFFER_ONE");
    assert.equal(json.schedule.spec.catchUpWindow, "3600s");

    const shown = await nexusflow(["schedules", "get", "nightly"], env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /nightly +hello-world +0 30 2 \* \* \* +Europe\/Lisbon +active/);
    assert.match(shown.stdout, /overlap: buffer-one; catch-up: last within 3600s/);
    assert.match(shown.stdout, /^next: /m);

    const trigger = await nexusflow(["schedules", "trigger", "nightly", "--idempotency-key", "k1"], env);
    assert.equal(trigger.code, 0, trigger.stderr);
    assert.match(trigger.stdout, /^started run [0-9a-f-]{36}\n$/);
    const again = await nexusflow(["schedules", "trigger", "nightly", "--idempotency-key", "k1"], env);
    assert.equal(again.stdout.replace("existing", "started"), trigger.stdout);

    const to = new Date();
    const from = new Date(to.getTime() - 2 * 86_400_000);
    const backfill = await nexusflow(
      ["schedules", "backfill", "nightly", "--from", from.toISOString(), "--to", to.toISOString()],
      env,
    );
    assert.equal(backfill.code, 0, backfill.stderr);
    assert.match(backfill.stdout, /2 run\(s\) started, 0 existed/);

    const paused = await nexusflow(["schedules", "pause", "nightly", "--note", "maintenance"], env);
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, /paused/);
    assert.match(paused.stdout, /note: maintenance/);
    const resumed = await nexusflow(["schedules", "resume", "nightly", "--output", "json"], env);
    assert.equal((JSON.parse(resumed.stdout) as { paused?: boolean }).paused, undefined);

    const listed = await nexusflow(["schedules", "list"], env);
    assert.match(listed.stdout, /^SCHEDULE +WORKFLOW/);
    assert.match(listed.stdout, /\nnightly +hello-world/);
    const got = await waitFor("the recent fires", async () => {
      const r = await rest("GET", "/v1/schedules/nightly");
      return r.json.schedule?.recentFires?.length === 3 ? r : undefined;
    });
    assert.equal(got.status, 200);

    const deleted = await nexusflow(["schedules", "delete", "nightly"], env);
    assert.equal(deleted.code, 0, deleted.stderr);
    const missing = await nexusflow(["schedules", "get", "nightly"], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND/);
  });

  it("refuses bad input naming the flag (exit 2) or the field (exit 1)", T, async () => {
    const base = ["schedules", "create", "bad", "--workflow", "hello-world"];
    const cases: [string[], number, RegExp][] = [
      [[...base, "--cron", "61 * * * *"], 1, /INVALID_ARGUMENT.*spec\.cron/],
      [[...base, "--cron", "* * * * *", "--zone", "Mars/Olympus"], 1, /INVALID_ARGUMENT.*spec\.time_zone/],
      [[...base, "--cron", "* * * * *", "--max-concurrent", "NaN"], 2, /--max-concurrent must be an integer/],
      [[...base, "--cron", "* * * * *", "--max-concurrent=-3"], 2, /--max-concurrent must be an integer/],
      [
        [...base, "--cron", "* * * * *", "--overlap", "sometimes"],
        2,
        /--overlap must be one of skip, buffer-one/,
      ],
      [
        [...base, "--cron", "* * * * *", "--catch-up-window", "soon"],
        2,
        /--catch-up-window: invalid duration/,
      ],
      [
        ["schedules", "create", "bad", "--workflow", "nope", "--cron", "* * * * *"],
        1,
        /NOT_FOUND.*spec\.workflow_name/,
      ],
      [
        ["schedules", "backfill", "x", "--from", "yesterday", "--to", "2026-01-01T00:00:00Z"],
        2,
        /--from must be an ISO 8601 time/,
      ],
      // Date.parse would read these as March 2 and the next day's midnight.
      [
        ["schedules", "backfill", "x", "--from", "2026-02-30T00:00:00Z", "--to", "2026-03-03T00:00:00Z"],
        2,
        /--from: "2026-02-30T00:00:00Z" is not a date and time of the calendar/,
      ],
      [
        ["schedules", "backfill", "x", "--from", "2026-02-01T00:00:00Z", "--to", "2026-02-28T24:00:00Z"],
        2,
        /--to: "2026-02-28T24:00:00Z" is not a date and time of the calendar/,
      ],
      [["schedules", "frobnicate"], 2, /unknown subcommand "frobnicate"/],
    ];
    for (const [args, code, message] of cases) {
      const r = await nexusflow(args, env);
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(" "));
    }
  });

  it("serves /v1/schedules over REST, with INVALID_ARGUMENT for a NaN or negative bound", T, async () => {
    const spec = { cron: "*/2 * * * * *", workflowName: "hello-world", input: { name: "rest" } };
    const made = await rest("POST", "/v1/schedules", { scheduleId: "every-two", spec, paused: true });
    assert.equal(made.status, 200, JSON.stringify(made.json));
    assert.equal(made.json.schedule?.paused, true);
    const nan = await rest(
      "POST",
      "/v1/schedules",
      '{"scheduleId":"n","spec":{"cron":"* * * * *","workflowName":"hello-world","maxConcurrentRuns":"NaN"}}',
    );
    assert.equal(nan.status, 400, JSON.stringify(nan.json));
    const negative = await rest("POST", "/v1/schedules", {
      scheduleId: "n",
      spec: { ...spec, maxConcurrentRuns: -1 },
    });
    assert.equal(negative.status, 400);
    assert.match(negative.json.message ?? "", /^spec\.max_concurrent_runs: /);
    const window = await rest("POST", "/v1/schedules", {
      scheduleId: "n",
      spec: { ...spec, catchUpWindow: "-5s" },
    });
    assert.equal(window.status, 400);
    assert.match(window.json.message ?? "", /^spec\.catch_up_window: /);
    const trigger = await rest("POST", "/v1/schedules/every-two:trigger", {});
    assert.equal(trigger.status, 200, JSON.stringify(trigger.json));
    assert.match(trigger.json.fire?.runId ?? "", /^[0-9a-f-]{36}$/);
    const resumed = await rest("POST", "/v1/schedules/every-two:resume", { note: "go" });
    assert.equal(resumed.status, 200);
    assert.equal(resumed.json.schedule?.nextFireTimes?.length, 10);
    const list = await rest("GET", "/v1/schedules?workflowName=hello-world");
    assert.deepEqual(
      list.json.schedules?.map((s) => s.scheduleId),
      ["every-two"],
    );
    assert.equal((await rest("DELETE", "/v1/schedules/every-two")).status, 200);
    assert.equal((await rest("DELETE", "/v1/schedules/every-two")).status, 404);
  });
});
