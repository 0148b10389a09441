/**
 * `shell`: runs a command as an argv array, without a shell, in its own process group.
 *
 * Input:
 * ```ts
 * {
 *   command: Arg[];                  // argv, e.g. ["pg_dump", "-Fc", "app"]; never a shell string
 *                                    // (for pipes and globs, say so: ["sh", "-c", "a | b"])
 *   env?: Record<string, Arg>;       // merged over the executor's base environment
 *   cwd?: string;                    // relative to the executor's working directory
 *   timeout?: string;                // default "10m"
 *   stdin?: string;                  // written to the command, then closed; without it stdin is empty
 *   retryOnExitCodes?: number[];     // if given, only these exit codes are retryable
 *   terminalExitCodes?: number[];    // these exit codes are never retried
 * }
 * ```
 * `Arg` is a string, or a number or boolean passed as its JSON text (`3`, `true`): a template that
 * is one expression, such as "{{ steps.a.output.exitCode }}", renders to the value's own type.
 *
 * Output: `ShellOutput` (exit code, the tails of stdout and stderr, truncation flags). Output is
 * also streamed to `ctx.log.write` chunk by chunk as it arrives.
 *
 * Errors: exit code != 0 or death by a signal -> EXIT_CODE, `details` = the ShellOutput. It is
 * retryable, so the step's retry policy decides (its `nonRetryableErrors` may list EXIT_CODE),
 * unless the code is in `terminalExitCodes`, or `retryOnExitCodes` is given and does not list it
 * (a death by a signal has no exit code, so it is terminal then). Missing executable -> terminal
 * COMMAND_NOT_FOUND; missing cwd -> terminal CWD_NOT_FOUND; other spawn failures -> terminal
 * SPAWN_FAILED; timeout -> retryable TIMEOUT; abort of `ctx.signal` -> `cancellationError`
 * (CANCELLED unless the reason says otherwise); bad input -> terminal INVALID_INPUT.
 *
 * Lifetime: the command leads a new process group. On abort or timeout the whole group gets
 * SIGTERM, then SIGKILL after the grace period; when the command exits by itself, whatever it
 * left running in its group is terminated the same way. The handler settles only after that, so
 * no process outlives the task. As a last resort the groups still alive when the executor exits
 * get SIGKILL from a `process.on("exit")` hook (nothing helps if the executor is SIGKILLed).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { stat } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { formatDuration } from "@nexusflow/common/duration";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskError, cancellationError } from "./task-error.js";
import { startTimer } from "./timers.js";
import type { TaskContext, TaskHandler } from "./types.js";
import { durationField, invalidInput, kindOf, optionalString, expectObject } from "./validate.js";

/** Options of {@link createShellHandler}. */
export interface ShellHandlerOptions {
  /**
   * Environment the task's `env` is merged over. Pass a filtered copy to keep the executor's own
   * secrets (database URL, S3 keys) away from user commands.
   * @default process.env
   */
  baseEnv?: Readonly<Record<string, string | undefined>>;
  /**
   * How much of each of stdout and stderr is kept for the output (the tail), in characters.
   * @default 1 MiB (1_048_576)
   */
  maxOutputChars?: number;
  /**
   * The most each tail may take in the output, in bytes of its JSON (UTF-8, escapes included):
   * the tail is cut further when its characters take more (text outside ASCII, control
   * characters), so that a command that succeeded is not failed OUTPUT_TOO_LARGE for its output.
   * @default 1 MiB (both tails fit the executor's default payload limit of 3 MiB)
   */
  maxOutputBytes?: number;
  /**
   * Time between SIGTERM and SIGKILL when stopping the process group, in milliseconds.
   * @default 2000
   */
  killGraceMs?: number;
}

/** An argument or environment value; numbers and booleans are passed as their JSON text. */
export type ShellArg = string | number | boolean;

