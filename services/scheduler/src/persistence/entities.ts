/**
 * The scheduler's tables, as MikroORM entity schemas, for the ORM that applies the committed
 * migrations (migrator.ts; the schema is theirs). Nothing queries through them: reads and writes
 * are plain SQL (run-store.ts, the batch writer, ...), so the running scheduler never loads MikroORM.
 */
import { defineEntity, p } from "@mikro-orm/core";
import { TASK_ATTEMPTS_VIEW } from "./migrations/Migration20261205040000LatestAttemptInTaskRow.js";

/** An immutable workflow definition, one row per (name, version). */
export const WorkflowDefinitionEntity = defineEntity({
  name: "WorkflowDefinition",
  tableName: "workflow_definitions",
  properties: {
    id: p.bigint("number").primary().autoincrement(),
    name: p.string().length(63),
    version: p.integer(),
    spec: p.json<Record<string, unknown>>(),
    contentHash: p.string().length(64),
    description: p.text().default(""),
    createdAt: p.datetime().defaultRaw("now()"),
  },
  uniques: [{ name: "workflow_definitions_name_version_uq", properties: ["name", "version"] }],
});

/** A run of a definition. Labels are JSONB so ListRuns can filter with containment (GIN index). */
export const WorkflowRunEntity = defineEntity({
  name: "WorkflowRun",
  tableName: "workflow_runs",
  properties: {
    id: p.uuid().primary(),
    definitionId: p.bigint("number"),
    workflowName: p.string().length(63),
    workflowVersion: p.integer(),
    status: p.string().length(24),
    input: p.json<unknown>().nullable(),
    output: p.json<unknown>().nullable(),
    error: p.json<unknown>().nullable(),
    idempotencyKey: p.string().length(200).nullable(),
    labels: p.json<Record<string, string>>().default("{}"),
    traceParent: p.string().length(55).nullable(),
    signals: p.json<unknown>().nullable(),
    /** The run this one reruns (RerunRun); null for other runs. */
    rerunOf: p.uuid().nullable(),
    /** A rerun's `{fromStep, reused: {stepId: original task run id}}` (migration RunReruns). */
    rerun: p.json<unknown>().nullable(),
    parentRunId: p.uuid().nullable(),
    parentStepId: p.string().length(63).nullable(),
    childDepth: p.integer().default(0),
    cancelRequested: p.boolean().default(false),
    compensateOnCancel: p.boolean().default(false),
    eventSeq: p.bigint("number").defaultRaw("0"),
    deadline: p.datetime().nullable(),
    createdAt: p.datetime().defaultRaw("now()"),
    updatedAt: p.datetime().defaultRaw("now()"),
    endedAt: p.datetime().nullable(),
  },
  indexes: [
    { name: "workflow_runs_created_idx", properties: ["createdAt", "id"] },
    { name: "workflow_runs_workflow_created_idx", properties: ["workflowName", "createdAt"] },
    { name: "workflow_runs_status_created_idx", properties: ["status", "createdAt"] },
  ],
});

/** One step (or compensation) of a run; `attempt` and `fencingToken` describe the current lease. */
export const TaskRunEntity = defineEntity({
  name: "TaskRun",
  tableName: "task_runs",
  properties: {
    id: p.uuid().primary(),
    runId: p.uuid(),
    stepId: p.string().length(80),
    kind: p.string().length(16),
    type: p.string().length(63),
    status: p.string().length(16),
    position: p.integer(),
    input: p.json<unknown>().nullable(),
    output: p.json<unknown>().nullable(),
    outputRef: p.json<unknown>().nullable(),
    error: p.json<unknown>().nullable(),
    skipReason: p.string().length(16).nullable(),
    attempt: p.integer().default(0),
    fencingToken: p.bigint("number").defaultRaw("0"),
    executorId: p.string().length(200).nullable(),
    leaseExpiresAt: p.datetime().nullable(),
    nextAttemptAt: p.datetime().nullable(),
    queuedAt: p.datetime().nullable(),
    createdAt: p.datetime().defaultRaw("now()"),
    updatedAt: p.datetime().defaultRaw("now()"),
    endedAt: p.datetime().nullable(),
    // The latest attempt (number `attempt`, token `fencingToken`); null before the first.
    attemptStatus: p.string().length(16).nullable(),
    attemptError: p.json<unknown>().nullable(),
    attemptLogs: p.json<unknown>().nullable(),
    /** Set only when the attempt's executor is not `executorId`. */
    attemptExecutorId: p.string().length(200).nullable(),
    leasedAt: p.datetime().nullable(),
    startedAt: p.datetime().nullable(),
    attemptEndedAt: p.datetime().nullable(),
    /** The run's latest event sequence when this row was written (recovery numbers from it). */
    runEventSeq: p.bigint("number").defaultRaw("0"),
  },
  uniques: [{ name: "task_runs_run_step_kind_uq", properties: ["runId", "stepId", "kind"] }],
});

