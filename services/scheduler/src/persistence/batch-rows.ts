/**
 * A group commit's batch as rows (batch-writer.ts): the changed runs, tasks, attempts and events,
 * taken synchronously, become one table section each (batch-sql.ts); a large batch is taken as two
 * parts by run, and a part the database refuses can be cut down to the share of some of its runs.
 */
import { storedStepId, type AttemptState, type RunState, type TaskState } from "../model/run-state.js";
import type { BucketSnapshot } from "../model/rate-limit-state.js";
import {
  ATTEMPT_HISTORY_SQL,
  ATTEMPT_ROW_SQL,
  EVENT_RETRY_SQL,
  EVENT_SQL,
  HISTORY_COPY_SQL,
  HISTORY_SQL,
  KEY_SQL,
  BUCKET_SQL,
  RUN_INSERT_SQL,
  RUN_SEQ_SQL,
  RUN_SQL,
  RUN_UPDATE_SQL,
  TASK_INSERT_SQL,
  TASK_SQL,
  TASK_UPDATE_SQL,
  statementOf,
  type StatementTooLargeError,
  type BatchStatement,
  type Row,
  type Section,
} from "./batch-sql.js";
import { encodeEventRows, type OutboxRow } from "./outbox.js";
import type { Changes } from "./pending-changes.js";

function runUpdateRow(r: RunState, row: Row = {}): Row {
  row.id = r.id;
  row.status = r.status;
  row.cancel_requested = r.cancelRequested;
  row.compensate_on_cancel = r.compensateOnCancel;
  row.event_seq = r.eventSeq;
  if (r.output !== null && r.output !== undefined) row.output = r.output;
  if (r.error !== null) row.error = r.error;
  if (r.endedAt !== null) row.ended_at = r.endedAt.getTime();
  if (r.signals.length > 0) row.signals = r.signals;
  return row;
}

function taskUpdateRow(t: TaskState, setInput: boolean, row: Row = {}): Row {
  row.id = t.id;
  row.status = t.status;
  row.attempt = t.attempt;
  row.fencing_token = t.fencingToken;
  if (setInput) {
    row.set_input = true;
    if (t.input !== null && t.input !== undefined) row.input = t.input;
  }
  if (t.output !== null && t.output !== undefined) row.output = t.output;
  if (t.outputRef !== null && t.outputRef !== undefined) row.output_ref = t.outputRef;
  if (t.error !== null) row.error = t.error;
  if (t.skipReason !== null) row.skip_reason = t.skipReason;
  if (t.executorId !== null) row.executor_id = t.executorId;
  if (t.leaseExpiresAt !== null) row.lease_expires_at = t.leaseExpiresAt.getTime();
  if (t.nextAttemptAt !== null) row.next_attempt_at = t.nextAttemptAt.getTime();
  if (t.queuedAt !== null) row.queued_at = t.queuedAt.getTime();
  if (t.endedAt !== null) row.ended_at = t.endedAt.getTime();
  return row;
}

function attemptUpdateRow(a: AttemptState, row: Row = {}): Row {
  row.task_run_id = a.taskRunId;
  row.number = a.number;
  row.status = a.status;
  if (a.error !== null) row.error = a.error;
  if (a.logs !== null && a.logs !== undefined) row.logs = a.logs;
  if (a.startedAt !== null) row.started_at = a.startedAt.getTime();
  if (a.endedAt !== null) row.ended_at = a.endedAt.getTime();
  return row;
}

/** The task row's columns of its latest attempt `a` (see TASK_SQL). */
function latestAttemptColumns(t: TaskState, a: AttemptState, row: Row): Row {
  row.attempt_status = a.status;
  if (a.error !== null) row.attempt_error = a.error;
  if (a.logs !== null && a.logs !== undefined) row.attempt_logs = a.logs;
  if (a.executorId !== t.executorId) row.attempt_executor_id = a.executorId;
  row.leased_at = a.leasedAt.getTime();
  if (a.startedAt !== null) row.started_at = a.startedAt.getTime();
  if (a.endedAt !== null) row.attempt_ended_at = a.endedAt.getTime();
  return row;
}

