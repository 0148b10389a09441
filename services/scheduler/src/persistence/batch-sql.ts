/**
 * The SQL of a group commit (batch-writer.ts): one upsert or update per table, each a
 * data-modifying CTE over a JSON parameter read with json_to_recordset, and the one statement a
 * batch becomes, named by its shape so that each connection prepares each shape once.
 */

// Times travel as epoch milliseconds (numbers): JSON.stringify takes twice as long over Date
// objects (each one calls toJSON), and PostgreSQL parses a number faster than an ISO string.
// to_timestamp rounds to whole microseconds, so a millisecond time arrives exactly.
const ts = (column: string): string => `to_timestamp(${column} / 1000)`;

const RUN_COLUMNS = `id uuid, definition_id bigint, workflow_name text, workflow_version int, status text, input jsonb,
  output jsonb, error jsonb, idempotency_key text, labels jsonb, cancel_requested boolean, compensate_on_cancel boolean,
  event_seq bigint, deadline float8, created_at float8, ended_at float8, trace_parent text, signals jsonb,
  rerun_of uuid, rerun jsonb,
  parent_run_id uuid, parent_step_id text, child_depth int`;
export const RUN_SQL = `INSERT INTO workflow_runs (id, definition_id, workflow_name, workflow_version, status, input, output, error,
  idempotency_key, labels, cancel_requested, compensate_on_cancel, event_seq, deadline, created_at, updated_at, ended_at,
  trace_parent, signals, rerun_of, rerun, parent_run_id, parent_step_id, child_depth)
SELECT id, definition_id, workflow_name, workflow_version, status, input, output, error, idempotency_key, labels,
  cancel_requested, compensate_on_cancel, event_seq, ${ts("deadline")}, ${ts("created_at")}, now(), ${ts("ended_at")},
  trace_parent, signals, rerun_of, rerun, parent_run_id, parent_step_id, COALESCE(child_depth, 0)
FROM json_to_recordset($1::json) AS x(${RUN_COLUMNS})
ON CONFLICT (id) DO UPDATE SET status = excluded.status, output = excluded.output, error = excluded.error,
  cancel_requested = excluded.cancel_requested, compensate_on_cancel = excluded.compensate_on_cancel,
  event_seq = excluded.event_seq, updated_at = now(), ended_at = excluded.ended_at, signals = excluded.signals`;

// A task row holds its latest attempt (attempt_* columns, leased_at, started_at); earlier attempts
// are rows of task_attempt_history, and the view task_attempts shows both (migration
// LatestAttemptInTaskRow). A row without attempt_status leaves the stored attempt as it is.
// attempt_executor_id is set only when the attempt's executor is not the task's (an attempt that
// timed out in the queue has none).
const ATTEMPT_COLUMNS = `attempt_status text, attempt_error jsonb, attempt_logs jsonb, attempt_executor_id text,
  leased_at float8, started_at float8, attempt_ended_at float8`;
const keepAttempt = (table: string, from: string, column: string, value = `${from}.${column}`): string =>
  `${column} = CASE WHEN ${from}.attempt_status IS NULL THEN ${table}.${column} ELSE ${value} END`;
const setAttempt = (table: string, from: string, timestamps: boolean): string =>
  [
    keepAttempt(table, from, "attempt_status"),
    keepAttempt(table, from, "attempt_error"),
    keepAttempt(table, from, "attempt_logs"),
    keepAttempt(table, from, "attempt_executor_id"),
    keepAttempt(table, from, "leased_at", timestamps ? ts(`${from}.leased_at`) : undefined),
    keepAttempt(table, from, "started_at", timestamps ? ts(`${from}.started_at`) : undefined),
    keepAttempt(table, from, "attempt_ended_at", timestamps ? ts(`${from}.attempt_ended_at`) : undefined),
  ].join(", ");

const TASK_COLUMNS = `id uuid, run_id uuid, step_id text, kind text, type text, status text, position int, input jsonb,
  output jsonb, output_ref jsonb, error jsonb, skip_reason text, attempt int, fencing_token bigint, executor_id text,
  lease_expires_at float8, next_attempt_at float8, queued_at float8, created_at float8, ended_at float8, ${ATTEMPT_COLUMNS},
  run_event_seq bigint`;