/** Input of the `shell` handler, as written in a workflow definition. */
export interface ShellInput {
  /** argv: the executable (looked up in PATH) and its arguments. */
  command: ShellArg[];
  /** Variables merged over the base environment. */
  env?: Record<string, ShellArg>;
  /** Working directory. */
  cwd?: string;
  /** Duration after which the command is stopped. @default "10m" */
  timeout?: string;
  /** Text written to the command's stdin. */
  stdin?: string;
  /** If given, only these exit codes (0-255) fail retryably; every other failure is terminal. */
  retryOnExitCodes?: number[];
  /** Exit codes (0-255) that fail terminally; must not overlap `retryOnExitCodes`. */
  terminalExitCodes?: number[];
}

/** Output of the `shell` handler (also the `details` of an EXIT_CODE or TIMEOUT failure). */
export interface ShellOutput {
  /** Exit code, or null when the process died from a signal. */
  exitCode: number | null;
  /** The signal that killed the process, if any. */
  signal: string | null;
  /** The last `maxOutputChars` characters of stdout (fewer when they take more than `maxOutputBytes`). */
  stdout: string;
  /** The last `maxOutputChars` characters of stderr (fewer when they take more than `maxOutputBytes`). */
  stderr: string;
  /** Whether stdout was longer than what is kept. */
  stdoutTruncated: boolean;
  /** Whether stderr was longer than what is kept. */
  stderrTruncated: boolean;
}

interface ParsedShellInput {
  command: [string, ...string[]];
  env: Record<string, string> | undefined;
  cwd: string | undefined;
  timeoutMs: number;
  stdin: string | undefined;
  exitCodes: ExitCodeRules;
}

/** Which failed exits are retryable (the step's retry policy still has the last word). */
interface ExitCodeRules {
  /** Only these codes are retryable, when set. */
  retryOn: ReadonlySet<number> | undefined;
  /** Never retryable. */
  terminal: ReadonlySet<number>;
}

interface CompiledShellOptions {
  baseEnv: Readonly<Record<string, string | undefined>>;
  maxOutputChars: number;
  maxOutputBytes: number;
  killGraceMs: number;
}

const INPUT_FIELDS = [
  "command",
  "env",
  "cwd",
  "timeout",
  "stdin",
  "retryOnExitCodes",
  "terminalExitCodes",
] as const;
/** Exit codes a process can report (POSIX keeps the low 8 bits of the status). */
const MAX_EXIT_CODE = 255;
const DEFAULT_TIMEOUT = "10m";
const STDERR_IN_MESSAGE_CHARS = 1000;
const GROUP_POLL_MS = 20;
const AFTER_KILL_WAIT_MS = 1000;

function addShellDefaults(options: ShellHandlerOptions): CompiledShellOptions {
  return {
    baseEnv: options.baseEnv ?? process.env,
    maxOutputChars: options.maxOutputChars ?? 1024 * 1024,
    maxOutputBytes: options.maxOutputBytes ?? 1024 * 1024,
    killGraceMs: options.killGraceMs ?? 2000,
  };
}

/** Creates the `shell` handler. */
export function createShellHandler(options: ShellHandlerOptions = {}): TaskHandler<unknown, ShellOutput> {
  const compiled = addShellDefaults(options);
  return async (rawInput, ctx) => {
    const input = parseShellInput(rawInput);
    if (ctx.signal.aborted) throw cancellationError(ctx.signal);
    if (input.cwd !== undefined) {
      await checkCwd(input.cwd);
      // Aborted while the cwd was checked: its abort event is gone before runCommand listens.
      if (ctx.signal.aborted) throw cancellationError(ctx.signal);
    }
    return runCommand(input, ctx, compiled);
  };
}

function parseShellInput(raw: unknown): ParsedShellInput {
  const record = expectObject(raw, INPUT_FIELDS);
  const command = record["command"];
  if (command === undefined) throw invalidInput("command", "is required");
  if (typeof command === "string") {
    throw invalidInput(
      "command",
      `must be an argv array such as ["ls", "-l"], not a string; commands run without a shell, ` +
        `so to use shell syntax write ["sh", "-c", ${JSON.stringify(command)}]`,
    );
  }
  if (!Array.isArray(command))
    throw invalidInput("command", `expected an array of strings, got ${kindOf(command)}`);
  if (command.length === 0) throw invalidInput("command", "must not be empty");
  const argv = command.map((arg: unknown, i) => argText(arg, `command[${i}]`)) as [string, ...string[]];
  if (argv[0].length === 0) throw invalidInput("command[0]", "must not be empty");

  const env = parseEnv(record["env"]);
  const cwd = optionalString(record, "cwd");
  if (cwd !== undefined && (cwd.length === 0 || cwd.includes("\0")))
    throw invalidInput("cwd", "must be a non-empty path");

  return {
    command: argv,
    env,
    cwd,
    timeoutMs: durationField(record, "timeout", DEFAULT_TIMEOUT),
    stdin: optionalString(record, "stdin"),
    exitCodes: parseExitCodeRules(record),
  };
}