// A row's first write: the update columns plus those fixed at creation (extra keys such as
// set_input are ignored by json_to_recordset).
function runRow(r: RunState): Row {
  const row: Row = {
    definition_id: r.definitionId,
    workflow_name: r.workflow.name,
    workflow_version: r.workflow.version,
    labels: r.labels,
    created_at: r.createdAt.getTime(),
  };
  if (r.input !== null && r.input !== undefined) row.input = r.input;
  if (r.idempotencyKey !== null) row.idempotency_key = r.idempotencyKey;
  if (r.deadline !== null) row.deadline = r.deadline.getTime();
  if (r.traceParent !== null) row.trace_parent = r.traceParent;
  if (r.rerun !== undefined) {
    row.rerun_of = r.rerun.of;
    row.rerun = { fromStep: r.rerun.fromStep, reused: r.rerun.reused };
  }
  if (r.parent !== null) {
    row.parent_run_id = r.parent.runId;
    row.parent_step_id = r.parent.stepId;
    row.child_depth = r.parent.depth;
  }
  return runUpdateRow(r, row);
}

function taskRow(t: TaskState): Row {
  const row: Row = {
    run_id: t.runId,
    step_id: storedStepId(t),
    kind: t.kind,
    type: t.type,
    position: t.position,
    created_at: t.createdAt.getTime(),
  };
  return taskUpdateRow(t, true, row);
}

function attemptRow(a: AttemptState): Row {
  const row: Row = {
    run_id: a.runId,
    fencing_token: a.fencingToken,
    executor_id: a.executorId,
    leased_at: a.leasedAt.getTime(),
  };
  return attemptUpdateRow(a, row);
}

/** The bytes as a Buffer (pg sends a Buffer parameter in binary), without a copy. */
function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Runs plus tasks in a batch from which it commits as two parts in parallel (see takeParts). */
export const SPLIT_ROWS = 256;

/** A batch, or one of its halves by run: what it holds and its statement. */
export interface Part extends Changes {
  sections: Section[];
  /** Whether an event may be stored already (the part's {@link MayExist}). */
  eventsAgain: (event: OutboxRow) => boolean;
  /** Undefined: no row; an error: too large to be made (committing it throws it). */
  statement: BatchStatement | StatementTooLargeError | undefined;
  /** Rows it writes (runs, tasks, attempts), recorded as written once it commits. */
  written: Map<object, unknown>;
  /** Rows in the statement. */
  rows: number;
}

/** The runs a part touches. */
export function runsOf(part: Part): string[] {
  const ids = new Set<string>();
  for (const x of part.sections) for (const id of x.runIds) ids.add(id);
  for (const e of part.events) ids.add(e.message.runId);
  return [...ids];
}

/** The share of `part` that belongs to `runIds`, from the values the part was taken with. */
export function subPart(part: Part, runIds: ReadonlySet<string>): Part {
  const events = part.events.filter((e) => runIds.has(e.message.runId));
  // An outbox row holds several runs' events: the share's rows are encoded again from its events.
  const sections = part.sections
    .filter((x) => !EVENT_PARTS.has(x.sql))
    .map((x) => {
      const keep = x.runIds.map((id) => runIds.has(id));
      const pick = <T>(values: T[]): T[] => values.filter((_, i) => keep[i]);
      return {
        sql: x.sql,
        rows: pick(x.rows),
        runIds: pick(x.runIds),
        ...(x.keys === undefined ? {} : { keys: pick(x.keys) }),
      };
    });
  const byRun = <K, V>(m: Map<K, V>, runOf: (v: V) => string): Map<K, V> =>
    new Map([...m].filter(([, v]) => runIds.has(runOf(v))));
  const runs = byRun(part.runs, (r) => r.id);
  const tasks = byRun(part.tasks, (t) => t.runId);
  const attempts = byRun(part.attempts, (a) => a.runId);
  const kept = new Set<object>([...runs.values(), ...tasks.values(), ...attempts.values()]);
  sections.push(...eventSections(events, part.eventsAgain));
  return {
    runs,
    tasks,
    attempts,
    events,
    eventsAgain: part.eventsAgain,
    sections,
    statement: statementOf(sections),
    written: new Map([...part.written].filter(([row]) => kept.has(row))),
    rows: sections.reduce((n, x) => n + x.rows.length, 0),
  };
}

/**
 * Rows known to exist in the database, and for tasks the input they were last written with
 * (BatchWriter keeps it). Unknown rows take the full upsert when they may exist (loaded by
 * recovery, or in a statement that failed and may have committed: see {@link MayExist}), else a
 * plain insert.
 */
