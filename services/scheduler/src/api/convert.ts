/** Database rows to API messages. */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, type Value } from "@bufbuild/protobuf/wkt";
import { errorToProto, jsonToValue } from "@nexusflow/common";
import { toArtifactRef } from "@nexusflow/common/artifacts";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  LogRefSchema,
  RunSchema,
  RunStatus,
  TaskKind,
  TaskStatus,
  WorkflowDefinitionSchema,
  WorkflowSpecSchema,
  type Attempt,
  type Run,
  type TaskError,
  type TaskRun,
  type WorkflowDefinition,
} from "@nexusflow/gen";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { RunSignalSchema, type RunSignal } from "@nexusflow/gen";
import { childRunId, startsChild } from "../core/children.js";
import type { DefinitionRow } from "../engine/definitions.js";
import {
  HELD_BACK_TASK_STATUSES,
  storedStepId,
  type ErrorInfo,
  type RunState,
  type SignalState,
  type TaskState,
} from "../model/run-state.js";
import type { RunDetail, RunRow } from "../persistence/run-store.js";
import { MAX_ANSWER_NESTING } from "../model/answer-depth.js";

function ts(d: Date | null | undefined): ReturnType<typeof timestampFromDate> | undefined {
  return d === null || d === undefined ? undefined : timestampFromDate(d);
}

function err(e: unknown): ReturnType<typeof errorToProto> | undefined {
  return e === null || e === undefined ? undefined : errorToProto(e as ErrorInfo);
}

/** Stored run status name to the enum. */
export function runStatus(name: string): RunStatus {
  return RunStatus[name as keyof typeof RunStatus] ?? RunStatus.UNSPECIFIED;
}

/** Stored task status name to the enum. */
export function taskStatus(name: string): TaskStatus {
  return TaskStatus[name as keyof typeof TaskStatus] ?? TaskStatus.UNSPECIFIED;
}

/** Enum to stored run status name. */
export function runStatusName(status: RunStatus): string {
  return RunStatus[status];
}

/** What RUN_VIEW_BASIC shows of a run, whether read from its row or from the engine's memory. */
interface RunBasics {
  id: string;
  workflowName: string;
  workflowVersion: number;
  status: string;
  error: unknown;
  idempotencyKey: string | null | undefined;
  labels: Record<string, string>;
  createdAt: Date;
  endedAt: Date | null | undefined;
  deadline: Date | null | undefined;
  /** A child run's parent, as stored (its row) or in memory (RunState.parent). */
  parentRunId?: string | null | undefined;
  parentStepId?: string | null | undefined;
  parent?: { runId: string; stepId: string } | null | undefined;
  /** A rerun's original run (RerunRun) and its `{fromStep, reused}` (RunState.rerun, or the row's column). */
  rerunOf?: string | null | undefined;
  rerun?: unknown;
}

/** A rerun's `{fromStep, reused}` as stored, or undefined for a run that is no rerun. */
function rerunOf(column: unknown): { fromStep: string; reused: Record<string, string> } | undefined {
  if (typeof column !== "object" || column === null) return undefined;
  const c = column as { fromStep?: unknown; reused?: unknown };
  return {
    fromStep: typeof c.fromStep === "string" ? c.fromStep : "",
    reused: typeof c.reused === "object" && c.reused !== null ? (c.reused as Record<string, string>) : {},
  };
}

/** TaskRun.reused_from of a step task of a rerun: the original task run id whose output it took over. */
function reusedFrom(rerun: unknown, kind: string, stepId: string): string {
  if (kind !== "STEP") return "";
  return rerunOf(rerun)?.reused[stepId] ?? "";
}

/** The fields of RUN_VIEW_BASIC: identity and state, without input, output or tasks. */
function basicInit(run: RunBasics): MessageInitShape<typeof RunSchema> {
  return {
    id: run.id,
    workflowName: run.workflowName,
    workflowVersion: run.workflowVersion,
    status: runStatus(run.status),
    ...(err(run.error) === undefined ? {} : { error: err(run.error) }),
    idempotencyKey: run.idempotencyKey ?? "",
    labels: run.labels,
    createTime: ts(run.createdAt),
    endTime: ts(run.endedAt),
    deadline: ts(run.deadline),
    parentRunId: run.parent?.runId ?? run.parentRunId ?? "",
    parentStepId: run.parent?.stepId ?? run.parentStepId ?? "",
    rerunOf: run.rerunOf ?? "",
    rerunFromStep: rerunOf(run.rerun)?.fromStep ?? "",
  };
}