/** An argv or env value as the text the process gets: strings as they are, numbers and booleans as JSON. */
function argText(value: unknown, field: string): string {
  let text: string;
  if (typeof value === "string") text = value;
  else if (typeof value === "boolean" || (typeof value === "number" && Number.isFinite(value)))
    text = JSON.stringify(value);
  else throw invalidInput(field, `expected a string, number or boolean, got ${kindOf(value)}`);
  if (text.includes("\0")) throw invalidInput(field, "must not contain NUL characters");
  return text;
}

function parseEnv(value: unknown): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidInput("env", `expected an object of strings, got ${kindOf(value)}`);
  }
  const env: Record<string, string> = {};
  for (const [name, item] of Object.entries(value as Record<string, unknown>)) {
    if (name.length === 0 || name.includes("=") || name.includes("\0")) {
      throw invalidInput(`env.${name}`, "is not a valid environment variable name");
    }
    env[name] = argText(item, `env.${name}`);
  }
  return env;
}

function parseExitCodeRules(record: Record<string, unknown>): ExitCodeRules {
  const retryOn = exitCodeList(record, "retryOnExitCodes");
  const terminal = exitCodeList(record, "terminalExitCodes") ?? [];
  if (retryOn !== undefined) {
    const i = terminal.findIndex((code) => retryOn.includes(code));
    if (i !== -1) {
      throw invalidInput(
        `terminalExitCodes[${i}]`,
        `exit code ${terminal[i]} is also in retryOnExitCodes; list each code in only one of them`,
      );
    }
  }
  return { retryOn: retryOn === undefined ? undefined : new Set(retryOn), terminal: new Set(terminal) };
}

function exitCodeList(record: Record<string, unknown>, field: string): number[] | undefined {
  const value = record[field];
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) {
    throw invalidInput(
      field,
      `expected an array of exit codes (integers 0-${MAX_EXIT_CODE}), got ${kindOf(value)}`,
    );
  }
  if (value.length > MAX_EXIT_CODE + 1) {
    throw invalidInput(field, `has ${value.length} entries; there are only ${MAX_EXIT_CODE + 1} exit codes`);
  }
  return value.map((code: unknown, i) => {
    if (typeof code !== "number" || !Number.isInteger(code) || code < 0 || code > MAX_EXIT_CODE) {
      const got = typeof code === "number" ? String(code) : kindOf(code);
      throw invalidInput(
        `${field}[${i}]`,
        `expected an exit code (an integer 0-${MAX_EXIT_CODE}), got ${got}`,
      );
    }
    return code;
  });
}

/** spawn reports a missing cwd as ENOENT of the command, so the cwd is checked first. */
async function checkCwd(cwd: string): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(cwd)).isDirectory();
  } catch (e) {
    throw TaskError.terminal(TaskErrorType.CWD_NOT_FOUND, `cwd ${JSON.stringify(cwd)} does not exist`, {
      cause: e,
    });
  }
  if (!isDirectory)
    throw TaskError.terminal(TaskErrorType.CWD_NOT_FOUND, `cwd ${JSON.stringify(cwd)} is not a directory`);
}