export const TASK_SQL = `INSERT INTO task_runs (id, run_id, step_id, kind, type, status, position, input, output, output_ref, error,
  skip_reason, attempt, fencing_token, executor_id, lease_expires_at, next_attempt_at, queued_at, created_at, updated_at, ended_at,
  attempt_status, attempt_error, attempt_logs, attempt_executor_id, leased_at, started_at, attempt_ended_at, run_event_seq)
SELECT id, run_id, step_id, kind, type, status, position, input, output, output_ref, error, skip_reason, attempt,
  fencing_token, executor_id, ${ts("lease_expires_at")}, ${ts("next_attempt_at")}, ${ts("queued_at")}, ${ts("created_at")},
  now(), ${ts("ended_at")}, attempt_status, attempt_error, attempt_logs, attempt_executor_id, ${ts("leased_at")},
  ${ts("started_at")}, ${ts("attempt_ended_at")}, coalesce(run_event_seq, 0)
FROM json_to_recordset($1::json) AS x(${TASK_COLUMNS})
ON CONFLICT (id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output,
  output_ref = excluded.output_ref, error = excluded.error, skip_reason = excluded.skip_reason, attempt = excluded.attempt,
  fencing_token = excluded.fencing_token, executor_id = excluded.executor_id, lease_expires_at = excluded.lease_expires_at,
  next_attempt_at = excluded.next_attempt_at, queued_at = excluded.queued_at, updated_at = now(), ended_at = excluded.ended_at,
  ${setAttempt("task_runs", "excluded", false)}, run_event_seq = greatest(task_runs.run_event_seq, excluded.run_event_seq)`;

// Rows the writer knows are new (created by this process and in no statement that may have
// committed): a plain insert, without the speculative insertion of ON CONFLICT (a conflict check
// before the insert and a confirmation record in the WAL after it).
const insertOnly = (upsert: string): string => upsert.slice(0, upsert.indexOf("\nON CONFLICT"));
export const RUN_INSERT_SQL = insertOnly(RUN_SQL);
export const TASK_INSERT_SQL = insertOnly(TASK_SQL);

const HISTORY_COLUMNS = `task_run_id, number, run_id, fencing_token, executor_id, status, error, logs, leased_at, started_at,
  ended_at`;
const HISTORY_RECORD = `task_run_id uuid, number int, run_id uuid, fencing_token bigint, executor_id text, status text,
  error jsonb, logs jsonb, leased_at float8, started_at float8, ended_at float8`;
const HISTORY_VALUES = `task_run_id, number, run_id, fencing_token, executor_id, status, error, logs, ${ts("leased_at")},
  ${ts("started_at")}, ${ts("ended_at")}`;
const HISTORY_UPSERT = `ON CONFLICT (task_run_id, number) DO UPDATE SET status = excluded.status, error = excluded.error,
  logs = excluded.logs, started_at = excluded.started_at, ended_at = excluded.ended_at`;

// Attempts of a task in the batch that are no longer its latest: into the history, from memory.
export const HISTORY_SQL = `INSERT INTO task_attempt_history (${HISTORY_COLUMNS})
SELECT ${HISTORY_VALUES}
FROM json_to_recordset($1::json) AS x(${HISTORY_RECORD})
${HISTORY_UPSERT}`;

// A task of the batch whose new attempt supersedes the one its stored row holds: that one moves to
// the history, read from the row as it was before this statement (every part of one statement
// sees the same snapshot), unless the batch carries it from memory (numbers in \`skip\`).
export const HISTORY_COPY_SQL = `INSERT INTO task_attempt_history (${HISTORY_COLUMNS})
SELECT t.id, t.attempt, t.run_id, t.fencing_token, coalesce(t.attempt_executor_id, t.executor_id), t.attempt_status,
  t.attempt_error, t.attempt_logs, t.leased_at, t.started_at, t.attempt_ended_at
FROM task_runs t JOIN json_to_recordset($1::json) AS x(id uuid, attempt int, skip int[]) ON t.id = x.id
WHERE t.id = ANY($2::uuid[]) AND t.attempt_status IS NOT NULL AND t.attempt < x.attempt
  AND NOT (t.attempt = ANY(coalesce(x.skip, '{}')))
ON CONFLICT (task_run_id, number) DO NOTHING`;