function runInit(run: RunRow): MessageInitShape<typeof RunSchema> {
  return {
    ...basicInit(run),
    input: jsonToValue(run.input),
    ...(run.output === null || run.output === undefined ? {} : { output: jsonToValue(run.output) }),
    signals: signalsInit(run.signals),
  };
}

/** A run in RUN_VIEW_BASIC (StartRun for producers that need only the id and state). */
export function runBasic(run: RunRow): Run {
  return create(RunSchema, basicInit(run));
}

function basicStateInit(run: Readonly<RunState>): MessageInitShape<typeof RunSchema> {
  return basicInit({
    ...run,
    workflowName: run.workflow.name,
    workflowVersion: run.workflow.version,
    rerunOf: run.rerun?.of ?? null,
  });
}

/** RUN_VIEW_BASIC of a run in the engine's memory. */
export function runBasicFromState(run: Readonly<RunState>): Run {
  return create(RunSchema, basicStateInit(run));
}

/**
 * Why a task is not running (TaskRun.pending_reason), by task run id: the engine's live view
 * (Engine.pendingReason); "" for a task it does not hold back.
 */
export type PendingReasons = (taskRunId: string) => string;

/** A run's signals (RunState.signals, or its row's column) as RunSignal inits. */
function signalsInit(column: unknown): RunSignal[] {
  if (!Array.isArray(column)) return [];
  return (column as SignalState[]).map((s) =>
    create(RunSignalSchema, {
      name: s.name,
      idempotencyKey: s.key ?? "",
      stepId: s.stepId ?? "",
      ...(s.stepId === null ? { payload: jsonToValue(s.payload ?? null) } : {}),
      receiveTime: timestampFromDate(new Date(s.at)),
    }),
  );
}

/** A run with every task and attempt (GetRun, WatchRun, ListRuns in RUN_VIEW_FULL). */
export function runDetail(detail: RunDetail, pendingReason: PendingReasons = () => ""): Run {
  const tasks = detail.tasks.map((t) => ({
    id: t.id,
    stepId: t.stepId,
    kind: t.kind === "COMPENSATION" ? TaskKind.COMPENSATION : TaskKind.STEP,
    type: t.type,
    status: taskStatus(t.status),
    ...(t.input === null || t.input === undefined ? {} : { input: jsonToValue(t.input) }),
    ...(t.output === null || t.output === undefined ? {} : { output: jsonToValue(t.output) }),
    ...(t.outputRef === null || t.outputRef === undefined ? {} : { outputRef: toArtifactRef(t.outputRef) }),
    ...(err(t.error) === undefined ? {} : { error: err(t.error) }),
    attempts: (detail.attempts.get(t.id) ?? []).map((a) => ({
      number: a.number,
      fencingToken: BigInt(a.fencingToken),
      executorId: a.executorId,
      leaseTime: ts(a.leasedAt),
      startTime: ts(a.startedAt),
      endTime: ts(a.endedAt),
      status: taskStatus(a.status),
      ...(err(a.error) === undefined ? {} : { error: err(a.error) }),
      ...(a.logs === null || a.logs === undefined
        ? {}
        : { logs: fromJson(LogRefSchema, a.logs as JsonValue, { ignoreUnknownFields: true }) }),
    })),
    nextAttemptTime: ts(t.nextAttemptAt),
    skipReason: t.skipReason ?? "",
    createTime: ts(t.createdAt),
    endTime: ts(t.endedAt),
    // Only with a stored waiting state, so no other state ever carries a reason; the engine
    // answers "" for a task it has leased since, whose commit is on its way.
    pendingReason: HELD_BACK_TASK_STATUSES.has(t.status) ? pendingReason(t.id) : "",
    // A child step's compensation rolls back the step's child (a map's lists its children in its input).
    childRunId: detail.children?.[t.stepId] ?? "",
    reusedFrom: reusedFrom(detail.run.rerun, t.kind, t.stepId),
  }));
  return create(RunSchema, {
    ...runInit(detail.run),
    tasks,
    reruns: detail.reruns ?? [],
  } as MessageInitShape<typeof RunSchema>);
}

