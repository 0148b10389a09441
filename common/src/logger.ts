/** The one structured logger of every service (pino, JSON lines on stdout). */
import { pino, type Logger } from "pino";
import type { LogLevel } from "./config.js";

export type { Logger } from "pino";

/** Creates the root logger of a service. Secrets are redacted wherever they appear in fields. */
export function createLogger(service: string, level: LogLevel): Logger {
  return pino({
    name: service,
    level,
    base: { service },
    redact: {
      paths: ["token", "authorization", "*.token", "*.authorization", "headers.authorization"],
      censor: "[redacted]",
    },
  });
}

/**
 * Warnings a dependency is known to raise for nothing a user can act on, logged at debug only.
 * `TimeoutNegativeWarning`: kafkajs 2.2.4 schedules its request-queue check with `setTimeout` at a
 * negative delay when it was never throttled; Node 23+ warns and runs it after 1 ms, as before.
 */
const BENIGN_WARNINGS = new Set(["TimeoutNegativeWarning"]);

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
    if (BENIGN_WARNINGS.has(warning.name)) log.debug(fields, "process warning (known, harmless)");
    else log.warn(fields, "process warning");
  });
}