// An attempt marked without its task (the core marks both together; this keeps the writer correct
// regardless): into its task's row when it is the stored latest, else into the history.
export const ATTEMPT_ROW_SQL = `UPDATE task_runs AS t SET attempt_status = x.status, attempt_error = x.error,
  attempt_logs = x.logs, attempt_executor_id = CASE WHEN x.executor_id IS DISTINCT FROM t.executor_id THEN x.executor_id END,
  leased_at = ${ts("x.leased_at")}, started_at = ${ts("x.started_at")}, attempt_ended_at = ${ts("x.ended_at")}
FROM json_to_recordset($1::json) AS x(${HISTORY_RECORD})
WHERE t.id = x.task_run_id AND t.attempt = x.number AND t.id = ANY($2::uuid[])`;
export const ATTEMPT_HISTORY_SQL = `INSERT INTO task_attempt_history (${HISTORY_COLUMNS})
SELECT ${HISTORY_VALUES}
FROM json_to_recordset($1::json) AS x(${HISTORY_RECORD})
WHERE NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.id = x.task_run_id AND t.attempt = x.number)
${HISTORY_UPSERT}`;

// One row per commit: its events (of any runs) as one LifecycleEventBatch, named by its first
// event (run_id, first_sequence); the relay publishes each event. The payloads travel as one binary
// parameter, each row naming its bytes by offset and length: no base64 in the JSON, which cost the
// writer's thread an encoding and pg a UTF-8 copy of a third more bytes, and PostgreSQL a decode.
// Each row's trace contexts (persistence/event-traces.ts), when it has any, travel in the same parameter.
export const EVENT_SQL = `INSERT INTO outbox_events (run_id, first_sequence, event_count, payload, event_traces)
SELECT run_id, first_sequence, event_count, substring($2::bytea FROM payload_at + 1 FOR payload_length),
  CASE WHEN traces_at IS NOT NULL THEN substring($2::bytea FROM traces_at + 1 FOR traces_length) END
FROM json_to_recordset($1::json) AS x(run_id uuid, first_sequence bigint, event_count int, payload_at int,
  payload_length int, traces_at int, traces_length int)`;

// The same rows again, from a statement that failed after it may have committed (the connection
// broke before its answer): a row already there is that very row, written by the lost commit.
export const EVENT_RETRY_SQL = `${EVENT_SQL}
ON CONFLICT ON CONSTRAINT outbox_events_run_sequence_uq DO NOTHING`;

// A StartRun idempotency key, committed with the run it names. A key only ever moves to a newer run
// (one started after the key expired); writing a recovered run again leaves a newer one's key alone.
export const KEY_SQL = `INSERT INTO idempotency_keys (workflow_name, idempotency_key, run_id, request_hash, created_at)
SELECT workflow_name, idempotency_key, run_id, request_hash, ${ts("created_at")}
FROM json_to_recordset($1::json) AS x(workflow_name text, idempotency_key text, run_id uuid, request_hash text,
  created_at float8)
ON CONFLICT (workflow_name, idempotency_key) DO UPDATE SET run_id = excluded.run_id,
  request_hash = excluded.request_hash, created_at = excluded.created_at
WHERE idempotency_keys.created_at <= excluded.created_at`;

// Token buckets as grants left them (core/rate-limits.ts), each with the lease that took its tokens,
// in the row of the writer part's shard (0 or 1, see takeParts): the two parts of a split batch
// commit in parallel, and a shared row would make the second wait on the first's row lock until its
// commit. A row only ever moves to a later grant (seq); recovery takes a bucket's highest seq.
// `full_at`: when the bucket is full again (its row may be purged after it: rate-limit-purge.ts).
export const BUCKET_SQL = `INSERT INTO rate_limit_grants (name, key, shard, tokens, refilled_at, seq, full_at, updated_at)
SELECT name, key, shard, tokens, refilled_at, seq, full_at, now()
FROM json_to_recordset($1::json) AS x(name text, key text, shard smallint, tokens float8, refilled_at float8, seq bigint,
  full_at float8)
ON CONFLICT (name, key, shard) DO UPDATE SET tokens = excluded.tokens, refilled_at = excluded.refilled_at,
  seq = excluded.seq, full_at = excluded.full_at, updated_at = now()
WHERE rate_limit_grants.seq < excluded.seq`;

