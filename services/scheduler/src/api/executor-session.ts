/**
 * ExecutorService.Session: one bidirectional stream per executor. The first message must be
 * Attach (an invalid or unauthorized one ends the stream with a status naming the field); with
 * authentication on, the executor id must be one the session's token may act as. Afterwards every
 * report is judged by the engine, and a report that is not accepted, malformed ones included (a
 * Value with no JSON form, a field PostgreSQL cannot store), is answered with Rejected: the stream
 * stays open and nothing changes. A message that makes the handler fail unexpectedly ends only its
 * session, with INTERNAL, and is logged; no message ends the process.
 *
 * The Attach names the session protocol version (none: version 1); one this scheduler does not
 * speak ends the stream with FAILED_PRECONDITION naming both. A Reports message (version 2) is
 * handled item by item, in order, as if each item had come alone; leases go out in LeaseBatch
 * frames, already encoded, to sessions of version 2 and later only (see lease-pump.ts). The
 * session's version goes with its reports to the rules: from version 3 a map element's keys must
 * be in the element's own folder; below it the step's folder is taken too (core/reports.ts).
 */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";
import {
  create,
  fromBinary,
  toJson,
  type DescMessage,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import {
  MAX_TASK_ERROR_MESSAGE_CHARS,
  MAX_TASK_ERROR_TYPE_CHARS,
  TaskErrorType,
} from "@nexusflow/common/task-error-types";
import {
  MAX_BATCH_ITEMS,
  MIN_SESSION_PROTOCOL_VERSION,
  SESSION_PROTOCOL_VERSION,
  UndecodableMessage,
  acknowledgedReports,
  authorizeExecutorId,
  boundedText,
  checkJsonForm,
  isAuthError,
  isJsonValueError,
  isUndecodable,
  nulCharacterPath,
  replaceNulCharacters,
  serviceDefinition,
  valueToJsonChecked,
  versionRefusal,
  type Logger,
} from "@nexusflow/common";
import {
  ArtifactRefSchema,
  type Attach,
  ExecutorService,
  LogRefSchema,
  ReportSchema,
  SessionRequestSchema,
  SessionResponseSchema,
  type LeaseKey,
  type Report,
  type SessionRequest,
  type SessionResponse,
} from "@nexusflow/gen";
import { isPartitionFencedError } from "../cluster/partitioning.js";
import { ownHeldLeases } from "../core/sessions.js";
import type { Engine, Rejection } from "../engine/engine.js";
import type { SessionHandle } from "../engine/dispatcher.js";
import { callPrincipal } from "./auth.js";

const TYPE_NAME = /^[a-z][a-z0-9._-]{0,62}$/;
/**
 * Most task types one Attach advertises: each is a queue the dispatcher weighs and a line of every
 * ListExecutors answer (an Attach of 60,000 made one session of ~4 MiB there).
 */
export const MAX_ATTACH_TASK_TYPES = 1000;

/** Bounds of what an Attach says of the executor (labels, version), as ListExecutors shows it. */
const ADVERTISED_LABELS = 32;
const ADVERTISED_TEXT = 256;

/**
 * What ListExecutors shows of an Attach: slots (0 when negative), at most 32 labels and texts of at
 * most 256 characters. Informational only, so an executor saying too much is cut short, not refused.
 */
function advertisedBy(a: Attach): NonNullable<SessionHandle["advertised"]> {
  const cut = (text: string): string =>
    text.length > ADVERTISED_TEXT ? text.slice(0, ADVERTISED_TEXT) : text;
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(a.labels)
    .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
    .slice(0, ADVERTISED_LABELS))
    labels[cut(k)] = cut(v);
  return { slots: Math.max(0, a.slots), labels, version: cut(a.version) };
}

