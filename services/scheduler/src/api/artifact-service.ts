/**
 * ArtifactService over gRPC: lists what tasks stored, streams task logs (following a running
 * task), and hands out artifacts (a presigned URL on S3, the content in chunks otherwise).
 *
 * The store is the source of truth for what exists; PostgreSQL says which tasks and attempts
 * exist and whether they still run (to know when following ends) and which refs executors
 * reported. A request names a task by its step id, `{step}.compensation`, or `{step}[{i}]` for an
 * element of a map step (as its task run is stored and shown), whose objects are in its own
 * `element-{i}/` folder. Logs are read from `attempt-{n}/logs.jsonl` once the attempt ended and
 * from its numbered chunks `attempt-{n}/logs/NNNNN.jsonl` while it runs (see the executor's
 * ArtifactLogSink); the two agree line for line, so a follower switches from one to the other
 * without repeating or losing lines.
 *
 * A log that is not there is NOT_FOUND, never an empty stream: the message names the key looked
 * for and the store (its path or bucket only to admins, and to everyone when authentication is
 * off), and says why it is missing when the database knows (the executor reported storing it
 * elsewhere, or stored none).
 */
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, Code, type Logger, Scope, hasScope, serverStream, unary } from "@nexusflow/common";
import {
  type ArtifactStore,
  COMPENSATION_SUFFIX,
  FilesystemArtifactStore,
  LOGS_OBJECT,
  LOG_CHUNKS_FOLDER,
  type TaskKindName,
  attemptPrefix,
  checkKey,
  decodeLogLines,
  isArtifactError,
  logChunkSeq,
  readAll,
  runPrefix,
  S3ArtifactStore,
  taskPrefix,
} from "@nexusflow/common/artifacts";
import {
  type ArtifactRef,
  GetArtifactResponseSchema,
  type GetArtifactRequest,
  type GetArtifactResponse,
  GetTaskLogsResponseSchema,
  type GetTaskLogsRequest,
  type GetTaskLogsResponse,
  ListArtifactsResponseSchema,
  type ListArtifactsRequest,
  type LogLine,
} from "@nexusflow/gen";
import type pg from "pg";
import { STEP_ID_PATTERN } from "../dag/index.js";
import { ACTIVE_LEASE, TERMINAL_TASK_STATUSES } from "../model/run-state.js";
import { checkRunId } from "../persistence/run-store.js";
import { callPrincipal } from "./auth.js";

// ---------------------------------------------------------------------------------- task index

/** One attempt as the database knows it. */
export interface AttemptInfo {
  readonly number: number;
  /** Stored status: LEASED or RUNNING while it runs, SUCCEEDED, FAILED or CANCELLED after. */
  readonly status: string;
  /** The executor it was leased to. */
  readonly executorId?: string | undefined;
  /** Key of the log its executor reported storing (absent: it reported none, or has not ended). */
  readonly logKey?: string | undefined;
  /** Lines of that log, as reported (a decimal string; absent with the key: none, an empty log). */
  readonly logLines?: string | undefined;
}

/**
 * Whether the attempt's executor reported a log of no line: it stores nothing then (an executor
 * that stores logs in the artifact store writes no empty object), so no object is no loss.
 */
export function reportedEmptyLog(attempt: AttemptInfo): boolean {
  return attempt.logKey !== undefined && (attempt.logLines === undefined || attempt.logLines === "0");
}

/** One task (a step or its compensation) as the database knows it. */
export interface TaskInfo {
  /** Stored task status. */
  readonly status: string;
  /** Its attempts, oldest first. */
  readonly attempts: readonly AttemptInfo[];
}

/** What ArtifactService reads from the database. */
export interface TaskIndex {
  /** Whether the run exists. */
  runExists(runId: string): Promise<boolean>;
  /**
   * The task of a step (or of its compensation), or undefined when the run has none; `stepId` as
   * stored: `{step}[{i}]` for an element of a map step.
   */
  task(runId: string, stepId: string, kind: TaskKindName): Promise<TaskInfo | undefined>;
  /**
   * Keys of the refs executors reported for a run (outputs, logs), optionally of one step's tasks
   * (`stepId` as stored; a map step's include its elements').
   */
  reportedKeys(runId: string, step?: { stepId: string; kind: TaskKindName }): Promise<string[]>;
}

