/**
 * Executors: the sessions attached to the scheduler (ClusterService.ListExecutors), each with its
 * task types and the leases of each it holds, its slots and credit, refreshed every two seconds.
 */
import type { ExecutorSession } from "@nexusflow/gen";
import { useState } from "preact/hooks";
import { describeError, isAborted, isUnauthenticated } from "../api";
import { hasScope } from "../auth";
import { formatTime } from "../format";
import { usePolling } from "../hooks";
import { PagingNav, usePaging } from "../paging";
import { useSession } from "../session";

const PAGE_SIZE = 100;
const REFRESH_MS = 2000;

/** The executors page. */
export function ExecutorsPage() {
  const { cluster, signOut, token } = useSession();
  const allowed = token === undefined || hasScope(token, "runs:read");
  const [taskType, setTaskType] = useState("");
  const paging = usePaging();
  const [executors, setExecutors] = useState<ExecutorSession[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(
    allowed ? undefined : "Listing executors needs a token with the runs:read scope.",
  );
  const [updated, setUpdated] = useState<Date | undefined>(undefined);
  const { pageToken } = paging;

  usePolling(
    async (signal) => {
      // A call the token's scopes say will be refused is not made (the browser would log the 403).
      if (!allowed) return;
      try {
        const res = await cluster.listExecutors(
          { taskType: taskType.trim(), pageSize: PAGE_SIZE, pageToken },
          { signal },
        );
        setExecutors(res.executors);
        paging.setNext(res.nextPageToken);
        setError(undefined);
        setUpdated(new Date());
      } catch (e) {
        if (isAborted(e)) return;
        if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
        else setError(describeError(e));
      }
    },
    REFRESH_MS,
    [cluster, taskType, pageToken, allowed],
  );

  return (
    <section aria-labelledby="executors-title">
      <h1 id="executors-title">Executors</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter executors">
        <div class="field">
          <label for="filter-task-type">Task type</label>
          <input
            id="filter-task-type"
            type="search"
            name="taskType"
            placeholder="any"
            value={taskType}
            onInput={(e) => {
              setTaskType(e.currentTarget.value);
              paging.reset();
            }}
          />
        </div>
        <span class="live" aria-live="polite">
          {updated === undefined
            ? allowed
              ? "loading…"
              : ""
            : `live, updated ${updated.toLocaleTimeString(undefined, { hour12: false })}`}
        </span>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {executors !== undefined && executors.length === 0 && (
        <p>No executor is attached{taskType.trim() === "" ? "" : ` for ${taskType.trim()}`}.</p>
      )}
      {executors !== undefined && executors.length > 0 && (
        <table class="executors">
          <caption class="visually-hidden">Executor sessions, by executor id</caption>
          <thead>
            <tr>
              <th scope="col">Executor</th>
              <th scope="col">Session</th>
              <th scope="col">Task types (leases held, tasks queued)</th>
              <th scope="col">Slots in use</th>
              <th scope="col">Credit</th>
              <th scope="col">State</th>
              <th scope="col">Attached</th>
              <th scope="col">Last heard</th>
            </tr>
          </thead>
          <tbody>
            {executors.map((e) => (
              <tr key={e.sessionId} data-executor={e.executorId} data-session={e.sessionId}>
                <th scope="row" class="mono">
                  {e.executorId}
                  {e.version !== "" && <div class="muted">version {e.version}</div>}
                  {Object.entries(e.labels).map(([k, v]) => (
                    <span key={k} class="label">
                      {k}={v}
                    </span>
                  ))}
                </th>
                <td>
                  <span class="mono" title={e.sessionId}>
                    {e.sessionId.slice(0, 8)}
                  </span>
                  <div class="muted">protocol v{e.protocolVersion}</div>
                </td>
                <td>
                  <ul class="task-types">
                    {e.taskTypes.map((t) => (
                      <li key={t.name} data-type={t.name} data-in-use={t.slotsInUse}>
                        <span class="mono">{t.name}</span>{" "}
                        <span class="muted">
                          {t.slotsInUse} held, {t.queued} queued
                        </span>
                      </li>
                    ))}
                  </ul>
                </td>
                <td data-testid="slots-in-use">
                  {e.slots > 0 ? `${e.slotsInUse} of ${e.slots}` : String(e.slotsInUse)}
                </td>
                <td>{e.credit}</td>
                <td>
                  <span class={`badge ${e.draining ? "run-cancelled" : "run-succeeded"}`}>
                    {e.draining ? "draining" : "taking work"}
                  </span>
                </td>
                <td>{formatTime(e.attachTime)}</td>
                <td>{formatTime(e.lastSeenTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <PagingNav paging={paging} label="Pages of executors" />
    </section>
  );
}
