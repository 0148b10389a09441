/**
 * ExecutorService.Session: one bidirectional stream per executor. The first message must be
 * Attach (an invalid or unauthorized one ends the stream with a status naming the field); with
 * authentication on, the executor id must be one the session's token may act as. Afterwards every
 * report is judged by the engine, and a report that is not accepted, malformed ones included (a
 * Value with no JSON form, a field PostgreSQL cannot store), is answered with Rejected: the stream
 * stays open and nothing changes. A message that makes the handler fail unexpectedly ends only its
 * session, with INTERNAL, and is logged; no message ends the process.
 */
import { randomUUID } from "node:crypto";
import { create, toJson, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import {
  authorizeExecutorId,
  checkJsonForm,
  isAcknowledgedReport,
  isAuthError,
  isJsonValueError,
  isUndecodable,
  nulCharacterPath,
  replaceNulCharacters,
  valueToJsonChecked,
  type Logger,
  type UndecodableMessage,
} from "@nexusflow/common";
import {
  ArtifactRefSchema,
  LogRefSchema,
  SessionRequestSchema,
  SessionResponseSchema,
  type LeaseKey,
  type SessionRequest,
  type SessionResponse,
} from "@nexusflow/gen";
import type { Engine, Rejection } from "../engine/engine.js";
import type { SessionHandle } from "../engine/dispatcher.js";
import { callPrincipal } from "./auth.js";

const TYPE_NAME = /^[a-z][a-z0-9._-]{0,62}$/;

/** Field numbers of the SessionRequest cases that are reports (see isAcknowledgedReport). */
const REPORT_FIELDS: ReadonlySet<number | undefined> = new Set([
  SessionRequestSchema.field.completed.number,
  SessionRequestSchema.field.failed.number,
  SessionRequestSchema.field.release.number,
]);

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
}

/** The ExecutorService implementation for grpc-js. */
export function executorService(
  engine: Engine,
  log: Logger,
  options: ExecutorServiceOptions = {},
): grpc.UntypedServiceImplementation {
  const authenticated = options.authenticated ?? false;
  return {
    session: (call: grpc.ServerDuplexStream<SessionRequest, SessionResponse>) => {
      let session: SessionHandle | undefined;
      let ended = false;
      const send = (m: SessionResponse): void => {
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
              () => undefined,
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
          if (a.executorId === "" || a.executorId.length > 200 || a.executorId.includes("\u0000")) {
            fail(
              grpc.status.INVALID_ARGUMENT,
              "attach.executor_id: required, at most 200 characters, no NUL character",
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
            credit: 0,
            leases: new Set(),
            draining: false,
            lastSeen: performance.now(),
            send,
            close: (reason) => fail(grpc.status.UNAVAILABLE, reason),
          };
          const revoked = engine.attach(session, a.heldLeases);
          send(
            create(SessionResponseSchema, {
              message: {
                case: "attachAck",
                value: {
                  sessionId: session.id,
                  heartbeatIntervalMs: engine.heartbeatIntervalMs,
                  sessionTimeoutMs: engine.sessionTimeoutMs,
                  revoked,
                },
              },
            }),
          );
          return;
        }
        session.lastSeen = performance.now();
        let r: Rejection | null = null;
        let key: LeaseKey | undefined;
        // A report's fields are converted before the engine sees it: one with no JSON form (a
        // Value with no kind, NaN, ±Infinity) is rejected naming it, and nothing changes.
        try {
          switch (m.case) {
            case "attach":
              r = { code: "FAILED_PRECONDITION", message: "already attached" };
              break;
            case "credit":
              r = engine.onCredit(session, m.value.n);
              break;
            case "started":
              key = m.value.key;
              r = engine.onStarted(session, key);
              break;
            case "heartbeat":
              key = m.value.key;
              if (key !== undefined) r = engine.onHeartbeat(session, key);
              break;
            case "completed": {
              key = m.value.key;
              const output = valueToJsonChecked(m.value.output, "completed.output");
              const outputRef = reportJson(ArtifactRefSchema, m.value.outputRef, "completed.output_ref");
              const logs = reportJson(LogRefSchema, m.value.logs, "completed.logs");
              r =
                unstorable({ output, output_ref: outputRef, logs }, "completed") ??
                engine.onCompleted(session, key, output, outputRef, logs);
              break;
            }
            case "failed": {
              key = m.value.key;
              const e = m.value.error;
              const logs = reportJson(LogRefSchema, m.value.logs, "failed.logs");
              const details =
                e?.details === undefined ? undefined : valueToJsonChecked(e.details, "failed.error.details");
              // An error's text is kept, readable, even when it holds a NUL (a command's stderr may).
              r =
                unstorable({ logs }, "failed") ??
                engine.onFailed(
                  session,
                  key,
                  {
                    type: replaceNulCharacters(e?.type || TaskErrorType.UNKNOWN),
                    message: replaceNulCharacters(e?.message ?? ""),
                    retryable: e?.retryable ?? true,
                    ...(details === undefined ? {} : { details: replaceNulCharacters(details) }),
                  },
                  Number(m.value.retryAfterMs),
                  logs,
                );
              break;
            }
            case "drain": {
              const outstanding = engine.onDrain(session);
              send(create(SessionResponseSchema, { message: { case: "drainAck", value: { outstanding } } }));
              break;
            }
            case "release":
              key = m.value.key;
              r = engine.onRelease(session, key, replaceNulCharacters(m.value.reason));
              break;
            case "pong":
              break;
            default:
              r = { code: "INVALID_ARGUMENT", message: "empty or unknown session message" };
          }
        } catch (e) {
          if (!isJsonValueError(e)) throw e;
          r = { code: "INVALID_ARGUMENT", message: e.message };
        }
        if (r !== null) reject(key, r);
        if (isAcknowledgedReport(m)) {
          reports++;
          acknowledge();
        }
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
        reject(undefined, { code: "INVALID_ARGUMENT", message });
        if (REPORT_FIELDS.has(msg.firstFieldNumber)) {
          reports++;
          acknowledge();
        }
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
