/**
 * Test utility: a TaskContext that records what a handler logs, writes and heartbeats, and helpers
 * to wait on conditions instead of sleeping.
 */
import { existsSync, readFileSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { NON_RECORDING_SPAN } from "@nexusflow/common/telemetry";
import { ArtifactRefSchema } from "@nexusflow/gen";
import type { TaskArtifacts, TaskContext, TaskLog } from "./types.js";

/** One `info`/`warn`/`error` call. */
export interface LoggedLine {
  level: "info" | "warn" | "error";
  message: string;
  fields: Record<string, unknown> | undefined;
}

/** One `write` call. */
export interface WrittenChunk {
  stream: "stdout" | "stderr";
  chunk: string;
}

/** A context plus what the handler did with it. */
export interface TestContext {
  ctx: TaskContext;
  /** Aborts `ctx.signal` (with `reason` when given). */
  controller: AbortController;
  lines: LoggedLine[];
  writes: WrittenChunk[];
  heartbeats: unknown[];
  /** Files saved through `ctx.artifacts.put`, by name (streams are not read). */
  artifacts: Map<string, { data: unknown; contentType: string | undefined }>;
  /** Concatenation of everything written to `stream`. */
  written(stream: "stdout" | "stderr"): string;
}

/** Creates a {@link TestContext}; `overrides` replace the identity fields. */
export function createTestContext(
  overrides: Partial<
    Pick<TaskContext, "runId" | "stepId" | "taskRunId" | "attempt" | "taskType" | "deadline">
  > = {},
): TestContext {
  const controller = new AbortController();
  const lines: LoggedLine[] = [];
  const writes: WrittenChunk[] = [];
  const heartbeats: unknown[] = [];
  const artifacts = new Map<string, { data: unknown; contentType: string | undefined }>();
  const taskArtifacts: TaskArtifacts = {
    put: (name, data, options) => {
      artifacts.set(name, { data, contentType: options?.contentType });
      return Promise.resolve(
        create(ArtifactRefSchema, { key: `test/${name}`, name, contentType: options?.contentType ?? "" }),
      );
    },
  };
  const line =
    (level: LoggedLine["level"]) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push({ level, message, fields });
    };
  const log: TaskLog = {
    info: line("info"),
    warn: line("warn"),
    error: line("error"),
    write: (stream, chunk) => {
      writes.push({ stream, chunk });
    },
  };
  const ctx: TaskContext = {
    signal: controller.signal,
    runId: "run-1",
    stepId: "step-1",
    taskRunId: "task-run-1",
    attempt: 1,
    taskType: "test",
    deadline: undefined,
    heartbeat: (progress?: unknown) => {
      heartbeats.push(progress);
    },
    log,
    artifacts: taskArtifacts,
    span: NON_RECORDING_SPAN,
    startSpan: () => NON_RECORDING_SPAN,
    ...overrides,
  };
  return {
    ctx,
    controller,
    lines,
    writes,
    heartbeats,
    artifacts,
    written: (stream) =>
      writes
        .filter((w) => w.stream === stream)
        .map((w) => w.chunk)
        .join(""),
  };
}

/** Polls `condition` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  condition: () => T | undefined | false,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = condition();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/**
 * Whether a process with this pid is running. A zombie counts as gone: it has exited and only
 * waits for its parent (here often PID 1, outside our control) to reap it.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw e;
  }
  try {
    // /proc/<pid>/stat is "pid (comm) state ..."; comm may contain spaces, so split after ")".
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" && existsSync("/proc/self")) return false; // reaped meanwhile
    return true; // no procfs (macOS): kill(pid, 0) succeeding is all we know
  }
}