function keyOf(value: unknown): string | undefined {
  return typeof value === "object" && value !== null && "key" in value && typeof value.key === "string"
    ? value.key
    : undefined;
}

/** {@link TaskIndex} over the scheduler's tables (task_runs, task_attempts). */
export class PgTaskIndex implements TaskIndex {
  constructor(private readonly pool: pg.Pool) {}

  async runExists(runId: string): Promise<boolean> {
    const { rowCount } = await this.pool.query("SELECT 1 FROM workflow_runs WHERE id = $1", [runId]);
    return (rowCount ?? 0) > 0;
  }

  async task(runId: string, stepId: string, kind: TaskKindName): Promise<TaskInfo | undefined> {
    const { rows } = await this.pool.query<{ status: string; attempts: AttemptInfo[] | null }>(
      `SELECT t.status,
              (SELECT json_agg(json_strip_nulls(json_build_object('number', a.number, 'status', a.status,
                        'executorId', a.executor_id, 'logKey', a.logs->>'key',
                        'logLines', a.logs->>'lines')) ORDER BY a.number)
                 FROM task_attempts a WHERE a.task_run_id = t.id) AS attempts
         FROM task_runs t WHERE t.run_id = $1 AND t.step_id = $2 AND t.kind = $3`,
      [runId, stepId, kind],
    );
    const row = rows[0];
    return row === undefined ? undefined : { status: row.status, attempts: row.attempts ?? [] };
  }

  async reportedKeys(runId: string, step?: { stepId: string; kind: TaskKindName }): Promise<string[]> {
    // A step's tasks, and its elements' when it is a map step (stored as `{step}[{i}]`).
    const filter =
      step === undefined
        ? ""
        : " AND (t.step_id = $2 OR left(t.step_id, length($2) + 1) = $2 || '[') AND t.kind = $3";
    const params = step === undefined ? [runId] : [runId, step.stepId, step.kind];
    const { rows } = await this.pool.query<{ ref: unknown }>(
      `SELECT t.output_ref AS ref FROM task_runs t WHERE t.run_id = $1 AND t.output_ref IS NOT NULL${filter}
       UNION ALL
       SELECT a.logs AS ref FROM task_attempts a JOIN task_runs t ON t.id = a.task_run_id
        WHERE a.run_id = $1 AND a.logs IS NOT NULL${filter}`,
      params,
    );
    return rows.map((r) => keyOf(r.ref)).filter((k): k is string => k !== undefined);
  }
}

// ---------------------------------------------------------------------------------- helpers

// The stored states, as the plain strings that SQL returns.
const ACTIVE_ATTEMPT: ReadonlySet<string> = ACTIVE_LEASE;
const TERMINAL_TASK: ReadonlySet<string> = TERMINAL_TASK_STATUSES;

/** Store errors as API errors. */
export function artifactApiError(e: unknown, field = "key"): unknown {
  if (!isArtifactError(e)) return e;
  switch (e.code) {
    case "NOT_FOUND":
      return new ApiError(Code.NOT_FOUND, e.message, [], { cause: e });
    case "INVALID_KEY":
    case "INVALID_ARGUMENT":
      return ApiError.invalid(field, e.message);
    case "INTEGRITY":
      return new ApiError(Code.DATA_LOSS, e.message, [], { cause: e });
    case "CONFLICT":
      return new ApiError(Code.FAILED_PRECONDITION, e.message, [], { cause: e });
    case "UNAVAILABLE":
      return new ApiError(Code.UNAVAILABLE, `the artifact store is unavailable: ${e.message}`, [], {
        cause: e,
      });
  }
}

