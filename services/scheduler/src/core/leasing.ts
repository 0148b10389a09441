/**
 * Leasing: a queued task given to a session becomes LEASED with a new attempt and a higher fencing
 * token; the lease is sent only once that is committed, and only if it still stands then. A task
 * whose input no executor could decode is failed instead of leased (see {@link leaseInputProblem}).
 */
import { ELEMENT_FOLDERS_VERSION, MIN_SESSION_PROTOCOL_VERSION } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  ACTIVE_LEASE,
  type ErrorInfo,
  type RunState,
  type TaskState,
  leasedAttempt,
} from "../model/run-state.js";
import { MAX_TASK_INPUT_BYTES } from "../dag/index.js";
import { advanceCompensation } from "./compensation.js";
import type { Core, SessionLeases } from "./context.js";
import { advance } from "./runs.js";
import { failTerminally, taskKind } from "./transitions.js";

/**
 * Largest task input a lease carries, in bytes as a google.protobuf.Value: the most any payload of
 * the executor protocol carries (the executor's MAX_ENCODED_PAYLOAD_BYTES, 1 MiB below the
 * scheduler's own 16 MiB receive limit). A rendered input could be far larger (a large run input
 * or upstream output templated in more than once): rendering fails INPUT_TOO_LARGE as soon as a
 * lower bound of its size passes this bound (the same constant, dag/template.ts
 * `MAX_TASK_INPUT_BYTES`), and a lease measures what is left exactly.
 */
export const MAX_LEASE_INPUT_BYTES = MAX_TASK_INPUT_BYTES;

/**
 * Deepest nesting of arrays and objects in a task input a lease carries: an executor decodes its
 * SessionResponse with protobuf-es' limit of 100 nested messages, two per level of a Value, which
 * leaves 48 levels (the executor's MAX_PAYLOAD_DEPTH). A deeper lease fails to decode there, which
 * ends the executor's session, again at every reconnection, with every lease sent with it.
 */
export const MAX_LEASE_INPUT_DEPTH = 48;

/** Error type of a task whose rendered input is larger than {@link MAX_LEASE_INPUT_BYTES}. */
export const INPUT_TOO_LARGE = TaskErrorType.INPUT_TOO_LARGE;
/** Error type of a task whose rendered input is nested deeper than {@link MAX_LEASE_INPUT_DEPTH}. */
export const INPUT_TOO_DEEP = TaskErrorType.INPUT_TOO_DEEP;

/** Returned by the walks below once the input is nested deeper than {@link MAX_LEASE_INPUT_DEPTH}. */
const DEEP = -1;
/** Returned by the walks below once their count passes {@link MAX_LEASE_INPUT_BYTES}. */
const PAST = -2;

/** What a walk has counted so far (bytes of what it has seen): it stops once past the bound. */
interface Count {
  bytes: number;
}

/** Adds `bytes` to `count`: `value`, or {@link PAST} once the count passes the bound. */
function add(count: Count, bytes: number, value = bytes): number {
  count.bytes += bytes;
  return count.bytes > MAX_LEASE_INPUT_BYTES ? PAST : value;
}

/**
 * Counts an upper bound of the bytes of `json` as a google.protobuf.Value, `level` levels of arrays
 * and objects down, cheap to take since every lease's input is measured (no UTF-8 lengths, no key
 * lists: a UTF-16 unit is at most 3 bytes of UTF-8, a varint at most 5 bytes); 0, or {@link DEEP},
 * or {@link PAST} (then only the exact count can tell).
 */
function countBound(json: unknown, level: number, count: Count): number {
  if (typeof json === "string") return add(count, 6 + 3 * json.length, 0);
  if (typeof json !== "object" || json === null) return add(count, 9, 0);
  if (level === MAX_LEASE_INPUT_DEPTH) return DEEP;
  if (Array.isArray(json)) {
    for (let i = 0; i < json.length; i++) {
      const item = countBound(json[i], level + 1, count);
      if (item < 0 || add(count, 6) < 0) return item < 0 ? item : PAST;
    }
  } else {
    // Own keys only, in JSON; an inherited one would only raise the bound.
    for (const key in json) {
      const value = countBound((json as Record<string, unknown>)[key], level + 1, count);
      if (value < 0 || add(count, 18 + 3 * key.length) < 0) return value < 0 ? value : PAST;
    }
  }
  return add(count, 6, 0);
}

/** Bytes of `n` as a protobuf varint. */
function varintSize(n: number): number {
  let size = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) size++;
  return size;
}

/**
 * Bytes of the fields of `json` as a google.protobuf.Value (as toBinary writes `jsonToValue(json)`),
 * `level` levels of arrays and objects down, each also counted in `count` as it is known; or
 * {@link DEEP}, or {@link PAST} once the count passes the bound (a huge input is not walked whole).
 */