export type WrittenRows = WeakMap<object, unknown>;

/**
 * Whether a run or task row not known as written, or an outbox row, may exist in the database all
 * the same.
 */
export type MayExist = (row: RunState | TaskState | OutboxRow) => boolean;

/**
 * What was marked, as one part, or as two parts by run when the batch is large: a large statement
 * keeps one PostgreSQL backend (one core) busy for tens of milliseconds while the leases it carries
 * wait; two halves on two connections commit in about half the time. Never split while it holds
 * events of a statement that may have committed: they are written again as the outbox rows they
 * were in, each row named by its first event, and a row split by run would be named anew (its
 * other runs' events written twice when the first commit had landed).
 */
export function takeParts(written: WrittenRows, changes: Changes, mayExist: MayExist = () => true): Part[] {
  const { runs, tasks, attempts, events } = changes;
  if (runs.size + tasks.size < SPLIT_ROWS || events.some((e) => mayExist(e)))
    return [snapshot(written, mayExist, runs, tasks, attempts, events, 0)];
  const empty = () => ({
    runs: new Map<string, RunState>(),
    tasks: new Map<string, TaskState>(),
    attempts: new Map<string, AttemptState>(),
    events: [] as OutboxRow[],
  });
  const halves = [empty(), empty()] as const;
  // The last hex digit of a run id (a random UUID) picks its half.
  const half = (runId: string) => halves[(runId.charCodeAt(runId.length - 1) & 1) as 0 | 1];
  for (const [id, r] of runs) half(id).runs.set(id, r);
  for (const [id, t] of tasks) half(t.runId).tasks.set(id, t);
  for (const [key, a] of attempts) half(a.runId).attempts.set(key, a);
  for (const e of events) half(e.message.runId).events.push(e);
  return halves.map((h, shard) => snapshot(written, mayExist, h.runs, h.tasks, h.attempts, h.events, shard));
}

/**
 * Serializes a batch into ONE statement: each table's upsert is a data-modifying CTE over a JSON
 * parameter (read with json_to_recordset, which parses the text once; the jsonb variant first
 * builds a jsonb value of the whole batch, ~10% more of PostgreSQL's CPU per task). One statement
 * is one implicit transaction (atomic, foreign keys checked at its end) and one round trip. Called
 * synchronously when the batch is taken, so the rows describe exactly the state that the batch's
 * events describe: changes made while the commit awaits belong to the next batch, with their events.
 */
