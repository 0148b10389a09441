/**
 * ExecutorService.Session: one bidirectional stream per executor. The first message must be
 * Attach; afterwards every report is judged by the engine, and a report that is not accepted is
 * answered with Rejected (the stream stays open, nothing changes).
 */
import { randomUUID } from "node:crypto";
import { create, toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  isAcknowledgedReport,
  nulCharacterPath,
  replaceNulCharacters,
  valueToJson,
  type Logger,
} from "@nexusflow/common";
import {
  ArtifactRefSchema,
  LogRefSchema,
  SessionResponseSchema,
  type LeaseKey,
  type SessionRequest,
  type SessionResponse,
} from "@nexusflow/gen";
import type { Engine, Rejection } from "../engine/engine.js";
import type { SessionHandle } from "../engine/dispatcher.js";

const TYPE_NAME = /^[a-z][a-z0-9._-]{0,62}$/;

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

/** The ExecutorService implementation for grpc-js. */
export function executorService(engine: Engine, log: Logger): grpc.UntypedServiceImplementation {
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
        call.emit("error", { code, details, metadata: new grpc.Metadata() });
      };
      const reject = (key: LeaseKey | undefined, r: Rejection): void => {
        log.warn(
          {
            sessionId: session?.id,
            executorId: session?.executorId,
            code: r.code,
            taskRunId: key?.taskRunId,
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
          engine.whenCommitted().then(
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
          );
        }, ACK_INTERVAL_MS);
      };
      const finish = (): void => {
        if (session !== undefined) engine.detachSession(session);
        ended = true;
        clearTimeout(ackTimer);
      };
      call.on("error", () => finish());
      call.on("end", () => {
        finish();
        if (!call.writableEnded) call.end();
      });
      call.on("close", () => finish());
      call.on("data", (msg: SessionRequest) => {
        if (ended) return;
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
            const output = valueToJson(m.value.output);
            // Stored as JSON (jsonb): the messages' int64 fields are bigints JSON.stringify refuses.
            const outputRef =
              m.value.outputRef === undefined ? null : toJson(ArtifactRefSchema, m.value.outputRef);
            const logs = m.value.logs === undefined ? null : toJson(LogRefSchema, m.value.logs);
            r =
              unstorable({ output, output_ref: outputRef, logs }, "completed") ??
              engine.onCompleted(session, key, output, outputRef, logs);
            break;
          }
          case "failed": {
            key = m.value.key;
            const e = m.value.error;
            const logs = m.value.logs === undefined ? null : toJson(LogRefSchema, m.value.logs);
            // An error's text is kept, readable, even when it holds a NUL (a command's stderr may).
            r =
              unstorable({ logs }, "failed") ??
              engine.onFailed(
                session,
                key,
                {
                  type: replaceNulCharacters(e?.type || "UNKNOWN"),
                  message: replaceNulCharacters(e?.message ?? ""),
                  retryable: e?.retryable ?? true,
                  ...(e?.details === undefined
                    ? {}
                    : { details: replaceNulCharacters(valueToJson(e.details)) }),
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
        if (r !== null) reject(key, r);
        if (isAcknowledgedReport(m)) {
          reports++;
          acknowledge();
        }
      });
    },
  };
}