/** The columns of an attempt, in the history table and in the view of every attempt (new builders each call). */
function attemptProperties() {
  return {
    taskRunId: p.uuid().primary(),
    number: p.integer().primary(),
    runId: p.uuid(),
    fencingToken: p.bigint("number"),
    executorId: p.string().length(200),
    status: p.string().length(16),
    error: p.json<unknown>().nullable(),
    logs: p.json<unknown>().nullable(),
    leasedAt: p.datetime(),
    startedAt: p.datetime().nullable(),
    endedAt: p.datetime().nullable(),
  };
}

/** The attempts a task has moved past (its latest is in its row, see TaskRunEntity). */
export const TaskAttemptHistoryEntity = defineEntity({
  name: "TaskAttemptHistory",
  tableName: "task_attempt_history",
  properties: attemptProperties(),
  indexes: [{ name: "task_attempts_run_idx", properties: ["runId"] }],
});

/**
 * Every attempt of every task run, for GetRun and audits: the view over task_attempt_history and
 * the latest attempt of each task row (migration LatestAttemptInTaskRow).
 */
export const TaskAttemptEntity = defineEntity({
  name: "TaskAttempt",
  tableName: "task_attempts",
  view: true,
  expression: TASK_ATTEMPTS_VIEW,
  properties: attemptProperties(),
});

/**
 * Transactional outbox: written in the same transaction as the state change it describes. One row
 * per commit; `payload` is a LifecycleEventBatch of the commit's `eventCount` events (of any runs,
 * each run's in sequence order), which the relay publishes one by one; `runId` and `firstSequence`
 * name its first event. `eventTraces` holds the events' trace contexts (persistence/event-traces.ts);
 * rows written before it held them in `traceContext`: one context for all, or one entry per event
 * (an array: a context, null, or the index of an earlier entry with the same context; see
 * persistence/outbox.ts `eventTraceContexts`).
 */
export const OutboxEventEntity = defineEntity({
  name: "OutboxEvent",
  tableName: "outbox_events",
  properties: {
    id: p.bigint("number").primary().autoincrement(),
    runId: p.uuid(),
    firstSequence: p.bigint("number"),
    eventCount: p.integer(),
    payload: p.blob(),
    traceContext: p.json<Record<string, string> | (Record<string, string> | number | null)[]>().nullable(),
    eventTraces: p.blob().nullable(),
    createdAt: p.datetime().defaultRaw("now()"),
    publishedAt: p.datetime().nullable(),
  },
  uniques: [{ name: "outbox_events_run_sequence_uq", properties: ["runId", "firstSequence"] }],
});

/**
 * A StartRun idempotency key: scoped to a workflow name, naming the run it started, with the hash
 * of that request's input and labels (null for keys carried over by the migration) and its time.
 */
export const IdempotencyKeyEntity = defineEntity({
  name: "IdempotencyKey",
  tableName: "idempotency_keys",
  properties: {
    workflowName: p.string().length(63).primary(),
    idempotencyKey: p.string().length(200).primary(),
    runId: p.uuid(),
    requestHash: p.string().length(64).nullable(),
    createdAt: p.datetime(),
  },
});

/** Every entity of the scheduler, for the ORM configuration. */
export const entities = [
  WorkflowDefinitionEntity,
  WorkflowRunEntity,
  TaskRunEntity,
  TaskAttemptHistoryEntity,
  TaskAttemptEntity,
  OutboxEventEntity,
  IdempotencyKeyEntity,
];