/** Field numbers of the SessionRequest cases that are reports (see isAcknowledgedReport). */
const REPORT_FIELDS: ReadonlySet<number | undefined> = new Set([
  SessionRequestSchema.field.completed.number,
  SessionRequestSchema.field.failed.number,
  SessionRequestSchema.field.release.number,
]);
/** Field numbers of the Report (a Reports item) cases that are reports Acked counts. */
const REPORT_ITEM_FIELDS: ReadonlySet<number | undefined> = new Set([
  ReportSchema.field.completed.number,
  ReportSchema.field.failed.number,
  ReportSchema.field.release.number,
]);
const REPORTS_FIELD = SessionRequestSchema.field.reports.number;

/** Whether Acked counts a Reports item (a Completed, Failed or Release, read or not). */
function countsForAck(item: Report | UndecodableMessage): boolean {
  if (isUndecodable(item)) return REPORT_ITEM_FIELDS.has(item.firstFieldNumber);
  const c = item.report.case;
  return c === "completed" || c === "failed" || c === "release";
}

/** A report about one lease: a single SessionRequest's, or a Reports item's (the same messages). */
type LeaseReport = Exclude<Report["report"], { case: undefined }>;

/**
 * The items of a Reports message that could not be decoded as a whole (an item nested deeper
 * than protobuf decodes, a malformed one), each decoded alone, so that the others are handled and
 * every item is counted as it would be alone; undefined when the bytes are not a SessionRequest
 * holding only `reports` (it is then refused as one message).
 */
function reportItemsOf(bytes: Uint8Array): (Report | UndecodableMessage)[] | undefined {
  try {
    const outer = new BinaryReader(bytes);
    const items: (Report | UndecodableMessage)[] = [];
    while (outer.pos < outer.len) {
      const [field, wireType] = outer.tag();
      if (field !== REPORTS_FIELD || wireType !== WireType.LengthDelimited) return undefined;
      const inner = new BinaryReader(outer.bytes());
      while (inner.pos < inner.len) {
        const [no, type] = inner.tag();
        if (no !== 1 || type !== WireType.LengthDelimited) {
          inner.skip(type, no);
          continue;
        }
        const item = inner.bytes();
        try {
          items.push(fromBinary(ReportSchema, item));
        } catch (e) {
          items.push(new UndecodableMessage(ReportSchema.typeName, item, e));
        }
      }
    }
    return items;
  } catch {
    return undefined;
  }
}

/**
 * The ExecutorService definition for grpc-js, whose Session writes a SessionResponse given already
 * encoded (a Uint8Array: the lease pump encodes each lease once, into its frame) as it is.
 */
export function executorServiceDefinition(): grpc.ServiceDefinition {
  const def = serviceDefinition(ExecutorService);
  const session = def.session as grpc.MethodDefinition<unknown, unknown>;
  const serialize = session.responseSerialize;
  return {
    ...def,
    session: {
      ...session,
      responseSerialize: (m: unknown) =>
        m instanceof Uint8Array ? Buffer.from(m.buffer, m.byteOffset, m.byteLength) : serialize(m),
    },
  };
}

/**
 * How long a session collects reports before acknowledging them (Acked, once their changes are
 * committed): one message per session per interval at most, whatever the report rate.
 */
const ACK_INTERVAL_MS = 100;

/**
 * A report field holding U+0000, which PostgreSQL cannot store, as a rejection naming it
 * (`completed.output.a[1]`); null when every field can be stored.
 */
function unstorable(fields: Record<string, unknown>, message: string): Rejection | null {
  const at = nulCharacterPath(fields, message);
  return at === undefined
    ? null
    : {
        code: "INVALID_ARGUMENT",
        message: `${at}: contains a NUL character (U+0000), which cannot be stored`,
      };
}

/**
 * A message field of a report as its proto3 JSON, stored as jsonb (its int64 fields are bigints
 * JSON.stringify refuses); null when absent. Throws JsonValueError naming what has no JSON form.
 */
function reportJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc> | undefined,
  path: string,
): JsonValue {
  if (message === undefined) return null;
  checkJsonForm(schema, message, path);
  return toJson(schema, message);
}