function snapshot(
  stored: WrittenRows,
  mayExist: MayExist,
  runs: Map<string, RunState>,
  tasks: Map<string, TaskState>,
  attempts: Map<string, AttemptState>,
  events: OutboxRow[],
  shard: number,
): Part {
  const sections: Section[] = [];
  // What this batch writes, recorded as written once it commits (never before: a failed batch
  // is retried with full upserts for its new rows).
  const written = new Map<object, unknown>();
  const split = <T extends object>(rows: Iterable<T>): [T[], T[]] => {
    const fresh: T[] = [];
    const known: T[] = [];
    for (const row of rows) (stored.has(row) ? known : fresh).push(row);
    return [fresh, known];
  };
  const unsure = <T extends RunState | TaskState>(rows: T[]): [T[], T[]] => {
    const fresh: T[] = [];
    const maybe: T[] = [];
    for (const row of rows) (mayExist(row) ? maybe : fresh).push(row);
    return [fresh, maybe];
  };
  // Parents before children: runs, tasks, attempts, then the events describing them.
  const [newRuns, knownRuns] = split(runs.values());
  const runIds = (list: RunState[]) => list.map((r) => r.id);
  const [freshRuns, unsureRuns] = unsure(newRuns);
  sections.push({ sql: RUN_INSERT_SQL, rows: freshRuns.map(runRow), runIds: runIds(freshRuns) });
  sections.push({ sql: RUN_SQL, rows: unsureRuns.map(runRow), runIds: runIds(unsureRuns) });
  sections.push({
    sql: RUN_UPDATE_SQL,
    rows: knownRuns.map((r) => runUpdateRow(r)),
    runIds: runIds(knownRuns),
    keys: runIds(knownRuns),
  });
  for (const r of runs.values()) written.set(r, true);
  // A task's latest attempt lives in its row; attempts it has moved past go to task_attempt_history
  // (from memory when this batch carries them, else copied from the stored row). An attempt
  // marked without its task goes where the stored row says it belongs.
  const marked = new Map<string, AttemptState[]>();
  const orphans: AttemptState[] = [];
  for (const a of attempts.values()) {
    if (!tasks.has(a.taskRunId)) orphans.push(a);
    else {
      const list = marked.get(a.taskRunId);
      if (list === undefined) marked.set(a.taskRunId, [a]);
      else list.push(a);
    }
  }
  // Every event is committed with a write of its run's row or of one of its task rows, which
  // carries the run's latest sequence: recovery numbers the run's next event from the higher of
  // the two (an outbox row holds many runs' events and cannot say). A run with events and neither
  // row in the batch gets its sequence written alone.
  const lastEvent = new Map<string, number>();
  for (const e of events) lastEvent.set(e.message.runId, Number(e.message.sequence));
  for (const id of runs.keys()) lastEvent.delete(id);
  const sequenceOf = (t: TaskState, row: Row): Row => {
    const seq = lastEvent.get(t.runId);
    if (seq !== undefined) row.run_event_seq = seq;
    return row;
  };
  const history: AttemptState[] = [];
  const copies: { task: TaskState; skip: number[] }[] = [];
  const taskRows = (list: TaskState[], row: (t: TaskState) => Row, fresh: boolean): Row[] =>
    list.map((t) => {
      const own = marked.get(t.id);
      let latest: AttemptState | undefined;
      const skip: number[] = [];
      for (const a of own ?? []) {
        if (a.number === t.attempt) latest = a;
        else if (a.number < t.attempt) {
          history.push(a);
          skip.push(a.number);
        }
      }
      if (latest === undefined && fresh && t.current !== null && t.current.number === t.attempt)
        latest = t.current;
      if (latest !== undefined && t.attempt > 1) copies.push({ task: t, skip });
      const r = sequenceOf(t, row(t));
      return latest === undefined ? r : latestAttemptColumns(t, latest, r);
    });
  const [newTasks, knownTasks] = split(tasks.values());
  const [freshTasks, unsureTasks] = unsure(newTasks);
  const freshRows = taskRows(freshTasks, taskRow, true);
  const unsureRows = taskRows(unsureTasks, taskRow, true);
  const knownRows = taskRows(knownTasks, (t) => taskUpdateRow(t, stored.get(t) !== t.input), false);
  sections.push({
    sql: HISTORY_COPY_SQL,
    rows: copies.map(({ task, skip }) => ({
      id: task.id,
      attempt: task.attempt,
      ...(skip.length > 0 ? { skip } : {}),
    })),
    runIds: copies.map((c) => c.task.runId),
    keys: copies.map((c) => c.task.id),
  });
  sections.push({ sql: TASK_INSERT_SQL, rows: freshRows, runIds: freshTasks.map((t) => t.runId) });
  sections.push({ sql: TASK_SQL, rows: unsureRows, runIds: unsureTasks.map((t) => t.runId) });
  sections.push({
    sql: TASK_UPDATE_SQL,
    rows: knownRows,
    runIds: knownTasks.map((t) => t.runId),
    keys: knownTasks.map((t) => t.id),
  });
  for (const t of tasks.values()) written.set(t, t.input);
  sections.push({ sql: HISTORY_SQL, rows: history.map(attemptRow), runIds: history.map((a) => a.runId) });
  sections.push({
    sql: ATTEMPT_ROW_SQL,
    rows: orphans.map(attemptRow),
    runIds: orphans.map((a) => a.runId),
    keys: orphans.map((a) => a.taskRunId),
  });
  sections.push({
    sql: ATTEMPT_HISTORY_SQL,
    rows: orphans.map(attemptRow),
    runIds: orphans.map((a) => a.runId),
  });
  for (const a of attempts.values()) written.set(a, true);
  for (const t of tasks.values()) lastEvent.delete(t.runId);
  sections.push({
    sql: RUN_SEQ_SQL,
    rows: [...lastEvent].map(([id, seq]) => ({ id, event_seq: seq })),
    runIds: [...lastEvent.keys()],
    keys: [...lastEvent.keys()],
  });
  sections.push(...eventSections(events, mayExist));
  const keyed = newRuns.filter((r) => r.idempotencyKey !== null && r.requestHash !== null);
  if (keyed.length > 0) {
    sections.push({
      sql: KEY_SQL,
      rows: keyed.map((r) => ({
        workflow_name: r.workflow.name,
        idempotency_key: r.idempotencyKey,
        run_id: r.id,
        request_hash: r.requestHash,
        created_at: r.createdAt.getTime(),
      })),
      runIds: runIds(keyed),
    });
  }
  const buckets = bucketSection(tasks, shard);
  if (buckets !== undefined) sections.push(buckets);
  const rows = sections.reduce((n, x) => n + x.rows.length, 0);
  return {
    runs,
    tasks,
    attempts,
    events,
    eventsAgain: mayExist,
    sections,
    statement: statementOf(sections),
    written,
    rows,
  };
}