/** The task a request names (see {@link parseStepId}). */
export interface RequestedTask {
  /** Its step id as stored (task_runs.step_id): `{step}[{i}]` for an element of a map step. */
  readonly stepId: string;
  readonly kind: TaskKindName;
  /** The step's own id. */
  readonly step: string;
  /** The element of a map step (0-based); absent for any other task. */
  readonly elementIndex?: number | undefined;
}

/** An element of a map step as its task run is stored: `{step}[{i}]`, the index in canonical form. */
const ELEMENT_ID = /^(.*)\[(0|[1-9]\d{0,8})\]$/;

/**
 * A request's step_id: a step, `{step}.compensation` for its compensation, or `{step}[{i}]` for
 * element i (0-based) of a map step, as the run's task runs name it.
 */
export function parseStepId(stepId: string, field = "step_id"): RequestedTask {
  const compensation = stepId.endsWith(COMPENSATION_SUFFIX);
  const id = compensation ? stepId.slice(0, -COMPENSATION_SUFFIX.length) : stepId;
  // A compensation is the whole step's: a map step's elements have none of their own.
  const element = compensation ? null : ELEMENT_ID.exec(id);
  const step = element?.[1] ?? id;
  if (!STEP_ID_PATTERN.test(step))
    throw ApiError.invalid(
      field,
      stepId === ""
        ? "a step id is required"
        : `not a step id (a step, {step}.compensation or {step}[i] for an element of a map step): ${JSON.stringify(stepId)}`,
    );
  const kind = compensation ? "COMPENSATION" : "STEP";
  return element?.[2] === undefined
    ? { stepId: id, kind, step }
    : { stepId: id, kind, step, elementIndex: Number(element[2]) };
}

/** Where one attempt's log was read up to. */
export interface LogCursor {
  /** Chunks consumed. */
  chunks: number;
  /** Lines returned so far. */
  lines: number;
  /** `logs.jsonl` was read: nothing more will come. */
  complete: boolean;
}

/** A fresh cursor. */
export function newLogCursor(): LogCursor {
  return { chunks: 0, lines: 0, complete: false };
}

/**
 * The lines of one attempt's log not returned yet, advancing `cursor`: from `logs.jsonl` when it
 * exists (then `cursor.complete`), else from the chunks written so far, in order.
 */
export async function readNewLogLines(
  store: ArtifactStore,
  prefix: string,
  attempt: number,
  cursor: LogCursor,
): Promise<LogLine[]> {
  if (cursor.complete) return [];
  for (let pass = 0; pass < 2; pass++) {
    const full = await store.stat(`${prefix}${LOGS_OBJECT}`);
    if (full !== undefined) {
      const lines = decodeLogLines((await readAll(await store.get(full.key))).toString("utf8"), attempt);
      const fresh = lines.slice(cursor.lines);
      cursor.lines = lines.length;
      cursor.complete = true;
      return fresh;
    }
    const chunks = (await store.list(`${prefix}${LOG_CHUNKS_FOLDER}`, { metadata: false }))
      .map((r) => ({ key: r.key, seq: logChunkSeq(r.key) }))
      .filter((c): c is { key: string; seq: number } => c.seq !== undefined && c.seq > cursor.chunks)
      .sort((a, b) => a.seq - b.seq);
    const fresh: LogLine[] = [];
    try {
      for (const chunk of chunks) {
        // Chunks are written one after the other; a gap means the next one is not there yet.
        if (chunk.seq !== cursor.chunks + 1) break;
        const lines = decodeLogLines((await readAll(await store.get(chunk.key))).toString("utf8"), attempt);
        fresh.push(...lines);
        cursor.chunks = chunk.seq;
        cursor.lines += lines.length;
      }
      return fresh;
    } catch (e) {
      // The attempt ended meanwhile: its chunks were joined into logs.jsonl and deleted.
      if (!isArtifactError(e, "NOT_FOUND")) throw e;
      if (fresh.length > 0) return fresh;
    }
  }
  return [];
}

// ---------------------------------------------------------------------------------- service

