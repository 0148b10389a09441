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
