/**
 * A run: its DAG from the workflow definition (steps and dependsOn), each step coloured by its
 * state and updated live from WatchRun; the selected step's tasks (the step's and its
 * compensation's) with attempts (a timeline and a table), input, output, error and why it waits;
 * the compensations as their own lane; and the cancel actions,
 * shown to tokens with runs:write (the server checks the scope regardless).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type ArtifactRef, type Run, type StepSpec, type TaskRun, TaskStatus } from "@nexusflow/gen";
import { useEffect, useMemo, useState } from "preact/hooks";
import { describeError, isAborted, isFinal, isUnauthenticated } from "../api";
import { hasScope } from "../auth";
import { canWriteRuns, useSession } from "../session";
import { Dag } from "../Dag";
import {
  type DagStep,
  elementsProgress,
  graphStepsOf,
  layoutDag,
  stateLabel,
  stepState,
  tasksByStep,
} from "../dag";
import {
  JSON_PREVIEW_CHARS,
  TERMINAL_RUN_STATUSES,
  formatTime,
  previewJson,
  taskStatusName,
} from "../format";
import { linkHandler, routePath } from "../router";
import { watchedRun } from "../run-watch";
import { AttemptTimeline, type Compensable, CompensationLane } from "./run-lanes";
import { RerunButton, RunLink, SignalForm, SignalsTable } from "./run-waits";
import { StatusBadge } from "./runs";
import { TaskArtifacts, TaskLog, downloadArtifact } from "./step-files";

/** How the live view stands. */
type Live =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "ended" }
  | { state: "retrying"; error: string }
  /** The API answered that asking again cannot help (the run is gone, the token may not see it). */
  | { state: "stopped"; error: string };

const RECONNECT_MS = 2000;

/**
 * Waiting tasks the summary lists by name; the rest are counted (a map of 10,000 child workflows
 * has as many waiting elements, and the list is drawn again with every change of the run).
 */
const WAITING_SHOWN = 10;