/** Options of {@link artifactService}. */
export interface ArtifactServiceOptions {
  /** Where executors store logs and artifacts. */
  store: ArtifactStore;
  /** What the database knows about tasks. */
  tasks: TaskIndex;
  /**
   * How often a followed log is polled for new lines and the task for its end, in milliseconds.
   * @default 500
   */
  pollIntervalMs?: number | undefined;
  /**
   * Lifetime of presigned URLs, in seconds.
   * @default 900
   */
  presignTtlSeconds?: number | undefined;
  /**
   * Bytes per GetArtifact content message.
   * @default 64 KiB
   */
  chunkBytes?: number | undefined;
  /** Logger. */
  log?: Logger | undefined;
}

/** Most lines, and bytes of text, per GetTaskLogs message (keeps messages well under 4 MiB). */
const MAX_LINES_PER_MESSAGE = 1000;
const MAX_BYTES_PER_MESSAGE = 1024 * 1024;

/** Splits lines into response-sized batches. */
function batches(lines: readonly LogLine[]): LogLine[][] {
  const out: LogLine[][] = [];
  let current: LogLine[] = [];
  let bytes = 0;
  for (const line of lines) {
    const size = line.text.length + 64;
    if (
      current.length > 0 &&
      (current.length >= MAX_LINES_PER_MESSAGE || bytes + size > MAX_BYTES_PER_MESSAGE)
    ) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(line);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** Waits `ms` unless `signal` aborts first; resolves false when aborted. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await delay(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether the caller of a call may see where the store is (a path or a bucket): an admin, or
 * anyone when the scheduler runs without authentication (then every caller may do everything).
 */
function mayLocateStore(metadata: grpc.Metadata): boolean {
  const principal = callPrincipal(metadata);
  return principal === undefined || hasScope(principal, Scope.ADMIN);
}

/** The store as messages name it: with its path or bucket when `located`. */
export function describeStore(store: ArtifactStore, located: boolean): string {
  const kind = store.kind === "s3" ? "S3" : "filesystem";
  if (!located) return `the scheduler's ${kind} artifact store (an admin token shows where it is)`;
  if (store instanceof FilesystemArtifactStore) return `the filesystem artifact store at ${store.root}`;
  if (store instanceof S3ArtifactStore) return `the S3 artifact store, bucket ${store.bucket}`;
  return `the scheduler's ${kind} artifact store`;
}

/** An ended attempt whose log is not in the store: no logs.jsonl and no chunk was ever read. */
interface MissingLog {
  readonly attempt: AttemptInfo;
  /** The key looked for. */
  readonly key: string;
}

/** NOT_FOUND for a task whose ended attempts have no log, saying where it looked and why. */
export function missingLogError(
  runId: string,
  stepId: string,
  missing: readonly MissingLog[],
  store: string,
): ApiError {
  const keys = missing.map((m) => m.key);
  const looked = keys.length <= 2 ? keys.join(" and ") : `${keys[0]} and ${keys.length - 1} more`;
  const reported = missing.find((m) => m.attempt.logKey !== undefined);
  const last = missing[missing.length - 1]?.attempt;
  const why =
    reported !== undefined
      ? `executor ${reported.attempt.executorId ?? "?"} reported storing ` +
        `${reported.attempt.logKey === reported.key ? "it" : reported.attempt.logKey}, so ` +
        "the scheduler reads another artifact store than the executors write to " +
        "(compare ARTIFACTS_DIR, NEXUSFLOW_DATA_DIR, S3_ENDPOINT and S3_BUCKET of both)"
      : `executor ${last?.executorId ?? "?"} reported no log for attempt ${last?.number ?? "?"} ` +
        "(an executor without an artifact store keeps its logs in memory only)";
  return ApiError.notFound(
    `no log of step ${stepId} in run ${runId}: looked for ${looked} in ${store}; ${why}`,
  );
}

/** The ArtifactService implementation for grpc-js. */
export function artifactService(options: ArtifactServiceOptions): grpc.UntypedServiceImplementation {
  const { store, tasks } = options;
  const pollMs = options.pollIntervalMs ?? 500;
  const ttl = options.presignTtlSeconds ?? 900;
  const chunkBytes = options.chunkBytes ?? 64 * 1024;

  const wrap = async <T>(fn: () => Promise<T>, field?: string): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw artifactApiError(e, field);
    }
  };

  return {
    listArtifacts: unary(async (req: ListArtifactsRequest) => {
      checkRunId(req.runId);
      const step = req.stepId === "" ? undefined : parseStepId(req.stepId);
      if (!(await tasks.runExists(req.runId))) throw ApiError.notFound(`run ${req.runId} does not exist`);
      const prefix =
        step === undefined
          ? runPrefix(req.runId)
          : taskPrefix(req.runId, step.step, step.kind, step.elementIndex);
      const listed = await wrap(() => store.list(prefix));
      // Log chunks are a transport detail of running attempts (GetTaskLogs reads them).
      const artifacts = new Map<string, ArtifactRef>(
        listed.filter((r) => logChunkSeq(r.key) === undefined).map((r) => [r.key, r]),
      );
      // A ref an executor reported but the listing missed (eventual consistency of a back end)
      // is checked directly; one whose object is gone is left out.
      for (const key of await tasks.reportedKeys(req.runId, step)) {
        if (artifacts.has(key) || !key.startsWith(prefix)) continue;
        const ref = await wrap(() => store.stat(key)).catch((e: unknown) => {
          options.log?.warn({ err: e, key }, "cannot check a reported artifact");
          return undefined;
        });
        if (ref !== undefined) artifacts.set(key, ref);
        else options.log?.debug({ key, run_id: req.runId }, "a reported artifact is not in the store");
      }
      return create(ListArtifactsResponseSchema, {
        artifacts: [...artifacts.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
      });
    }),

    getTaskLogs: serverStream(
      async (
        req: GetTaskLogsRequest,
        send: (res: GetTaskLogsResponse) => Promise<void>,
        signal: AbortSignal,
        call: grpc.ServerWritableStream<GetTaskLogsRequest, GetTaskLogsResponse>,
      ) => {
        checkRunId(req.runId);
        const step = parseStepId(req.stepId);
        if (!Number.isInteger(req.attempt) || req.attempt < 0)
          throw ApiError.invalid("attempt", "must be 0 (every attempt) or an attempt number");
        const cursors = new Map<number, LogCursor>();
        const missing = new Map<number, MissingLog>();
        let sent = 0;
        // Nothing sent because no log is there: say so rather than end as if the log were empty.
        const end = (): void => {
          if (sent > 0 || missing.size === 0) return;
          const where = describeStore(store, mayLocateStore(call.metadata));
          throw missingLogError(req.runId, req.stepId, [...missing.values()], where);
        };
        for (;;) {
          // The database first: an attempt it shows as ended has its complete log in the store
          // already (the executor stores it before reporting), so the read below is the last one.
          const task = await tasks.task(req.runId, step.stepId, step.kind);
          if (task === undefined) {
            if (!(await tasks.runExists(req.runId)))
              throw ApiError.notFound(`run ${req.runId} does not exist`);
            throw ApiError.notFound(`run ${req.runId} has no step ${req.stepId}`);
          }
          // A map step's own task runs nothing: its elements (`{step}[{i}]`, made from 0 on) do.
          if (
            task.attempts.length === 0 &&
            step.kind === "STEP" &&
            step.elementIndex === undefined &&
            (await tasks.task(req.runId, `${step.stepId}[0]`, step.kind)) !== undefined
          )
            throw ApiError.notFound(
              `step ${req.stepId} of run ${req.runId} is a map step: its elements run its task, ` +
                `each with a log of its own; name one (${req.stepId}[0], ${req.stepId}[1], ...)`,
            );
          const wanted = task.attempts.filter((a) => req.attempt === 0 || a.number === req.attempt);
          if (wanted.length === 0 && req.attempt > 0 && (!req.follow || TERMINAL_TASK.has(task.status)))
            throw ApiError.notFound(`step ${req.stepId} of run ${req.runId} has no attempt ${req.attempt}`);
          if (task.attempts.length === 0 && TERMINAL_TASK.has(task.status))
            throw ApiError.notFound(
              `step ${req.stepId} of run ${req.runId} never ran (${task.status}), so it has no log`,
            );
          if (task.attempts.length === 0 && !req.follow)
            throw ApiError.notFound(
              `step ${req.stepId} of run ${req.runId} has not started (${task.status}), so it has no log yet; ` +
                "follow to wait for it",
            );
          let open = false;
          for (const attempt of wanted) {
            let cursor = cursors.get(attempt.number);
            if (cursor === undefined) cursors.set(attempt.number, (cursor = newLogCursor()));
            const ended = !ACTIVE_ATTEMPT.has(attempt.status);
            const prefix = attemptPrefix(req.runId, step.step, attempt.number, step.kind, step.elementIndex);
            const lines = await wrap(() => readNewLogLines(store, prefix, attempt.number, cursor));
            for (const batch of batches(lines)) {
              if (signal.aborted) return;
              await send(create(GetTaskLogsResponseSchema, { lines: batch }));
              sent += batch.length;
            }
            if (ended) {
              // No logs.jsonl and no chunk: a log of no line (nothing was stored), or a lost one.
              if (!cursor.complete && cursor.chunks === 0 && !reportedEmptyLog(attempt))
                missing.set(attempt.number, { attempt, key: `${prefix}${LOGS_OBJECT}` });
              // An ended attempt without logs.jsonl (its executor died) has nothing more to come either.
              cursor.complete = true;
            } else open = true;
            // Following one attempt at a time keeps the lines of attempts in order.
            if (!ended && req.follow) break;
          }
          if (!req.follow) return end();
          const done = !open && (req.attempt > 0 ? wanted.length > 0 : TERMINAL_TASK.has(task.status));
          if (done) return end();
          if (!(await pause(pollMs, signal))) return;
        }
      },
    ),

    getArtifact: serverStream(
      async (
        req: GetArtifactRequest,
        send: (res: GetArtifactResponse) => Promise<void>,
        signal: AbortSignal,
      ) => {
        if (req.key === "") throw ApiError.invalid("key", "an artifact key is required");
        await wrap(() => Promise.resolve(checkKey(req.key)));
        if (!req.key.startsWith("runs/")) throw ApiError.invalid("key", "not the key of a run's artifact");
        const ref = await wrap(() => store.stat(req.key));
        if (ref === undefined) throw ApiError.notFound(`no artifact ${req.key}`);
        if (req.presign) {
          const url = await wrap(() => store.presign(req.key, ttl));
          if (url !== undefined) {
            await send(
              create(GetArtifactResponseSchema, {
                artifact: ref,
                url: url.url,
                urlExpireTime: timestampFromDate(url.expiresAt),
              }),
            );
            return;
          }
        }
        await send(create(GetArtifactResponseSchema, { artifact: ref }));
        const content = await wrap(() => store.get(req.key));
        const hash = createHash("sha256");
        let pending: Buffer[] = [];
        let held = 0;
        const flush = async (): Promise<void> => {
          const chunk = Buffer.concat(pending);
          pending = [];
          held = 0;
          await send(create(GetArtifactResponseSchema, { chunk }));
        };
        try {
          for await (const piece of content) {
            if (signal.aborted) return;
            let buf = piece as Buffer;
            hash.update(buf);
            while (held + buf.length >= chunkBytes) {
              const take = chunkBytes - held;
              pending.push(buf.subarray(0, take));
              held += take;
              buf = buf.subarray(take);
              await flush();
            }
            if (buf.length > 0) {
              pending.push(buf);
              held += buf.length;
            }
          }
          if (held > 0) await flush();
        } finally {
          content.destroy();
        }
        // The object changed or rotted since it was stored: say so rather than end as if whole.
        if (ref.sha256 !== "" && hash.digest("hex") !== ref.sha256)
          throw new ApiError(Code.DATA_LOSS, `artifact ${req.key} does not match its SHA-256`);
      },
    ),
  };
}