/** Options of {@link executorService}. */
export interface ExecutorServiceOptions {
  /**
   * Whether calls are authenticated (the auth interceptor runs): an Attach is then refused
   * unless its executor id is one the call's token may act as (PERMISSION_DENIED naming it).
   * Without authentication any executor id is accepted.
   * @default false
   */
  authenticated?: boolean | undefined;
  /**
   * This replica's id (PartitionLeases.replicaId), sent in every AttachAck so that an executor
   * keeps one session per replica.
   * @default "" (a scheduler without partition leases)
   */
  replicaId?: string | undefined;
}

/** The ExecutorService implementation for grpc-js. */
export function executorService(
  engine: Engine,
  log: Logger,
  options: ExecutorServiceOptions = {},
): grpc.UntypedServiceImplementation {
  const authenticated = options.authenticated ?? false;
  const replicaId = options.replicaId ?? "";
  // A lease of a partition being loaded is judged once its runs are here (its task may be one).
  // One of a partition this replica is not sure it still holds is reclaimed, never revoked or
  // expired (Engine.attach).
  const owns = (runId: string): boolean => engine.partitions.loaded(runId);
  return {
    // Writes a SessionResponse, or one already encoded (see executorServiceDefinition).
    session: (call: grpc.ServerDuplexStream<SessionRequest, SessionResponse | Uint8Array>) => {
      let session: SessionHandle | undefined;
      let ended = false;
      const send = (m: SessionResponse | Uint8Array): void => {
        if (!ended && !call.writableEnded && !call.destroyed) call.write(m);
      };
      const fail = (code: grpc.status, details: string): void => {
        if (ended) return;
        ended = true;
        // Well-formed: grpc-js's encodeURI of the details throws on a lone surrogate.
        call.emit("error", { code, details: details.toWellFormed(), metadata: new grpc.Metadata() });
      };
      const reject = (key: LeaseKey | undefined, r: Rejection): void => {
        log.warn(
          {
            session_id: session?.id,
            executor_id: session?.executorId,
            code: r.code,
            task_run_id: key?.taskRunId,
          },
          `report rejected: ${r.message}`,
        );
        send(
          create(SessionResponseSchema, {
            message: {
              case: "rejected",
              value: { ...(key === undefined ? {} : { key }), code: r.code, message: r.message },
            },
          }),
        );
      };
      // Reports (Completed, Failed, Release) received, and how many of them Acked has covered.
      let reports = 0;
      let acked = 0;
      let ackTimer: NodeJS.Timeout | undefined;
      // Partitions lost when the first report not acknowledged yet came (engine/partition-load.ts):
      // after a loss, a report of a run of theirs may have been dropped uncommitted, so none of
      // those reports is acknowledged; the session ends and the executor sends them again.
      let lossesSeen = 0;
      const partitionMoved = (): void =>
        fail(grpc.status.UNAVAILABLE, "a partition of this session's runs moved: attach again");
      const acknowledge = (): void => {
        if (ackTimer !== undefined || ended) return;
        ackTimer = setTimeout(() => {
          const through = reports;
          engine
            .whenCommitted()
            .then(
              () => {
                ackTimer = undefined;
                if (ended) return;
                if (engine.partitions.losses !== lossesSeen) {
                  partitionMoved();
                  return;
                }
                if (through > acked) {
                  acked = through;
                  send(
                    create(SessionResponseSchema, {
                      message: { case: "acked", value: { through: BigInt(through) } },
                    }),
                  );
                }
                if (reports > acked) acknowledge();
              },
              // The writer closed (shutdown): unacknowledged reports are sent again to the next scheduler.
              // Refused by the fence (a partition moved, docs/replicas.md): reports of its runs were
              // dropped, so none since the last Acked can be acknowledged; the executor attaches
              // again and sends them again (those of runs no longer here are rejected).
              (e: unknown) => {
                if (!isPartitionFencedError(e)) return;
                ackTimer = undefined;
                partitionMoved();
              },
            )
            .catch((e: unknown) =>
              log.error({ err: e, session_id: session?.id }, "acknowledging reports failed"),
            );
        }, ACK_INTERVAL_MS);
      };
      const finish = (): void => {
        ended = true;
        clearTimeout(ackTimer);
        try {
          if (session !== undefined) engine.detachSession(session);
        } catch (e) {
          // Runs in a stream event listener, where a throw would end the process.
          log.error({ err: e, session_id: session?.id }, "detaching a session failed");
        }
      };
      call.on("error", () => finish());
      call.on("end", () => {
        finish();
        if (!call.writableEnded) call.end();
      });
      call.on("close", () => finish());
      const handle = (msg: SessionRequest | UndecodableMessage): void => {
        if (isUndecodable(msg)) {
          refuseUndecodable(msg);
          return;
        }
        const m = msg.message;
        if (session === undefined) {
          if (m.case !== "attach") {
            fail(grpc.status.FAILED_PRECONDITION, "the first message of a session must be attach");
            return;
          }
          const a = m.value;
          if (a.protocolVersion < 0) {
            fail(
              grpc.status.INVALID_ARGUMENT,
              `attach.protocol_version: must be positive (or unset for version 1), got ${a.protocolVersion}`,
            );
            return;
          }
          const protocolVersion = a.protocolVersion === 0 ? MIN_SESSION_PROTOCOL_VERSION : a.protocolVersion;
          if (protocolVersion < MIN_SESSION_PROTOCOL_VERSION || protocolVersion > SESSION_PROTOCOL_VERSION) {
            // Executors read the versions spoken here from it, and attach again with one of them.
            fail(grpc.status.FAILED_PRECONDITION, versionRefusal(protocolVersion));
            return;
          }
          if (a.executorId === "" || a.executorId.length > 200 || a.executorId.includes("\u0000")) {
            fail(
              grpc.status.INVALID_ARGUMENT,
              "attach.executor_id: required, at most 200 characters, no NUL character",
            );
            return;
          }
          if (a.taskTypes.length > MAX_ATTACH_TASK_TYPES) {
            fail(
              grpc.status.INVALID_ARGUMENT,
              `attach.task_types: at most ${MAX_ATTACH_TASK_TYPES} task types, got ${a.taskTypes.length}`,
            );
            return;
          }
          const bad = a.taskTypes.find((t) => !TYPE_NAME.test(t));
          if (a.taskTypes.length === 0 || bad !== undefined) {
            fail(
              grpc.status.INVALID_ARGUMENT,
              bad === undefined
                ? "attach.task_types: at least one task type"
                : `attach.task_types: invalid type ${JSON.stringify(bad)}`,
            );
            return;
          }
          if (authenticated) {
            const principal = callPrincipal(call.metadata);
            if (principal === undefined) {
              fail(grpc.status.UNAUTHENTICATED, "attach: the session carries no verified token");
              return;
            }
            try {
              authorizeExecutorId(principal, a.executorId);
            } catch (e) {
              if (!isAuthError(e)) throw e;
              log.warn({ executor_id: a.executorId, subject: principal.subject }, "attach refused");
              fail(grpc.status.PERMISSION_DENIED, `attach.executor_id: ${e.message}`);
              return;
            }
          }
          if (engine.state !== "RUNNING") {
            fail(grpc.status.UNAVAILABLE, `the scheduler is ${engine.state.toLowerCase()}`);
            return;
          }
          session = {
            id: randomUUID(),
            executorId: a.executorId,
            types: new Set(a.taskTypes),
            protocolVersion,
            credit: 0,
            leases: new Set(),
            draining: false,
            lastSeen: performance.now(),
            attachedAt: Date.now(),
            advertised: advertisedBy(a),
            send,
            sendFrame: send,
            close: (reason) => fail(grpc.status.UNAVAILABLE, reason),
          };
          // Leases of other replicas' runs (listed for their sessions there) are not judged here.
          const revoked = engine.attach(session, ownHeldLeases(a.heldLeases, owns));
          send(
            create(SessionResponseSchema, {
              message: {
                case: "attachAck",
                value: {
                  sessionId: session.id,
                  heartbeatIntervalMs: engine.heartbeatIntervalMs,
                  sessionTimeoutMs: engine.sessionTimeoutMs,
                  revoked,
                  protocolVersion,
                  replicaId,
                },
              },
            }),
          );
          return;
        }
        session.lastSeen = performance.now();
        switch (m.case) {
          case "attach":
            reject(undefined, { code: "FAILED_PRECONDITION", message: "already attached" });
            return;
          case "credit": {
            if (m.value.withdraw !== 0) {
              if (m.value.withdraw < 0 || m.value.n !== 0) {
                reject(undefined, {
                  code: "INVALID_ARGUMENT",
                  message: `credit.withdraw: must be positive, with n 0; got withdraw ${m.value.withdraw}, n ${m.value.n}`,
                });
                return;
              }
              // Credit not spent yet is given back; leases already sent stay sent.
              session.credit = Math.max(0, session.credit - m.value.withdraw);
              return;
            }
            const r = engine.onCredit(session, m.value.n);
            if (r !== null) reject(undefined, r);
            return;
          }
          case "drain": {
            const outstanding = engine.onDrain(session);
            send(create(SessionResponseSchema, { message: { case: "drainAck", value: { outstanding } } }));
            return;
          }
          case "pong":
            engine.onPong(session, m.value.nonce, m.value.held?.keys);
            return;
          case "reports":
            onReports(session, m.value.items);
            return;
          case "started":
          case "heartbeat":
          case "completed":
          case "failed":
          case "release":
            onReport(session, m, "");
            counted(acknowledgedReports(m));
            return;
          default:
            reject(undefined, { code: "INVALID_ARGUMENT", message: "empty or unknown session message" });
        }
      };
      /** Counts `n` reports for Acked (see acknowledgedReports), and acknowledges them once committed. */
      const counted = (n: number): void => {
        if (n === 0) return;
        if (reports === acked) lossesSeen = engine.partitions.losses;
        reports += n;
        acknowledge();
      };
      /**
       * Judges one report and rejects it if it is not accepted. `at` is where it sits in a batch
       * (`reports.items[2]`; "" for a message of its own): field paths start with it, and so does
       * the message of any other rejection (`reports.items[2]: stale lease`).
       */
      const onReport = (s: SessionHandle, m: LeaseReport, at: string): void => {
        const key = m.value.key;
        const path = at === "" ? "" : `${at}.`;
        let r: Rejection | null = null;
        // A report's fields are converted before the engine sees it: one with no JSON form (a
        // Value with no kind, NaN, ±Infinity) is rejected naming it, and nothing changes.
        try {
          switch (m.case) {
            case "started":
              r = engine.onStarted(s, key);
              break;
            case "heartbeat":
              if (key !== undefined) r = engine.onHeartbeat(s, key);
              break;
            case "completed": {
              const output = valueToJsonChecked(m.value.output, `${path}completed.output`);
              const outputRef = reportJson(
                ArtifactRefSchema,
                m.value.outputRef,
                `${path}completed.output_ref`,
              );
              const logs = reportJson(LogRefSchema, m.value.logs, `${path}completed.logs`);
              const bad = unstorable({ output, output_ref: outputRef, logs }, `${path}completed`);
              if (bad !== null) {
                reject(key, bad);
                return;
              }
              r = engine.onCompleted(s, key, output, outputRef, logs);
              break;
            }
            case "failed": {
              const e = m.value.error;
              const logs = reportJson(LogRefSchema, m.value.logs, `${path}failed.logs`);
              const details =
                e?.details === undefined
                  ? undefined
                  : valueToJsonChecked(e.details, `${path}failed.error.details`);
              const bad = unstorable({ logs }, `${path}failed`);
              if (bad !== null) {
                reject(key, bad);
                return;
              }
              // An error's text is kept, readable, even when it holds a NUL (a command's stderr may).
              r = engine.onFailed(
                s,
                key,
                {
                  type: boundedText(
                    replaceNulCharacters(e?.type || TaskErrorType.UNKNOWN),
                    MAX_TASK_ERROR_TYPE_CHARS,
                  ),
                  message: boundedText(replaceNulCharacters(e?.message ?? ""), MAX_TASK_ERROR_MESSAGE_CHARS),
                  retryable: e?.retryable ?? true,
                  ...(details === undefined ? {} : { details: replaceNulCharacters(details) }),
                },
                Number(m.value.retryAfterMs),
                logs,
                m.value.pauseKeyUntil === undefined ? 0 : timestampMs(m.value.pauseKeyUntil),
              );
              break;
            }
            case "release":
              r = engine.onRelease(
                s,
                key,
                boundedText(replaceNulCharacters(m.value.reason), MAX_TASK_ERROR_MESSAGE_CHARS),
              );
              break;
          }
        } catch (e) {
          if (!isJsonValueError(e)) throw e;
          // Its message starts with the field's path, `at` included.
          reject(key, { code: "INVALID_ARGUMENT", message: e.message });
          return;
        }
        if (r !== null) reject(key, at === "" ? r : { code: r.code, message: `${at}: ${r.message}` });
      };
      /**
       * The items of a Reports message (each decoded, or refused alone when it could not be), one
       * by one, in order, each as if it had come alone, and counted as such for Acked.
       */
      const onReports = (s: SessionHandle, items: readonly (Report | UndecodableMessage)[]): void => {
        if (items.length === 0 || items.length > MAX_BATCH_ITEMS) {
          reject(undefined, {
            code: "INVALID_ARGUMENT",
            message:
              items.length === 0
                ? "reports.items: a Reports message needs at least one item"
                : `reports.items: ${items.length} items, more than the ${MAX_BATCH_ITEMS} a Reports message may hold`,
          });
          // Counted all the same, as the executor counts what it sent.
          counted(items.filter(countsForAck).length);
          return;
        }
        let n = 0;
        for (const [i, item] of items.entries()) {
          const at = `reports.items[${i}]`;
          if (countsForAck(item)) n++;
          if (isUndecodable(item)) {
            reject(undefined, { code: "INVALID_ARGUMENT", message: `${at}: ${item.toApiError().message}` });
            continue;
          }
          const report = item.report;
          if (report.case === undefined) {
            reject(undefined, { code: "INVALID_ARGUMENT", message: `${at}: no report set` });
            continue;
          }
          onReport(s, report, at);
        }
        counted(n);
      };
      // A message that could not be decoded (e.g. nested deeper than protobuf decodes) is refused in
      // its turn, like any malformed one; counted as a report when its oneof case is one, so that
      // Acked stays in step with the executor's count.
      const refuseUndecodable = (msg: UndecodableMessage): void => {
        const { message } = msg.toApiError();
        if (session === undefined) {
          fail(grpc.status.INVALID_ARGUMENT, message);
          return;
        }
        session.lastSeen = performance.now();
        if (msg.firstFieldNumber === REPORTS_FIELD) {
          // A Reports message with an item that cannot be read: every other item is handled.
          const items = reportItemsOf(msg.bytes);
          if (items !== undefined) {
            onReports(session, items);
            return;
          }
        }
        reject(undefined, { code: "INVALID_ARGUMENT", message });
        if (REPORT_FIELDS.has(msg.firstFieldNumber)) counted(1);
      };
      // A throw in a grpc-js 'data' listener escapes to the process: whatever a message makes the
      // handler fail with ends this session only (its leases wait for a reconnect, as on any loss).
      call.on("data", (msg: SessionRequest | UndecodableMessage) => {
        if (ended) return;
        try {
          handle(msg);
        } catch (e) {
          log.error(
            {
              err: e,
              session_id: session?.id,
              executor_id: session?.executorId,
              message: isUndecodable(msg) ? "undecodable" : msg.message.case,
            },
            "session message failed; ending the session",
          );
          fail(grpc.status.INTERNAL, "internal error while handling a session message");
        }
      });
    },
  };
}