/**
 * The token buckets the batch's tasks took tokens from (TaskState.rateTaken, core/rate-limits.ts),
 * each with its task's run, so that it commits with the lease that took them: one row per bucket
 * (its latest grant: one statement may not upsert a row twice), in key order, in the rows of
 * `shard` (rate_limit_grants): the part's slot in takeParts, 0 or 1, kept by its shares (subPart).
 * The parts that commit at the same time are the slots of one takeParts, so two statements in
 * flight never write the same row; recovery takes each bucket's highest seq of any shard.
 */
function bucketSection(tasks: Map<string, TaskState>, shard: number): Section | undefined {
  // By the bucket's id (no key built per grant); a later grant's snapshot replaces the entry's.
  let latest: Map<string, { snap: BucketSnapshot; runId: string }> | undefined;
  for (const t of tasks.values()) {
    const taken = t.rateTaken;
    if (taken === undefined) continue;
    latest ??= new Map();
    for (const b of taken) {
      const seen = latest.get(b.id);
      if (seen === undefined) latest.set(b.id, { snap: b, runId: t.runId });
      else if (b.seq > seen.snap.seq) {
        seen.snap = b;
        seen.runId = t.runId;
      }
    }
  }
  if (latest === undefined || latest.size === 0) return undefined;
  const sorted = [...latest.values()];
  if (sorted.length > 1)
    sorted.sort((x, y) => {
      const a = x.snap;
      const b = y.snap;
      return a.name < b.name ? -1 : a.name > b.name ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
    });
  return {
    sql: BUCKET_SQL,
    rows: sorted.map(({ snap: b }) => ({
      name: b.name,
      key: b.key,
      shard,
      tokens: b.tokens,
      refilled_at: b.refilledAt,
      seq: b.seq,
      full_at: b.fullAt,
    })),
    runIds: sorted.map((v) => v.runId),
  };
}

const EVENT_PARTS: ReadonlySet<string> = new Set([EVENT_SQL, EVENT_RETRY_SQL]);

/**
 * The outbox rows of a batch's events: one row of them all; events of a statement that may have
 * committed are written again as the rows they were in, and a row that is there already is left
 * alone (EVENT_RETRY_SQL). A section's `runIds` name each row's first run; subPart encodes a share's
 * rows again from its events.
 */
function eventSections(events: OutboxRow[], again: (event: OutboxRow) => boolean): Section[] {
  if (events.length === 0) return [];
  const retried = events.filter((e) => again(e));
  const out: Section[] = [];
  for (const [sql, list] of [
    [EVENT_SQL, retried.length === 0 ? events : events.filter((e) => !again(e))],
    [EVENT_RETRY_SQL, retried],
  ] as const) {
    if (list.length === 0) continue;
    const rows = encodeEventRows(list, again);
    // The binary parameter: each row's payload, then its trace contexts when it has any.
    const parts: Uint8Array[] = [];
    let at = 0;
    const place = (bytes: Uint8Array): number => {
      parts.push(bytes);
      at += bytes.byteLength;
      return at - bytes.byteLength;
    };
    const placed = rows.map((b) => ({
      run_id: b.runId,
      first_sequence: b.firstSequence,
      event_count: b.eventCount,
      payload_at: place(b.payload),
      payload_length: b.payload.byteLength,
      traces_at: b.traces === null ? null : place(b.traces),
      traces_length: b.traces?.byteLength ?? null,
    }));
    out.push({
      sql,
      rows: placed,
      runIds: rows.map((b) => b.runId),
      bytes: parts.length === 1 ? bufferOf(parts[0]!) : Buffer.concat(parts, at),
    });
  }
  return out;
}