// Rows already written once are updated with only the columns a transition can change: smaller
// parameters to build and parse, and no speculative insert. The id array ($2) lets the planner find
// the rows by primary key (an estimate it cannot make for json_to_recordset); the writer's
// connections never scan a table (database.ts).
// With fillfactor 70 (migration HotUpdates; 50 for tasks, TaskFillfactor) most of these updates are
// HOT: no index is touched unless status changes on a run.
export const RUN_UPDATE_SQL = `UPDATE workflow_runs AS r SET status = x.status, output = x.output, error = x.error,
  cancel_requested = x.cancel_requested, compensate_on_cancel = x.compensate_on_cancel, event_seq = x.event_seq,
  updated_at = now(), ended_at = ${ts("x.ended_at")}, signals = x.signals
FROM json_to_recordset($1::json) AS x(id uuid, status text, output jsonb, error jsonb, cancel_requested boolean,
  compensate_on_cancel boolean, event_seq bigint, ended_at float8, signals jsonb)
WHERE r.id = x.id AND r.id = ANY($2::uuid[])`;

export const TASK_UPDATE_SQL = `UPDATE task_runs AS t SET status = x.status,
  input = CASE WHEN x.set_input THEN x.input ELSE t.input END, output = x.output, output_ref = x.output_ref,
  error = x.error, skip_reason = x.skip_reason, attempt = x.attempt, fencing_token = x.fencing_token,
  executor_id = x.executor_id, lease_expires_at = ${ts("x.lease_expires_at")},
  next_attempt_at = ${ts("x.next_attempt_at")}, queued_at = ${ts("x.queued_at")}, updated_at = now(),
  ended_at = ${ts("x.ended_at")}, ${setAttempt("t", "x", true)},
  run_event_seq = greatest(t.run_event_seq, x.run_event_seq)
FROM json_to_recordset($1::json) AS x(id uuid, status text, set_input boolean, input jsonb, output jsonb,
  output_ref jsonb, error jsonb, skip_reason text, attempt int, fencing_token bigint, executor_id text,
  lease_expires_at float8, next_attempt_at float8, queued_at float8, ended_at float8, ${ATTEMPT_COLUMNS},
  run_event_seq bigint)
WHERE t.id = x.id AND t.id = ANY($2::uuid[])`;

// The latest event sequence of a run whose events are in a batch without its run row or any of its
// task rows (which carry it otherwise): recovery numbers the run's next event from it.
export const RUN_SEQ_SQL = `UPDATE workflow_runs AS r SET event_seq = greatest(r.event_seq, x.event_seq)
FROM json_to_recordset($1::json) AS x(id uuid, event_seq bigint)
WHERE r.id = x.id AND r.id = ANY($2::uuid[])`;

// Rows carry only the values that are set: json_to_recordset reads a missing key as NULL, exactly
// as it reads a JSON null, so leaving nulls out changes nothing but the size of the parameter
// (about half of a task row) and the time to build, stringify and parse it.
export type Row = Record<string, unknown>;

/** A batch as one statement: its SQL, a name per shape (for the prepared statement), parameters. */
export interface BatchStatement {
  name: string;
  sql: string;
  params: unknown[];
}

/**
 * One table's rows of a batch (one of PARTS), each with the run it belongs to, kept so that a
 * refused batch can be split by run from exactly the values it was taken with.
 */
export interface Section {
  sql: string;
  rows: Row[];
  runIds: string[];
  /** Primary keys for the UPDATE parts' `= ANY($2)`, aligned with rows. */
  keys?: string[];
  /** The event parts' `$2::bytea`: the rows' payloads one after the other (rows name their bytes). */
  bytes?: Buffer;
}

