/** The one structured logger of every service (pino, JSON lines on stdout). */
import { type DestinationStream, pino, type Logger } from "pino";
import type { LogLevel } from "./config.js";
import { type TraceFields, activeTraceFields } from "./telemetry/index.js";

export type { Logger } from "pino";

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /**
   * Adds `trace_id` and `span_id` of the active span to every line written inside one (pass
   * `tracingEnabled()`: with tracing off no span is ever active, and the lookup is skipped).
   * @default false
   */
  traceContext?: boolean;
  /**
   * Where the lines go.
   * @default stdout
   */
  destination?: DestinationStream;
}

/** Marks a logger (and, through the prototype chain, its children) bound to a run's fields. */
const kRunBound = Symbol("nexusflow.runBound");

/**
 * The fields a log line about one task attempt carries, named as every service names them
 * (snake_case, like the trace fields and the metrics' labels): `run_id`, `workflow`, `task` (the
 * step id), `task_run_id`, `attempt` and `task_type`.
 */
export interface RunLogFields {
  run_id: string;
  workflow?: string;
  task?: string;
  task_run_id?: string;
  attempt?: number;
  task_type?: string;
}

/**
 * A child of `parent` whose every line carries `fields`. Its lines get only `trace_id` and
 * `span_id` from the active span, not the span's `run_id` and `task` again (a JSON line with a
 * key twice).
 */
export function runLogger(parent: Logger, fields: RunLogFields): Logger {
  const child = parent.child(fields);
  (child as unknown as Record<symbol, boolean>)[kRunBound] = true;
  return child;
}

/** The pino mixin: the active span's trace fields, without the run's where the logger has them. */
function traceMixin(_line: object, _level: number, logger: Logger): TraceFields {
  return activeTraceFields((logger as unknown as Record<symbol, boolean | undefined>)[kRunBound] !== true);
}

/** Creates the root logger of a service. Secrets are redacted wherever they appear in fields. */
export function createLogger(service: string, level: LogLevel, options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: service,
      level,
      base: { service },
      ...(options.traceContext === true ? { mixin: traceMixin } : {}),
      redact: {
        paths: ["token", "authorization", "*.token", "*.authorization", "headers.authorization"],
        censor: "[redacted]",
      },
    },
    options.destination,
  );
}

/**
 * Routes the process's warnings (`process.emitWarning`: deprecations, negative timeouts, ...)
 * through the service's logger, as JSON lines like every other line it writes, instead of Node's
 * plain text on stderr. Each kind of warning is logged once.
 */
export function logProcessWarnings(log: Logger): void {
  for (const listener of process.listeners("warning")) process.removeListener("warning", listener);
  const seen = new Set<string>();
  process.on("warning", (warning) => {
    const code = (warning as Error & { code?: string }).code;
    const key = `${warning.name}:${code ?? warning.message}`;
    if (seen.has(key)) return;
    seen.add(key);
    const fields = { warning: { name: warning.name, code, message: warning.message } };
    // None is taken as harmless: kafkajs' TimeoutNegativeWarning, once filed so, was a timer
    // re-armed every millisecond (services/scheduler/src/events/kafkajs-request-queue.ts).
    log.warn(fields, "process warning");
  });
}