function runCommand(
  input: ParsedShellInput,
  ctx: TaskContext,
  options: CompiledShellOptions,
): Promise<ShellOutput> {
  const [file, ...args] = input.command;
  return new Promise<ShellOutput>((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        shell: false,
        detached: true, // a new process group, so the command and its descendants stop together
        stdio: [input.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
        env: input.env === undefined ? options.baseEnv : { ...options.baseEnv, ...input.env },
        ...(input.cwd === undefined ? {} : { cwd: input.cwd }),
        windowsHide: true,
      });
    } catch (e) {
      reject(
        TaskError.terminal(
          TaskErrorType.SPAWN_FAILED,
          `cannot start ${JSON.stringify(file)}: ${errorMessage(e)}`,
          {
            cause: e,
          },
        ),
      );
      return;
    }

    const pgid = child.pid;
    if (pgid !== undefined) trackGroup(pgid);
    const stdout = new OutputTail(options.maxOutputChars, options.maxOutputBytes);
    const stderr = new OutputTail(options.maxOutputChars, options.maxOutputBytes);
    let stopReason: "cancel" | "timeout" | undefined;
    let exited = false;
    let closed = false;
    let settled = false;
    let stopping: Promise<void> | undefined;

    const stopGroup = (): Promise<void> =>
      (stopping ??= pgid === undefined ? Promise.resolve() : terminateGroup(pgid, options.killGraceMs));
    const requestStop = (reason: "cancel" | "timeout"): void => {
      if (exited || stopReason !== undefined) return;
      stopReason = reason;
      void stopGroup();
    };
    const onAbort = (): void => requestStop("cancel");
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) onAbort(); // aborted before it listened: no event comes
    const stopTimer = startTimer(input.timeoutMs, () => requestStop("timeout"));

    const settle = (outcome: () => ShellOutput): void => {
      if (settled) return;
      settled = true;
      stopTimer();
      ctx.signal.removeEventListener("abort", onAbort);
      try {
        resolve(outcome());
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    };

    forward(child.stdout, "stdout", stdout, ctx);
    forward(child.stderr, "stderr", stderr, ctx);
    if (child.stdin !== null) {
      // The command may exit without reading its input; EPIPE then is not the task's failure.
      child.stdin.on("error", () => undefined);
      child.stdin.end(input.stdin);
    }

    child.once("error", (e: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // kill() failures etc.; the process itself is running
      settle(() => {
        throw spawnError(file, e);
      });
    });
    child.once("exit", () => {
      exited = true;
      // Leftovers in the group (background jobs, daemons that did not setsid) die with the task.
      void stopGroup().then(() => {
        if (closed) return;
        // A process that left the group (setsid) may still hold our pipes open; stop waiting for it.
        const drain = setTimeout(() => {
          child.stdout?.destroy();
          child.stderr?.destroy();
        }, options.killGraceMs);
        child.once("close", () => clearTimeout(drain));
      });
    });
    child.once("close", (code: number | null, signal: NodeJS.Signals | null) => {
      closed = true;
      if (pgid === undefined) return; // spawn failed; reported by "error"
      void stopGroup().then(() => {
        untrackGroup(pgid);
        settle(() => {
          const output: ShellOutput = {
            exitCode: code,
            signal,
            stdout: stdout.text(),
            stderr: stderr.text(),
            stdoutTruncated: stdout.truncated,
            stderrTruncated: stderr.truncated,
          };
          if (stopReason === "cancel") throw cancellationError(ctx.signal);
          if (stopReason === "timeout") {
            throw TaskError.retryable(
              TaskErrorType.TIMEOUT,
              `${JSON.stringify(file)} timed out after ${formatDuration(input.timeoutMs)}`,
              {
                details: output,
              },
            );
          }
          if (code === 0) return output;
          throw exitError(file, output, input.exitCodes);
        });
      });
    });
  });
}

function forward(
  stream: NodeJS.ReadableStream | null,
  name: "stdout" | "stderr",
  tail: OutputTail,
  ctx: TaskContext,
): void {
  if (stream === null) return;
  stream.setEncoding("utf8"); // decodes across chunk boundaries, so multi-byte characters stay whole
  stream.on("data", (chunk: string) => {
    tail.push(chunk);
    try {
      ctx.log.write(name, chunk);
    } catch {
      // A failing log sink must not crash the executor from inside an event handler.
    }
  });
}

