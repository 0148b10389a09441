/**
 * Schedules (ScheduleService): the list (ListSchedules) with each schedule's expression, zone,
 * workflow and next fire time; a selected schedule (GetSchedule) with its next ten fire times, its
 * recent fires linking to their runs, and pause, resume and trigger for tokens with runs:write (the
 * gateway checks the scope regardless). Refreshed every two seconds.
 */
import { type Schedule, FireOrigin, OverlapPolicy, CatchUpPolicy } from "@nexusflow/gen";
import { useState } from "preact/hooks";
import { describeError, isAborted, isUnauthenticated } from "../api";
import { hasScope } from "../auth";
import { formatTime, formatTimeIn } from "../format";
import { usePolling } from "../hooks";
import { PagingNav, usePaging } from "../paging";
import { linkHandler, routePath } from "../router";
import { canWriteRuns, useSession } from "../session";
import { Json } from "./run";
import { RunLink } from "./run-waits";

const PAGE_SIZE = 100;
const REFRESH_MS = 2000;

/** An enum value's name without its prefix, in lower case ("buffer one"). */
function enumWords(name: string | undefined): string {
  return (name ?? "unspecified").toLowerCase().replace(/_/g, " ");
}

/** The schedules page, with `scheduleId`'s details when one is selected. */
export function SchedulesPage({ selected }: { selected: string | undefined }) {
  const { schedules, signOut, token } = useSession();
  const allowed = token === undefined || hasScope(token, "runs:read");
  const [workflow, setWorkflow] = useState("");
  const paging = usePaging();
  const [list, setList] = useState<Schedule[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(
    allowed ? undefined : "Listing schedules needs a token with the runs:read scope.",
  );
  const { pageToken } = paging;

  usePolling(
    async (signal) => {
      // A call the token's scopes say will be refused is not made (the browser would log the 403).
      if (!allowed) return;
      try {
        const res = await schedules.listSchedules(
          { workflowName: workflow.trim(), pageSize: PAGE_SIZE, pageToken },
          { signal },
        );
        setList(res.schedules);
        paging.setNext(res.nextPageToken);
        setError(undefined);
      } catch (e) {
        if (isAborted(e)) return;
        if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
        else setError(describeError(e));
      }
    },
    REFRESH_MS,
    [schedules, workflow, pageToken, allowed],
  );

  return (
    <section aria-labelledby="schedules-title">
      <h1 id="schedules-title">Schedules</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter schedules">
        <div class="field">
          <label for="filter-schedule-workflow">Workflow</label>
          <input
            id="filter-schedule-workflow"
            type="search"
            value={workflow}
            onInput={(e) => {
              setWorkflow(e.currentTarget.value);
              paging.reset();
            }}
          />
        </div>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {list === undefined && error === undefined && <p aria-busy="true">Loading schedules…</p>}
      {list !== undefined && list.length === 0 && (
        <p class="muted">{workflow.trim() === "" ? "No schedule." : `No schedule of ${workflow.trim()}.`}</p>
      )}
      {list !== undefined && list.length > 0 && (
        <table class="schedules">
          <caption class="visually-hidden">Schedules, by id</caption>
          <thead>
            <tr>
              <th scope="col">Schedule</th>
              <th scope="col">Workflow</th>
              <th scope="col">Cron</th>
              <th scope="col">Time zone</th>
              <th scope="col">State</th>
              <th scope="col">Next fire (its zone)</th>
              <th scope="col">Runs started</th>
            </tr>
          </thead>
          <tbody>
            {list.map((s) => {
              const route = { page: "schedules", scheduleId: s.scheduleId } as const;
              return (
                <tr key={s.scheduleId} data-schedule={s.scheduleId}>
                  <td>
                    <a
                      class="mono"
                      href={routePath(route)}
                      onClick={linkHandler(route)}
                      aria-current={selected === s.scheduleId ? "page" : undefined}
                    >
                      {s.scheduleId}
                    </a>
                  </td>
                  <td>{s.spec?.workflowName}</td>
                  <td class="mono">{s.spec?.cron}</td>
                  <td>{s.spec?.timeZone || "UTC"}</td>
                  <td>{s.paused ? "paused" : "active"}</td>
                  <td>{formatTimeIn(s.nextFireTimes[0], s.spec?.timeZone ?? "")}</td>
                  <td>{s.startedCount.toString()}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <PagingNav paging={paging} label="Schedule pages" />
      {selected !== undefined && allowed && <ScheduleDetails key={selected} scheduleId={selected} />}
    </section>
  );
}

function ScheduleDetails({ scheduleId }: { scheduleId: string }) {
  const session = useSession();
  const { schedules, signOut } = session;
  const [schedule, setSchedule] = useState<Schedule | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<{ ok: boolean; text: string } | undefined>(undefined);

  usePolling(
    async (signal) => {
      try {
        const res = await schedules.getSchedule({ scheduleId }, { signal });
        setSchedule(res.schedule);
        setError(undefined);
      } catch (e) {
        if (isAborted(e)) return;
        if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
        else setError(describeError(e));
      }
    },
    REFRESH_MS,
    [schedules, scheduleId],
  );

  const act = async (what: "pause" | "resume" | "trigger"): Promise<void> => {
    setBusy(true);
    try {
      if (what === "trigger") {
        const res = await schedules.triggerSchedule({ scheduleId, idempotencyKey: crypto.randomUUID() });
        const runId = res.fire?.runId ?? "";
        setOutcome({
          ok: true,
          text:
            runId === "" ? `Triggered: ${res.fire?.error || "no run started"}.` : `Triggered run ${runId}.`,
        });
      } else {
        const note = "from the web UI";
        const res =
          what === "pause"
            ? await schedules.pauseSchedule({ scheduleId, note })
            : await schedules.resumeSchedule({ scheduleId, note });
        setSchedule(res.schedule);
        setOutcome({ ok: true, text: what === "pause" ? "Paused." : "Resumed." });
      }
    } catch (e) {
      setOutcome({ ok: false, text: describeError(e) });
    } finally {
      setBusy(false);
    }
  };

  if (error !== undefined)
    return (
      <section aria-labelledby="schedule-title" class="schedule-details">
        <h2 id="schedule-title">
          Schedule <span class="mono">{scheduleId}</span>
        </h2>
        <p class="error" role="alert">
          {error}
        </p>
      </section>
    );
  if (schedule === undefined) return <p aria-busy="true">Loading schedule {scheduleId}…</p>;
  const spec = schedule.spec;
  const workflowRoute = { page: "workflows", name: spec?.workflowName } as const;
  return (
    <section aria-labelledby="schedule-title" class="schedule-details" data-testid="schedule-details">
      <h2 id="schedule-title">
        Schedule <span class="mono">{schedule.scheduleId}</span>
      </h2>
      <dl class="summary">
        <dt>Cron</dt>
        <dd class="mono">{spec?.cron}</dd>
        <dt>Time zone</dt>
        <dd>{spec?.timeZone || "UTC"}</dd>
        <dt>Workflow</dt>
        <dd>
          <a href={routePath(workflowRoute)} onClick={linkHandler(workflowRoute)}>
            {spec?.workflowName}
          </a>{" "}
          <span class="muted">{spec?.workflowVersion ? `v${spec.workflowVersion}` : "latest version"}</span>
        </dd>
        <dt>State</dt>
        <dd data-testid="schedule-state">
          {schedule.paused ? "paused" : "active"}
          {schedule.note !== "" && <span class="muted"> ({schedule.note})</span>}
        </dd>
        <dt>Overlap, catch-up</dt>
        <dd>
          {enumWords(OverlapPolicy[spec?.overlapPolicy ?? OverlapPolicy.UNSPECIFIED])},{" "}
          {enumWords(CatchUpPolicy[spec?.catchUpPolicy ?? CatchUpPolicy.UNSPECIFIED])}
        </dd>
        <dt>Fires</dt>
        <dd>
          {schedule.startedCount.toString()} started, {schedule.skippedCount.toString()} skipped,{" "}
          {schedule.missedCount.toString()} missed; last {formatTime(schedule.lastFireTime)}
        </dd>
        <dt>
          Next fire times <span class="muted">({spec?.timeZone || "UTC"})</span>
        </dt>
        <dd>
          {schedule.nextFireTimes.length === 0 ? (
            "none (paused)"
          ) : (
            <ol class="fire-times" data-testid="next-fire-times">
              {schedule.nextFireTimes.map((t, i) => (
                <li key={i}>{formatTimeIn(t, spec?.timeZone ?? "")}</li>
              ))}
            </ol>
          )}
        </dd>
      </dl>
      {canWriteRuns(session) && (
        <div class="actions" role="group" aria-label="Schedule actions">
          {schedule.paused ? (
            <button type="button" disabled={busy} onClick={() => void act("resume")}>
              Resume
            </button>
          ) : (
            <button type="button" class="secondary" disabled={busy} onClick={() => void act("pause")}>
              Pause
            </button>
          )}
          <button type="button" disabled={busy} onClick={() => void act("trigger")}>
            Trigger now
          </button>
          {outcome !== undefined &&
            (outcome.ok ? (
              <span role="status">{outcome.text}</span>
            ) : (
              <span class="error" role="alert">
                {outcome.text}
              </span>
            ))}
        </div>
      )}
      <table class="fires" data-testid="recent-fires">
        <caption>Recent fires, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Fire time</th>
            <th scope="col">Origin</th>
            <th scope="col">Run</th>
          </tr>
        </thead>
        <tbody>
          {schedule.recentFires.length === 0 && (
            <tr>
              <td colSpan={3} class="muted">
                No fire yet.
              </td>
            </tr>
          )}
          {schedule.recentFires.map((f, i) => (
            <tr key={`${f.runId}-${i}`}>
              <td>{formatTime(f.fireTime)}</td>
              <td>{enumWords(FireOrigin[f.origin])}</td>
              <td>
                {f.runId !== "" ? (
                  <RunLink runId={f.runId} />
                ) : (
                  <span class="error">{f.error || "no run"}</span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Json title="Input" value={spec?.input} />
    </section>
  );
}