/**
 * A batch whose statement cannot be made: a table's rows as JSON are longer than a JavaScript
 * string may be (V8: about 512 MiB; a run input templated into many steps, a map's outputs put
 * together). Its SQLSTATE is PostgreSQL's "program limit exceeded", so that the writer isolates it
 * by run like a batch PostgreSQL refuses for its data (batch-writer.ts isDataError): the run that
 * holds too much is refused (STORAGE_REFUSED), the others commit. Before, the exception ended the
 * scheduler's process, again at every restart when recovery made the same batch.
 */
export class StatementTooLargeError extends Error {
  override name = "StatementTooLargeError";
  readonly code = "54000";
}

/**
 * The statement of `sections` (which are in PARTS order), undefined when they hold no row, or a
 * {@link StatementTooLargeError} when it cannot be made.
 */
export function statementOf(sections: Section[]): BatchStatement | StatementTooLargeError | undefined {
  const used = sections.filter((x) => x.rows.length > 0);
  if (used.length === 0) return undefined;
  const params: unknown[] = [];
  for (const x of used) {
    let json: string;
    try {
      json = JSON.stringify(x.rows);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      return new StatementTooLargeError(
        `the batch's rows of one table are too large to be written (${x.rows.length} rows): ${e.message}`,
        { cause: e },
      );
    }
    params.push(json);
    if (x.keys !== undefined) params.push(x.keys);
    if (x.bytes !== undefined) params.push(x.bytes);
  }
  return { ...batchStatement(used.map((x) => x.sql)), params };
}

const PARTS = [
  RUN_INSERT_SQL,
  RUN_SQL,
  RUN_UPDATE_SQL,
  RUN_SEQ_SQL,
  HISTORY_COPY_SQL,
  TASK_INSERT_SQL,
  TASK_SQL,
  TASK_UPDATE_SQL,
  HISTORY_SQL,
  ATTEMPT_ROW_SQL,
  ATTEMPT_HISTORY_SQL,
  EVENT_SQL,
  EVENT_RETRY_SQL,
  KEY_SQL,
  BUCKET_SQL,
];
/** Statement text and name by shape: which of PARTS a batch has (at most 2^15 shapes). */
const statements = new Map<string, { name: string; sql: string }>();

/** The one statement of data-modifying CTEs for the given parts, in order, parameters numbered in turn. */
function batchStatement(parts: string[]): { name: string; sql: string } {
  const key = parts.map((sql) => PARTS.indexOf(sql).toString(16)).join("");
  let statement = statements.get(key);
  if (statement === undefined) {
    let base = 0;
    const ctes = parts.map((sql, i) => {
      const from = base;
      let own = 0;
      const numbered = sql.replace(/\$(\d)::/g, (_, k: string) => {
        own = Math.max(own, Number(k));
        return `$${from + Number(k)}::`;
      });
      base += own;
      return `w${i} AS (${numbered})`;
    });
    statement = { name: `nexusflow_batch_${key}`, sql: `WITH ${ctes.join(",\n")}\nSELECT 1` };
    statements.set(key, statement);
  }
  return statement;
}

const fencedStatements = new Map<string, { name: string; sql: string }>();

/**
 * `statement` with the partitions' fence in it (docs/replicas.md): its final SELECT calls
 * `nexusflow_fence(owner, partitions, epochs)`, which raises SQLSTATE NF001, rolling back every
 * write of the statement, unless `owner` still holds each partition at its epoch. The three
 * parameters follow the statement's own.
 */
export function fencedStatement(
  statement: BatchStatement,
  owner: string,
  partitions: readonly number[],
  epochs: readonly number[],
): BatchStatement {
  let fenced = fencedStatements.get(statement.name);
  if (fenced === undefined) {
    const n = statement.params.length;
    if (!statement.sql.endsWith("\nSELECT 1")) throw new Error("not a batch statement");
    fenced = {
      name: `${statement.name}_f`,
      sql: `${statement.sql.slice(0, -"SELECT 1".length)}SELECT nexusflow_fence($${n + 1}::uuid, $${n + 2}::int[], $${n + 3}::bigint[])`,
    };
    fencedStatements.set(statement.name, fenced);
  }
  return { ...fenced, params: [...statement.params, owner, partitions, epochs] };
}