/**
 * Largest encoded run an answer carries in RUN_VIEW_FULL (StartRun, RerunRun, CancelRun; a
 * ListRuns page in all): under the 4 MiB that grpc-js, grpcio and grpcurl accept by default, with
 * room for the rest of the answer and its framing. A larger run comes in RUN_VIEW_BASIC instead
 * ({@link boundedRun}); GetRun answers the whole run, whatever its size.
 */
export const MAX_RUN_ANSWER_BYTES = 3 * 1024 * 1024;

/**
 * `run` in RUN_VIEW_BASIC: without the input, output, tasks, signals and reruns RUN_VIEW_FULL adds
 * (what {@link runBasic} makes of its row).
 */
export function basicOf(run: Run): Run {
  const basic: Run = { ...run, tasks: [], signals: [], reruns: [] };
  delete basic.input;
  delete basic.output;
  return basic;
}

/** Bytes of `run` encoded (the Run message alone, without its field tag and length). */
export function encodedRunSize(run: Run): number {
  return toBinary(RunSchema, run).length;
}

/**
 * Whether `value`, a message at nesting `depth` (1 for the top message), takes its decoder past
 * {@link MAX_ANSWER_NESTING}: each level of a list or an object is two messages (ListValue or
 * Struct, then the Value in it). Stops at the first branch that does.
 */
function valueTooDeep(value: Value | undefined, depth: number): boolean {
  if (value === undefined) return false;
  const kind = value.kind;
  if (kind.case === "listValue")
    return depth + 1 > MAX_ANSWER_NESTING || kind.value.values.some((v) => valueTooDeep(v, depth + 2));
  if (kind.case === "structValue")
    return (
      depth + 1 > MAX_ANSWER_NESTING ||
      Object.values(kind.value.fields).some((v) => valueTooDeep(v, depth + 2))
    );
  return depth > MAX_ANSWER_NESTING;
}

/**
 * Whether a decoder with the usual limit of {@link MAX_ANSWER_NESTING} nested messages could not
 * read `run` in an answer (the Run at depth 2, in the response): a value nested too deep in its
 * input, output, signals, or a task's input, output or error details. A step's input rendered from
 * templates can nest deeper than any request could (the scheduler fails its task: INPUT_TOO_DEEP).
 */
export function runTooDeep(run: Run): boolean {
  const run2 = 2;
  if (valueTooDeep(run.input, run2 + 1) || valueTooDeep(run.output, run2 + 1)) return true;
  if (valueTooDeep(run.error?.details, run2 + 2)) return true;
  if (run.signals.some((s) => valueTooDeep(s.payload, run2 + 2))) return true;
  return run.tasks.some(
    (t) =>
      valueTooDeep(t.input, run2 + 2) ||
      valueTooDeep(t.output, run2 + 2) ||
      valueTooDeep(t.error?.details, run2 + 3) ||
      t.attempts.some((a) => valueTooDeep(a.error?.details, run2 + 4)),
  );
}

/**
 * `run` (in RUN_VIEW_FULL) as an answer carries it: whole while a client with gRPC's and
 * protobuf's usual limits can read it (it encodes within `maxBytes`, and nests within
 * {@link MAX_ANSWER_NESTING}), else in RUN_VIEW_BASIC, so that the caller of a call that did what it
 * asked (a run started, rerun, cancelled) can read its answer. Every run has at least one task, so
 * a run without tasks is one in the BASIC view.
 */
export function boundedRun(run: Run, maxBytes = MAX_RUN_ANSWER_BYTES): Run {
  return encodedRunSize(run) <= maxBytes && !runTooDeep(run) ? run : basicOf(run);
}

/** `error` without its details, as the spread of a message's `error` field (nothing without one). */
function leanError(error: TaskError | undefined): { error?: TaskError } {
  if (error === undefined) return {};
  const lean = { ...error };
  delete lean.details;
  return { error: lean };
}

/**
 * `run` without its values: the run's input, output and error details, each task's input, output
 * and error details, its attempts' error details, and the signals' payloads. Every state is kept
 * (statuses, attempts, pending reasons, times, output references, child runs).
 */
export function leanRun(run: Run): Run {
  const lean: Run = {
    ...run,
    ...leanError(run.error),
    tasks: run.tasks.map((t) => {
      const task: TaskRun = {
        ...t,
        ...leanError(t.error),
        attempts: t.attempts.map((at): Attempt => ({ ...at, ...leanError(at.error) })),
      };
      delete task.input;
      delete task.output;
      return task;
    }),
    signals: run.signals.map((sig) => {
      const signal = { ...sig };
      delete signal.payload;
      return signal;
    }),
  };
  delete lean.input;
  delete lean.output;
  return lean;
}

