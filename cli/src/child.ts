/**
 * A service running as a child process of the dev stack: started with the current Node and tsx,
 * in its own process group (so the terminal's Ctrl-C reaches only the CLI, which stops the
 * services in order), with its output relayed line by line and its last lines remembered.
 * Whether it is ready is asked of the service itself (readiness.ts), never read from its output.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { pathToFileURL } from "node:url";

/** How a child process ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process ended while it was expected to run. */
export class ChildExitedError extends Error {
  override name = "ChildExitedError";
  constructor(
    readonly child: string,
    readonly exit: ChildExit,
  ) {
    super(`${child} exited unexpectedly (${describeExit(exit)})`);
  }
}

/** A child did not become ready: its readiness check failed (the cause says how), or timed out. */
export class ChildNotReadyError extends Error {
  override name = "ChildNotReadyError";
  constructor(
    readonly child: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A child did not pass its readiness check in time. */
export class ChildTimeoutError extends ChildNotReadyError {
  override name = "ChildTimeoutError";
  constructor(child: string, what: string, timeoutMs: number) {
    const within = timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 1000)}s`;
    super(child, `${child} was not ready within ${within} (waited for ${what})`);
  }
}

/** "code 1" or "killed by SIGKILL". */
export function describeExit(exit: ChildExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code ?? "?"}`;
}

/** What to start. */
export interface ChildSpec {
  /** Short name used in logs, e.g. "executor-1". */
  name: string;
  /** Absolute path of the TypeScript entry module. */
  entry: string;
  /** Complete environment of the child. */
  env: NodeJS.ProcessEnv;
  /** Working directory. */
  cwd: string;
  /** Modules loaded before the entry (after tsx), e.g. the parent watchdog. */
  preload?: readonly string[];
}

/** Receives every line a child prints. */
export type LineSink = (child: string, line: string, stream: "stdout" | "stderr") => void;

const TAIL_LINES = 25;
const LEFTOVER_GRACE_MS = 3000;
const LEFTOVER_POLL_MS = 50;

/** A running (or finished) service process. */
export class ManagedChild {
  readonly name: string;
  readonly #process: ChildProcess;
  readonly #tail: string[] = [];
  #exit: ChildExit | undefined;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ChildExit>;

  constructor(spec: ChildSpec, sink: LineSink) {
    this.name = spec.name;
    const imports = ["tsx", ...(spec.preload ?? []).map((p) => pathToFileURL(p).href)].flatMap((m) => [
      "--import",
      m,
    ]);
    this.#process = spawn(process.execPath, [...imports, spec.entry], {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ["ignore", "pipe", "pipe"],
      // A new process group: terminal signals skip the services, and stop() can reach grandchildren.
      detached: true,
    });
    this.exited = new Promise((resolve) => {
      this.#process.once("exit", (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
      this.#process.once("error", () => {
        // spawn failed (e.g. ENOENT); "exit" may never come.
        this.#exit ??= { code: null, signal: null };
        resolve(this.#exit);
      });
    });
    for (const [stream, readable] of [
      ["stdout", this.#process.stdout],
      ["stderr", this.#process.stderr],
    ] as const) {
      if (readable === null) continue;
      createInterface({ input: readable, crlfDelay: Infinity }).on("line", (line) => {
        this.#tail.push(line);
        if (this.#tail.length > TAIL_LINES) this.#tail.shift();
        sink(this.name, line, stream);
      });
    }
  }

  /** Process id (the process group id as well). */
  get pid(): number | undefined {
    return this.#process.pid;
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.#exit === undefined;
  }

  /** The last lines the child printed (raw), oldest first. */
  tail(): string[] {
    return [...this.#tail];
  }

  /**
   * Stops the child: SIGTERM, then SIGKILL to its whole group after `graceMs`; once the child is
   * gone, whatever it left running in its group is killed too.
   */
  async stop(graceMs: number): Promise<ChildExit> {
    if (this.running) this.#process.kill("SIGTERM");
    const timer = setTimeout(() => this.killGroup(), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    // Leftovers (say, a database server the child started) get the same treatment, with less patience.
    if (this.#signalGroup("SIGTERM")) {
      const deadline = Date.now() + LEFTOVER_GRACE_MS;
      while (this.#signalGroup(0) && Date.now() < deadline) await delay(LEFTOVER_POLL_MS);
      this.killGroup();
    }
    return exit;
  }

  /** Sends `signal` to the child's process group; false when the group is empty. */
  #signalGroup(signal: NodeJS.Signals | 0): boolean {
    const pid = this.#process.pid;
    if (pid === undefined) return false;
    try {
      process.kill(-pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGKILL to the child's process group; for exit handlers (synchronous, never throws). */
  killGroup(): void {
    this.#signalGroup("SIGKILL");
  }
}