function valueSize(json: unknown, level: number, count: Count): number {
  switch (typeof json) {
    case "string": {
      const n = Buffer.byteLength(json, "utf8");
      return add(count, 1 + varintSize(n) + n);
    }
    case "number":
      return add(count, 9);
    case "boolean":
      return add(count, 2);
    case "object": {
      if (json === null) return add(count, 2);
      if (level === MAX_LEASE_INPUT_DEPTH) return DEEP;
      let inner = 0;
      if (Array.isArray(json)) {
        for (let i = 0; i < json.length; i++) {
          const item = valueSize(json[i], level + 1, count);
          if (item < 0 || add(count, 1 + varintSize(item)) < 0) return item < 0 ? item : PAST;
          inner += 1 + varintSize(item) + item;
        }
      } else {
        const record = json as Record<string, unknown>;
        for (const key of Object.keys(record)) {
          const value = valueSize(record[key], level + 1, count);
          const k = Buffer.byteLength(key, "utf8");
          const entry = 1 + varintSize(k) + k + 1 + varintSize(value) + value;
          if (value < 0 || add(count, 1 + varintSize(entry) + entry - value) < 0)
            return value < 0 ? value : PAST;
          inner += 1 + varintSize(entry) + entry;
        }
      }
      return add(count, 1 + varintSize(inner), 1 + varintSize(inner) + inner);
    }
    default:
      // Not JSON (no rendered input holds one): counted as the null it would be sent as.
      return add(count, 2);
  }
}

/**
 * Why no executor could take a lease with `input` (the task's rendered input): larger than
 * {@link MAX_LEASE_INPUT_BYTES} as protobuf (INPUT_TOO_LARGE) or nested deeper than
 * {@link MAX_LEASE_INPUT_DEPTH} (INPUT_TOO_DEEP), both terminal; null when it can be sent. An input
 * whose cheap bound fits is not measured further.
 */
export function leaseInputProblem(input: unknown): ErrorInfo | null {
  const bound = countBound(input ?? null, 0, { bytes: 0 });
  if (bound === 0) return null;
  const size = bound === DEEP ? DEEP : valueSize(input ?? null, 0, { bytes: 0 });
  if (size === DEEP)
    return {
      type: INPUT_TOO_DEEP,
      message: `the task's rendered input is nested deeper than ${MAX_LEASE_INPUT_DEPTH} levels of arrays and objects, more than an executor can decode`,
      retryable: false,
    };
  if (size === PAST)
    return {
      type: INPUT_TOO_LARGE,
      message: `the task's rendered input is larger than the ${MAX_LEASE_INPUT_BYTES} bytes (15 MiB) as protobuf that a lease carries to an executor`,
      retryable: false,
    };
  return null;
}

/**
 * Leases `task` of `run` to `session`; returns the fencing token of the lease. A task whose input
 * no executor could take ({@link leaseInputProblem}) is failed for good instead, before any lease is
 * made or sent (it runs nowhere, like a step whose input cannot be rendered), and the run goes on;
 * the token returned then does not stand ({@link leaseStands} is false), so the caller sends nothing
 * and the session gets its slot back.
 */
export function grantLease(
  core: Core,
  run: RunState,
  task: TaskState,
  session: SessionLeases,
  now: Date,
): number {
  const refused = leaseInputProblem(task.input);
  if (refused !== null) {
    failTerminally(core, run, task, refused, now);
    if (task.kind === "COMPENSATION") advanceCompensation(core, run, now);
    else advance(core, run, now);
    core.fx.commit();
    return task.fencingToken;
  }
  task.attempt++;
  task.fencingToken++;
  task.status = "LEASED";
  task.executorId = session.executorId;
  task.sessionId = session.id;
  task.queuedAt = null;
  if (task.elementIndex !== undefined)
    task.elementFolder = (session.protocolVersion ?? MIN_SESSION_PROTOCOL_VERSION) >= ELEMENT_FOLDERS_VERSION;
  const attempt = leasedAttempt(task, session.executorId, now);
  task.current = attempt;
  const startToClose = run.workflow.stepsById.get(task.stepId)?.timeouts.startToCloseMs ?? null;
  task.leaseExpiresAt = startToClose === null ? null : new Date(now.getTime() + startToClose);
  session.leases.add(task.id);
  core.fx.writeTask(task);
  core.fx.writeAttempt(attempt);
  core.fx.event(run, {
    case: "taskLeased",
    value: {
      taskRunId: task.id,
      stepId: task.stepId,
      attempt: task.attempt,
      executorId: session.executorId,
      fencingToken: BigInt(task.fencingToken),
      kind: taskKind(task),
    },
  });
  return task.fencingToken;
}

/**
 * Whether a lease granted to `sessionId` with `token` still stands once committed; one that does
 * not (cancelled, refused or taken back meanwhile) is never sent, and its credit goes back.
 */
export function leaseStands(task: TaskState, sessionId: string, token: number): boolean {
  return task.sessionId === sessionId && task.fencingToken === token && ACTIVE_LEASE.has(task.status);
}