function spawnError(file: string, e: NodeJS.ErrnoException): TaskError {
  if (e.code === "ENOENT") {
    return TaskError.terminal(
      TaskErrorType.COMMAND_NOT_FOUND,
      `command ${JSON.stringify(file)} not found (not in PATH or no such file)`,
      {
        cause: e,
      },
    );
  }
  return TaskError.terminal(
    TaskErrorType.SPAWN_FAILED,
    `cannot start ${JSON.stringify(file)}: ${e.code ?? e.message}`,
    {
      cause: e,
    },
  );
}

function exitError(file: string, output: ShellOutput, rules: ExitCodeRules): TaskError {
  const how =
    output.exitCode === null
      ? `was killed by ${output.signal ?? "a signal"}`
      : `exited with code ${output.exitCode}`;
  const tail = output.stderr.trimEnd().slice(-STDERR_IN_MESSAGE_CHARS);
  return new TaskError(
    TaskErrorType.EXIT_CODE,
    `${JSON.stringify(file)} ${how}${tail ? `: ${tail}` : ""}`,
    exitRetryable(output.exitCode, rules),
    { details: output },
  );
}

/**
 * A failed command may succeed when run again (a flaky network, a lock held elsewhere), so a
 * failure is retryable unless the input says otherwise for its code. A death by a signal has no
 * code: it is retryable unless `retryOnExitCodes` restricts retries to listed codes.
 */
function exitRetryable(exitCode: number | null, rules: ExitCodeRules): boolean {
  if (exitCode === null) return rules.retryOn === undefined;
  if (rules.terminal.has(exitCode)) return false;
  return rules.retryOn === undefined || rules.retryOn.has(exitCode);
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Keeps the last `max` characters of a stream. */
class OutputTail {
  #chunks: string[] = [];
  #length = 0;
  truncated = false;

  constructor(
    readonly max: number,
    readonly maxBytes: number,
  ) {}

  push(chunk: string): void {
    this.#chunks.push(chunk);
    this.#length += chunk.length;
    while (this.#length > this.max) {
      const first = this.#chunks[0] as string;
      const excess = this.#length - this.max;
      this.truncated = true;
      if (first.length <= excess) {
        this.#chunks.shift();
        this.#length -= first.length;
      } else {
        this.#chunks[0] = first.slice(excess);
        this.#length -= excess;
      }
    }
  }

  /** The tail, cut further while its JSON takes more than `maxBytes`. */
  text(): string {
    let text = this.#chunks.join("");
    for (let bytes = jsonBytes(text); bytes > this.maxBytes; bytes = jsonBytes(text)) {
      this.truncated = true;
      // In proportion, a little under: each turn keeps less, and a cut pair's half is replaced.
      const keep = Math.floor((text.length * this.maxBytes * 0.98) / bytes);
      text = text.slice(text.length - keep).toWellFormed();
    }
    return text;
  }
}

/** The UTF-8 size of `text` as a JSON string. */
function jsonBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text));
}

// ---- Process groups ----------------------------------------------------------------------------

/** Sends `signal` to the process group; false when the group no longer exists. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw e;
  }
}

async function waitForGroupExit(pgid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (!signalGroup(pgid, 0)) return true;
    if (Date.now() >= end) return false;
    await delay(GROUP_POLL_MS);
  }
}

/** SIGTERM to the group, SIGKILL after `graceMs` if anything is left; resolves when it is gone. */
async function terminateGroup(pgid: number, graceMs: number): Promise<void> {
  try {
    if (!signalGroup(pgid, "SIGTERM")) return;
    if (await waitForGroupExit(pgid, graceMs)) return;
    if (!signalGroup(pgid, "SIGKILL")) return;
    // Killed processes may linger briefly (or as zombies no one reaps); do not wait forever.
    await waitForGroupExit(pgid, AFTER_KILL_WAIT_MS);
  } catch {
    // EPERM: the group now belongs to someone else (pid reuse); nothing of ours to stop.
  }
}

const liveGroups = new Set<number>();
let exitHookInstalled = false;

function trackGroup(pgid: number): void {
  liveGroups.add(pgid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const group of liveGroups) {
        try {
          process.kill(-group, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    });
  }
}

function untrackGroup(pgid: number): void {
  liveGroups.delete(pgid);
}