/** The run page. */
export function RunPage({ runId }: { runId: string }) {
  const session = useSession();
  const { api, signOut } = session;
  const [run, setRun] = useState<Run | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [steps, setSteps] = useState<StepSpec[] | undefined>(undefined);
  const [stepsNote, setStepsNote] = useState<string | undefined>(undefined);
  const [live, setLive] = useState<Live>({ state: "connecting" });
  const [selected, setSelected] = useState<string | undefined>(undefined);
  /**
   * Why the values shown may lag the states: the run is too large for WatchRun to send its values
   * ("live": as read before, until it ends), or its final values could not be read ("final").
   */
  const [valuesNote, setValuesNote] = useState<
    { kind: "live" } | { kind: "final"; error: string } | undefined
  >(undefined);

  // GetRun for the first picture, then WatchRun (its first message is a snapshot too) until the
  // run ends; a stream cut off early (a gateway restart) is opened again. A message of a run too
  // large to carry its values (valuesOmitted) updates the states and keeps the values shown
  // (run-watch.ts); a run that ended so is read once more with GetRun, for its output and error.
  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const wait = (ms: number): Promise<void> =>
      new Promise((resolve) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
      });
    /**
     * What a failed call means here: stop (aborted, or the token refused: signed out), an answer
     * that will not change (shown), or one to ask again.
     */
    const failureOf = (e: unknown): "stop" | "final" | "retry" => {
      if (isAborted(e) || signal.aborted) return "stop";
      if (isUnauthenticated(e)) {
        signOut(`The gateway refused the token: ${describeError(e)}`);
        return "stop";
      }
      return isFinal(e) ? "final" : "retry";
    };
    const watch = async (): Promise<void> => {
      let first: Run | undefined;
      // A gateway restarting or a scheduler out of reach (UNAVAILABLE and the like) is asked
      // again, as the stream below is; an answer that will not change (NOT_FOUND, a refused scope)
      // is shown.
      for (;;) {
        try {
          first = (await api.getRun({ runId }, { signal })).run;
          setError(undefined);
          break;
        } catch (e) {
          const failure = failureOf(e);
          if (failure === "stop") return;
          if (failure === "final") {
            setError(describeError(e));
            return;
          }
          setError(`${describeError(e)} (trying again in ${RECONNECT_MS / 1000} s)`);
          await wait(RECONNECT_MS);
        }
      }
      if (first === undefined) return;
      setRun(first);
      let current = first;
      // Changes can come faster than frames (a wide fan-out): the page shows the latest run once
      // per frame, not every message.
      let frame: number | undefined;
      const show = (run: Run): void => {
        current = run;
        if (frame !== undefined) return;
        frame = requestAnimationFrame(() => {
          frame = undefined;
          if (!signal.aborted) setRun(current);
        });
      };
      signal.addEventListener("abort", () => frame !== undefined && cancelAnimationFrame(frame), {
        once: true,
      });
      /** The run ended in a message without its values: GetRun has them. */
      let endedLean = false;
      while (!signal.aborted && !TERMINAL_RUN_STATUSES.has(current.status)) {
        try {
          setLive({ state: "connecting" });
          for await (const msg of api.watchRun({ runId }, { signal })) {
            const next = watchedRun(current, msg);
            if (next === undefined) continue;
            show(next);
            endedLean = msg.valuesOmitted && TERMINAL_RUN_STATUSES.has(next.status);
            const omitted = msg.valuesOmitted;
            setValuesNote((prev) => (!omitted ? undefined : prev?.kind === "live" ? prev : { kind: "live" }));
            setLive((prev) => (prev.state === "live" ? prev : { state: "live" }));
          }
          // Ended before the run did (the gateway is draining): open it again, not at once.
          if (!TERMINAL_RUN_STATUSES.has(current.status)) {
            setLive({ state: "retrying", error: "the stream ended" });
            await wait(RECONNECT_MS);
          }
        } catch (e) {
          const failure = failureOf(e);
          if (failure === "stop") return;
          if (failure === "final") {
            setLive({ state: "stopped", error: describeError(e) });
            return;
          }
          setLive({ state: "retrying", error: describeError(e) });
          await wait(RECONNECT_MS);
        }
      }
      if (endedLean && !signal.aborted) {
        try {
          const whole = (await api.getRun({ runId }, { signal })).run;
          if (whole !== undefined) show(whole);
          setValuesNote(undefined);
        } catch (e) {
          if (isAborted(e) || signal.aborted) return;
          setValuesNote({ kind: "final", error: describeError(e) });
        }
      }
      if (!signal.aborted) setLive({ state: "ended" });
    };
    void watch();
    return () => controller.abort();
  }, [api, runId, signOut]);

  // The definition the run was started from, for the graph's edges.
  const workflowName = run?.workflowName;
  const workflowVersion = run?.workflowVersion;
  const canReadWorkflows = session.token === undefined || hasScope(session.token, "workflows:read");
  useEffect(() => {
    if (workflowName === undefined || workflowVersion === undefined) return;
    // A call the token's scopes say will be refused is not made (the browser would log the 403).
    if (!canReadWorkflows) {
      setStepsNote("Dependencies not shown: reading the workflow definition needs the workflows:read scope.");
      return;
    }
    const controller = new AbortController();
    api.getWorkflow({ name: workflowName, version: workflowVersion }, { signal: controller.signal }).then(
      (res) => {
        setSteps(res.workflow?.spec?.steps ?? []);
        setStepsNote(undefined);
      },
      (e: unknown) => {
        if (isAborted(e)) return;
        setSteps(undefined);
        setStepsNote(`Dependencies not shown: the definition could not be read (${describeError(e)}).`);
      },
    );
    return () => controller.abort();
  }, [api, workflowName, workflowVersion, canReadWorkflows]);

  const byStep = useMemo(() => tasksByStep(run), [run]);
  // Without the definition, the steps the run has tasks for, without edges.
  const graphSteps = useMemo<DagStep[]>(
    () =>
      (steps === undefined ? undefined : graphStepsOf(steps)) ??
      [...byStep.keys()].map((id) => ({ id, type: byStep.get(id)?.step?.type ?? "", dependsOn: [] })),
    [steps, byStep],
  );
  const layout = useMemo(() => layoutDag(graphSteps), [graphSteps]);
  const states = useMemo(
    () => new Map(graphSteps.map((s) => [s.id, stepState(byStep.get(s.id))])),
    [graphSteps, byStep],
  );
  const specById = useMemo(() => new Map((steps ?? []).map((s) => [s.id, s])), [steps]);
  // A retrying step says when its next attempt is due, a waiting one what for, and a step a rerun
  // took over from its original that it was reused, on the graph itself.
  const notes = useMemo(() => {
    const out = new Map<string, string>();
    const clock = (ts: Parameters<typeof timestampDate>[0]): string =>
      timestampDate(ts).toLocaleTimeString(undefined, { hour12: false });
    for (const [id, state] of states) {
      const task = byStep.get(id)?.step;
      const next = task?.nextAttemptTime;
      if (state === "retrying" && next !== undefined) out.set(id, `at ${clock(next)}`);
      if (state === "waiting") {
        const spec = specById.get(id);
        const signal = spec?.wait?.signal;
        const until = next === undefined ? "" : `until ${clock(next)}`;
        if (signal !== undefined && signal !== "") out.set(id, `for ${signal} ${until}`.trim());
        else if (spec?.wait !== undefined && spec.wait.event !== "")
          out.set(id, `for event ${spec.wait.event} ${until}`.trim());
        else if (spec?.workflow !== undefined) out.set(id, "for its child run");
        else if (byStep.get(id)?.elements !== undefined)
          out.set(id, `for ${byStep.get(id)?.elements?.length ?? 0} elements`);
        else if (until !== "") out.set(id, until);
      }
      if (state === "succeeded" && task !== undefined && task.reusedFrom !== "") out.set(id, "(reused)");
    }
    return out;
  }, [states, byStep, specById]);
  // Signal names the run's wait steps take, waiting ones first (the form suggests them).
  const signalNames = useMemo(() => {
    const names = new Set<string>();
    for (const [id, state] of states) {
      const signal = specById.get(id)?.wait?.signal;
      if (state === "waiting" && signal !== undefined && signal !== "") names.add(signal);
    }
    for (const s of steps ?? []) if (s.wait !== undefined && s.wait.signal !== "") names.add(s.wait.signal);
    return [...names];
  }, [states, specById, steps]);
  const compensable = useMemo<Compensable[] | undefined>(
    () => steps?.flatMap((s) => (s.compensate === undefined ? [] : [{ id: s.id, type: s.compensate.type }])),
    [steps],
  );

  if (error !== undefined)
    return (
      <section>
        <h1>Run {runId}</h1>
        <p class="error" role="alert">
          {error}
        </p>
      </section>
    );
  if (run === undefined) return <p aria-busy="true">Loading run {runId}…</p>;
  const terminal = TERMINAL_RUN_STATUSES.has(run.status);
  const selectedTasks = selected === undefined ? undefined : byStep.get(selected);
  const workflowRoute = { page: "workflows", name: run.workflowName } as const;
  const waiting = run.tasks.filter((t) => t.status === TaskStatus.WAITING);
  return (
    <section aria-labelledby="run-title" class="run">
      <h1 id="run-title">
        Run <span class="mono">{run.id}</span>
      </h1>
      <dl class="summary">
        <dt>Status</dt>
        <dd>
          <span data-testid="run-status">
            <StatusBadge status={run.status} />
          </span>{" "}
          <span class="live" aria-live="polite" data-live={live.state}>
            {live.state === "live" && "live"}
            {live.state === "connecting" && "connecting…"}
            {live.state === "ended" && "ended"}
            {live.state === "retrying" && `reconnecting (${live.error})`}
            {live.state === "stopped" && "not followed"}
          </span>
        </dd>
        <dt>Workflow</dt>
        <dd>
          <a href={routePath(workflowRoute)} onClick={linkHandler(workflowRoute)}>
            {run.workflowName}
          </a>{" "}
          <span class="muted">v{run.workflowVersion}</span>
        </dd>
        {waiting.length > 0 && (
          <>
            <dt>Waiting for</dt>
            <dd data-testid="waiting-for">
              <ul class="plain">
                {waiting.slice(0, WAITING_SHOWN).map((t) => (
                  <li key={t.id}>
                    <span class="mono">{t.stepId}</span>:{" "}
                    {t.pendingReason !== ""
                      ? t.pendingReason
                      : t.nextAttemptTime !== undefined
                        ? `until ${formatTime(t.nextAttemptTime)}`
                        : "waiting"}
                  </li>
                ))}
                {waiting.length > WAITING_SHOWN && (
                  <li class="muted">and {waiting.length - WAITING_SHOWN} more tasks waiting</li>
                )}
              </ul>
            </dd>
          </>
        )}
        {run.rerunOf !== "" && (
          <>
            <dt>Rerun of</dt>
            <dd data-testid="rerun-of">
              <RunLink runId={run.rerunOf} /> from step <span class="mono">{run.rerunFromStep}</span>
            </dd>
          </>
        )}
        {run.reruns.length > 0 && (
          <>
            <dt>Reruns</dt>
            <dd data-testid="reruns">
              <ul class="plain">
                {run.reruns.map((id) => (
                  <li key={id}>
                    <RunLink runId={id} />
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
        {run.parentRunId !== "" && (
          <>
            <dt>Parent run</dt>
            <dd data-testid="parent-run">
              <RunLink runId={run.parentRunId} /> at step <span class="mono">{run.parentStepId}</span>
            </dd>
          </>
        )}
        <dt>Created</dt>
        <dd>{formatTime(run.createTime)}</dd>
        <dt>Ended</dt>
        <dd>{formatTime(run.endTime)}</dd>
        {Object.keys(run.labels).length > 0 && (
          <>
            <dt>Labels</dt>
            <dd>
              {Object.entries(run.labels).map(([k, v]) => (
                <span key={k} class="label">
                  {k}={v}
                </span>
              ))}
            </dd>
          </>
        )}
      </dl>
      {live.state === "stopped" && (
        <p class="error" role="alert" data-testid="watch-stopped">
          No longer following this run, as last shown here: {live.error}
          {live.error.startsWith("NotFound") && " (it may have been deleted by retention)"}.
        </p>
      )}
      {canWriteRuns(session) && !terminal && <CancelActions run={run} onCancelled={setRun} />}
      {(run.signals.length > 0 || signalNames.length > 0 || (canWriteRuns(session) && !terminal)) && (
        <section aria-labelledby="signals-title">
          <h2 id="signals-title">Signals</h2>
          <SignalsTable signals={run.signals} />
          {/* Kept once the run ends (disabled), so that what the last signal did stays shown. */}
          {canWriteRuns(session) && (!terminal || run.signals.length > 0) && (
            <SignalForm run={run} signalNames={signalNames} ended={terminal} />
          )}
        </section>
      )}
      <h2>Graph</h2>
      {stepsNote !== undefined && <p class="muted">{stepsNote}</p>}
      <Dag
        layout={layout}
        states={states}
        notes={notes}
        selected={selected}
        onSelect={(id) => setSelected(id === selected ? undefined : id)}
        label={`Steps of run ${run.id}; select one for its details`}
      />
      <Legend />
      <CompensationLane
        byStep={byStep}
        compensable={compensable}
        selected={selected}
        onSelect={(id) => setSelected(id === selected ? undefined : id)}
      />
      {selected !== undefined && (
        <section class="step-details" aria-labelledby="step-title">
          <h2 id="step-title">
            Step <span class="mono">{selected}</span>: {stateLabel(states.get(selected) ?? "not-started")}
          </h2>
          {selectedTasks?.step === undefined && selectedTasks?.compensation === undefined && (
            <p>No task yet: the step waits for its dependencies.</p>
          )}
          <AttemptTimeline
            tasks={[
              ...(selectedTasks?.step === undefined ? [] : [{ title: "Task", task: selectedTasks.step }]),
              ...(selectedTasks?.compensation === undefined
                ? []
                : [{ title: "Compensation", task: selectedTasks.compensation }]),
            ]}
          />
          {elementsProgress(selectedTasks) !== undefined && (
            <p data-testid="map-elements">
              Map step: {elementsProgress(selectedTasks)}
              {failedElements(selectedTasks?.elements) !== "" &&
                `; failed: ${failedElements(selectedTasks?.elements)}`}
              .
            </p>
          )}
          {selectedTasks?.step !== undefined && (
            <TaskDetails title="Task" runId={run.id} task={selectedTasks.step} rerunOf={run.rerunOf} />
          )}
          {selectedTasks?.step?.status === TaskStatus.FAILED && terminal && canWriteRuns(session) && (
            <RerunButton key={selected} run={run} stepId={selected} />
          )}
          {selectedTasks?.compensation !== undefined && (
            <TaskDetails title="Compensation" runId={run.id} task={selectedTasks.compensation} />
          )}
        </section>
      )}
      <h2>Run input and result</h2>
      {valuesNote?.kind === "live" && (
        <p class="muted" data-testid="values-omitted">
          This run is too large to follow its values live: states are current, inputs and outputs are as first
          read here, and are read again when the run ends.
        </p>
      )}
      {valuesNote?.kind === "final" && (
        <p class="error" role="alert" data-testid="values-omitted">
          The run's final inputs and outputs could not be read ({valuesNote.error}): reload the page.
        </p>
      )}
      <div class="io">
        <Json title="Input" value={run.input} />
        {run.output !== undefined && <Json title="Output" value={run.output} />}
        {run.error !== undefined && (
          <Json
            title="Error"
            value={{
              type: run.error.type,
              message: run.error.message,
              details: run.error.details,
            }}
          />
        )}
      </div>
    </section>
  );
}

/** The first ten failed element tasks' step ids of a map step, or "". */
function failedElements(elements: readonly TaskRun[] | undefined): string {
  return (elements ?? [])
    .filter((t) => t.status === TaskStatus.FAILED)
    .slice(0, 10)
    .map((t) => t.stepId)
    .join(", ");
}

function CancelActions({ run, onCancelled }: { run: Run; onCancelled: (run: Run) => void }) {
  const { api } = useSession();
  const [confirming, setConfirming] = useState<"cancel" | "compensate" | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const cancel = async (compensate: boolean): Promise<void> => {
    setBusy(true);
    try {
      const res = await api.cancelRun({ runId: run.id, reason: "cancelled from the web UI", compensate });
      setProblem(undefined);
      if (res.run !== undefined) onCancelled(res.run);
    } catch (e) {
      setProblem(describeError(e));
    } finally {
      setBusy(false);
      setConfirming(undefined);
    }
  };
  return (
    <div class="actions" role="group" aria-label="Run actions">
      {confirming === undefined ? (
        <>
          <button type="button" class="danger" onClick={() => setConfirming("cancel")}>
            Cancel run
          </button>
          <button type="button" class="danger" onClick={() => setConfirming("compensate")}>
            Cancel with compensation
          </button>
        </>
      ) : (
        <>
          <span>
            {confirming === "cancel"
              ? "Cancel this run? Running tasks are told to stop."
              : "Cancel this run and compensate the steps that succeeded?"}
          </span>
          <button
            type="button"
            class="danger"
            disabled={busy}
            onClick={() => void cancel(confirming === "compensate")}
          >
            Yes, cancel
          </button>
          <button type="button" class="secondary" disabled={busy} onClick={() => setConfirming(undefined)}>
            Keep running
          </button>
        </>
      )}
      {problem !== undefined && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
    </div>
  );
}

function TaskDetails({
  title,
  runId,
  task,
  rerunOf = "",
}: {
  title: string;
  runId: string;
  task: TaskRun;
  rerunOf?: string;
}) {
  return (
    <div class="task" data-task={task.id}>
      <h3>
        {title}: <span class="mono">{task.type}</span>,{" "}
        {taskStatusName(task.status).toLowerCase().replace(/_/g, " ")}
      </h3>
      <dl class="summary">
        {task.pendingReason !== "" && (
          <>
            <dt>Waiting because</dt>
            <dd data-testid="pending-reason">{task.pendingReason}</dd>
          </>
        )}
        {task.reusedFrom !== "" && (
          <>
            <dt>Reused from</dt>
            <dd data-testid="reused-from" class="reused">
              task <span class="mono">{task.reusedFrom}</span>
              {rerunOf !== "" && (
                <>
                  {" "}
                  of run <RunLink runId={rerunOf} />
                </>
              )}
              : this rerun took its output over without running it
            </dd>
          </>
        )}
        {task.childRunId !== "" && (
          <>
            <dt>Child run</dt>
            <dd data-testid="child-run">
              <RunLink runId={task.childRunId} />
            </dd>
          </>
        )}
        {task.nextAttemptTime !== undefined && (
          <>
            <dt>{task.status === TaskStatus.WAITING ? "Waits until" : "Next attempt"}</dt>
            <dd>{formatTime(task.nextAttemptTime)}</dd>
          </>
        )}
        {task.skipReason !== "" && (
          <>
            <dt>Skipped because</dt>
            <dd>{task.skipReason}</dd>
          </>
        )}
        {task.outputRef !== undefined && <OutputRef ref_={task.outputRef} />}
      </dl>
      {task.attempts.length > 0 && (
        <table class="attempts">
          <caption>Attempts</caption>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Executor</th>
              <th scope="col">Leased</th>
              <th scope="col">Started</th>
              <th scope="col">Ended</th>
              <th scope="col">Status</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {task.attempts.map((a) => (
              <tr key={a.number}>
                <td>{a.number}</td>
                <td>{a.executorId || "—"}</td>
                <td>{formatTime(a.leaseTime)}</td>
                <td>{formatTime(a.startTime)}</td>
                <td>{formatTime(a.endTime)}</td>
                <td>{taskStatusName(a.status).toLowerCase()}</td>
                <td>{a.error === undefined ? "" : `${a.error.type}: ${a.error.message}`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div class="io">
        <Json title="Input" value={task.input} />
        {task.output !== undefined && <Json title="Output" value={task.output} />}
        {task.error !== undefined && (
          <Json
            title="Error"
            value={{
              type: task.error.type,
              message: task.error.message,
              retryable: task.error.retryable,
              details: task.error.details,
            }}
          />
        )}
      </div>
      <TaskLog runId={runId} task={task} />
      <TaskArtifacts runId={runId} task={task} />
    </div>
  );
}

/** An offloaded output (claim check): its key, downloadable through GetArtifact with the token. */
function OutputRef({ ref_ }: { ref_: ArtifactRef }) {
  const { artifacts } = useSession();
  const [problem, setProblem] = useState<string | undefined>(undefined);
  return (
    <>
      <dt>Output stored as</dt>
      <dd>
        <button
          type="button"
          class="link mono"
          onClick={() =>
            void downloadArtifact(artifacts, { ...ref_, name: ref_.name || "output.json" }).then(
              () => setProblem(undefined),
              (e: unknown) => setProblem(describeError(e)),
            )
          }
        >
          {ref_.key}
          <span class="visually-hidden"> (download the output)</span>
        </button>
        {problem !== undefined && (
          <span class="error" role="alert">
            {" "}
            {problem}
          </span>
        )}
      </dd>
    </>
  );
}

/**
 * A titled JSON block: `value` is plain JSON, a google.protobuf.Value, or plain objects holding
 * Values. A large value (a run's input may be megabytes) is shown cut at
 * {@link JSON_PREVIEW_CHARS} characters, with a button that saves it whole.
 */
export function Json({ title, value }: { title: string; value: unknown }) {
  const preview = useMemo(() => (value === undefined ? undefined : previewJson(value)), [value]);
  const save = (): void => {
    const url = URL.createObjectURL(
      new Blob([previewJson(value, Number.POSITIVE_INFINITY).text], { type: "application/json" }),
    );
    const a = document.createElement("a");
    a.href = url;
    a.download = `${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.json`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  };
  return (
    <figure class="json">
      <figcaption>{title}</figcaption>
      <pre tabIndex={0}>
        {preview === undefined ? "—" : preview.truncated ? `${preview.text}…` : preview.text}
      </pre>
      {preview?.truncated === true && (
        <p class="muted">
          Shown cut at {JSON_PREVIEW_CHARS.toLocaleString("en")} characters.{" "}
          <button type="button" class="link" onClick={save}>
            Save the whole {title.toLowerCase()} as JSON
          </button>
        </p>
      )}
    </figure>
  );
}

const LEGEND = [
  "not-started",
  "pending",
  "queued",
  "waiting",
  "leased",
  "running",
  "retrying",
  "succeeded",
  "failed",
  "skipped",
  "cancelled",
  "compensating",
  "compensated",
  "compensation-failed",
] as const;

function Legend() {
  return (
    <ul class="legend" aria-label="Colours of the step states">
      {LEGEND.map((s) => (
        <li key={s} class={`state-${s}`}>
          <span class="swatch" aria-hidden="true" />
          {stateLabel(s)}
        </li>
      ))}
    </ul>
  );
}