/**
 * `run` as a WatchRun message carries it, and whether its values were left out
 * (WatchRunResponse.values_omitted): whole while a client with the usual limits can read it (as
 * {@link boundedRun}), else without its values ({@link leanRun}), so that a watcher still sees every
 * task's state and GetRun answers the values; in the BASIC view if even that is too large (tens
 * of thousands of tasks).
 */
export function watchedRun(run: Run, maxBytes = MAX_RUN_ANSWER_BYTES): { run: Run; valuesOmitted: boolean } {
  if (encodedRunSize(run) <= maxBytes && !runTooDeep(run)) return { run, valuesOmitted: false };
  const lean = leanRun(run);
  return { run: encodedRunSize(lean) <= maxBytes ? lean : basicOf(run), valuesOmitted: true };
}

/** A definition row to the API message. */
export function definition(row: DefinitionRow): WorkflowDefinition {
  return create(WorkflowDefinitionSchema, {
    name: row.name,
    version: row.version,
    spec: fromJson(WorkflowSpecSchema, row.spec as JsonValue, { ignoreUnknownFields: true }),
    contentHash: row.contentHash,
    createTime: timestampFromDate(row.createdAt),
  });
}

/**
 * TaskRun.child_run_id of a task in memory: a child workflow step's derived child id
 * (core/children.ts) once it waits on its child or ended with it; "" for other tasks (a map
 * step's own task among them: its elements have the children).
 */
function childRunIdOf(run: Readonly<RunState>, t: TaskState): string {
  // A child step's compensation rolls back the step's child (a map's lists its children in its input).
  if (t.kind === "COMPENSATION")
    return run.workflow.stepsById.get(t.stepId)?.map === null &&
      run.workflow.stepsById.get(t.stepId)?.child != null
      ? childRunId(run.id, t.stepId)
      : "";
  if (!startsChild(run, t)) return "";
  const started =
    t.status === "WAITING" ||
    t.status === "SUCCEEDED" ||
    (t.status === "FAILED" && t.error?.type === TaskErrorType.CHILD_FAILED);
  return started ? childRunId(run.id, storedStepId(t)) : "";
}

/** A run from the engine's memory (StartRun answers without reading back what it just wrote). */
export function runFromState(run: Readonly<RunState>, pendingReason: PendingReasons = () => ""): Run {
  const toTask = (
    t: TaskState,
  ): MessageInitShape<typeof RunSchema>["tasks"] extends (infer T)[] | undefined ? T : never => ({
    id: t.id,
    stepId: t.stepId,
    kind: t.kind === "COMPENSATION" ? TaskKind.COMPENSATION : TaskKind.STEP,
    type: t.type,
    status: taskStatus(t.status),
    ...(t.input === null || t.input === undefined ? {} : { input: jsonToValue(t.input) }),
    ...(t.output === null || t.output === undefined ? {} : { output: jsonToValue(t.output) }),
    ...(t.error === null ? {} : { error: errorToProto(t.error) }),
    attempts:
      t.current === null
        ? []
        : [
            {
              number: t.current.number,
              fencingToken: BigInt(t.current.fencingToken),
              executorId: t.current.executorId,
              leaseTime: ts(t.current.leasedAt),
              startTime: ts(t.current.startedAt),
              status: taskStatus(t.current.status),
            },
          ],
    skipReason: t.skipReason ?? "",
    createTime: ts(t.createdAt),
    endTime: ts(t.endedAt),
    pendingReason: HELD_BACK_TASK_STATUSES.has(t.status) ? pendingReason(t.id) : "",
    // A step a rerun took over started no child of this run (its child is the original's).
    childRunId: run.rerun?.reused[t.stepId] === undefined ? childRunIdOf(run, t) : "",
    reusedFrom: reusedFrom(run.rerun, t.kind, t.stepId),
  });
  return create(RunSchema, {
    ...basicStateInit(run),
    input: jsonToValue(run.input),
    ...(run.output === null || run.output === undefined ? {} : { output: jsonToValue(run.output) }),
    tasks: [...run.tasks.values(), ...run.compensations.values()].map(toTask),
    signals: signalsInit(run.signals),
  } as MessageInitShape<typeof RunSchema>);
}
