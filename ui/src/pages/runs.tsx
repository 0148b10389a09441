/**
 * Runs: filtered by workflow, status, creation time and labels, a page at a time, refreshed every
 * two seconds.
 */
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { RunStatus } from "@nexusflow/gen";
import { type Run, RunView } from "@nexusflow/gen";
import { useState } from "preact/hooks";
import { describeError, isAborted, isUnauthenticated } from "../api";
import { useSession } from "../session";
import { RUN_STATUSES, formatTime, parseLabels, runStatusName } from "../format";
import { usePolling } from "../hooks";
import { PagingNav, usePaging } from "../paging";
import { linkHandler, routePath } from "../router";

const PAGE_SIZE = 25;
const REFRESH_MS = 2000;

/** The runs page. */
export function RunsPage() {
  const { api, signOut } = useSession();
  const [workflow, setWorkflow] = useState("");
  const [status, setStatus] = useState<RunStatus | undefined>(undefined);
  const [after, setAfter] = useState("");
  const [before, setBefore] = useState("");
  const [labelsText, setLabelsText] = useState("");
  const paging = usePaging();
  const [runs, setRuns] = useState<Run[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [updated, setUpdated] = useState<Date | undefined>(undefined);
  const { pageToken } = paging;

  const labels = parseLabels(labelsText);
  const labelsKey = "problem" in labels ? labelsText : JSON.stringify(labels.labels);
  usePolling(
    async (signal) => {
      if ("problem" in labels) {
        setError(labels.problem);
        return;
      }
      try {
        const res = await api.listRuns(
          {
            workflowName: workflow.trim(),
            statuses: status === undefined ? [] : [status],
            labels: labels.labels,
            ...(after === "" ? {} : { createdAfter: timestampFromDate(new Date(after)) }),
            ...(before === "" ? {} : { createdBefore: timestampFromDate(new Date(before)) }),
            pageSize: PAGE_SIZE,
            pageToken,
            view: RunView.BASIC,
          },
          { signal },
        );
        setRuns(res.runs);
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
    [api, workflow, status, after, before, labelsKey, pageToken],
  );

  const resetPaging = paging.reset;
  return (
    <section aria-labelledby="runs-title">
      <h1 id="runs-title">Runs</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter runs">
        <div class="field">
          <label for="filter-workflow">Workflow</label>
          <input
            id="filter-workflow"
            type="search"
            name="workflow"
            placeholder="any"
            value={workflow}
            onInput={(e) => {
              setWorkflow(e.currentTarget.value);
              resetPaging();
            }}
          />
        </div>
        <div class="field">
          <label for="filter-status">Status</label>
          <select
            id="filter-status"
            name="status"
            value={status === undefined ? "" : String(status)}
            onChange={(e) => {
              const v = e.currentTarget.value;
              setStatus(v === "" ? undefined : Number(v));
              resetPaging();
            }}
          >
            <option value="">any</option>
            {RUN_STATUSES.map((s) => (
              <option key={s} value={String(s)}>
                {runStatusName(s)}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-after">Created after</label>
          <input
            id="filter-after"
            type="datetime-local"
            name="after"
            value={after}
            onInput={(e) => {
              setAfter(e.currentTarget.value);
              resetPaging();
            }}
          />
        </div>
        <div class="field">
          <label for="filter-before">Created before</label>
          <input
            id="filter-before"
            type="datetime-local"
            name="before"
            value={before}
            onInput={(e) => {
              setBefore(e.currentTarget.value);
              resetPaging();
            }}
          />
        </div>
        <div class="field">
          <label for="filter-labels">Labels</label>
          <input
            id="filter-labels"
            type="search"
            name="labels"
            placeholder="env=prod, team=ops"
            aria-describedby="labels-help"
            value={labelsText}
            onInput={(e) => {
              setLabelsText(e.currentTarget.value);
              resetPaging();
            }}
          />
          <span id="labels-help" class="visually-hidden">
            Comma-separated key=value pairs; runs must carry all of them.
          </span>
        </div>
        <span class="live" aria-live="polite">
          {updated === undefined
            ? "loading…"
            : `live, updated ${updated.toLocaleTimeString(undefined, { hour12: false })}`}
        </span>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {runs !== undefined && runs.length === 0 && <p>No runs match.</p>}
      {runs !== undefined && runs.length > 0 && (
        <table class="runs">
          <caption class="visually-hidden">Runs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Workflow</th>
              <th scope="col">Status</th>
              <th scope="col">Created</th>
              <th scope="col">Ended</th>
              <th scope="col">Labels</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((run) => {
              const route = { page: "run", runId: run.id } as const;
              return (
                <tr key={run.id} data-run={run.id}>
                  <td>
                    <a href={routePath(route)} onClick={linkHandler(route)} class="mono">
                      {run.id}
                    </a>
                  </td>
                  <td>
                    {run.workflowName} <span class="muted">v{run.workflowVersion}</span>
                  </td>
                  <td>
                    <StatusBadge status={run.status} />
                  </td>
                  <td>{formatTime(run.createTime)}</td>
                  <td>{formatTime(run.endTime)}</td>
                  <td>
                    {Object.entries(run.labels).map(([k, v]) => (
                      <span key={k} class="label">
                        {k}={v}
                      </span>
                    ))}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <PagingNav paging={paging} label="Pages of runs" />
    </section>
  );
}

/** A run status as a coloured, labelled badge. */
export function StatusBadge({ status }: { status: RunStatus }) {
  const name = runStatusName(status);
  return (
    <span class={`badge run-${name.toLowerCase().replace(/_/g, "-")}`} data-status={name}>
      {name.replace(/_/g, " ").toLowerCase()}
    </span>
  );
}
