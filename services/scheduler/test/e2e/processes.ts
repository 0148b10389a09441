/**
 * Real service processes for fault tests: the scheduler's and the executor's `main.ts` run under
 * tsx as separate OS processes, their JSON log lines are captured, and they die by SIGKILL. Every
 * process started here is tracked so `killAll()` (in `after`) leaves nothing behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (tsx is resolved from here). */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
/** Entry point of the scheduler process. */
export const SCHEDULER_MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));
/** Entry point of the executor process. */
export const EXECUTOR_MAIN = fileURLToPath(new URL("../../../executor/src/main.ts", import.meta.url));
/** Entry point of the gateway process. */
export const GATEWAY_MAIN = fileURLToPath(new URL("../../../gateway/src/main.ts", import.meta.url));

/** Variables of the developer's shell that would change what the services do. */
const SCRUBBED = [
  "KAFKA_BROKERS",
  "S3_ENDPOINT",
  "S3_ACCESS_KEY",
  "S3_SECRET_KEY",
  "DATABASE_URL",
  "SCHEDULER_PORT",
  "SCHEDULER_ADDRESS",
  "AUTH_JWKS_URL",
  "AUTH_PUBLIC_KEYS",
  "AUTH_ISSUER",
  "AUTH_AUDIENCE",
  "EXECUTOR_TOKEN",
  "EXECUTOR_TOKEN_FILE",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];

/** One parsed log line (pino JSON), or the raw text of a line that is not JSON. */
export type LogLine = Record<string, unknown> & { msg?: string; raw?: string };

const live = new Set<ServiceProcess>();
/** Every process started by this module, running or not (their output, for failure messages). */
const started: ServiceProcess[] = [];

/**
 * TEST_PROCESS_LOG_DIR: when set, every process's output is also written, line by line, to
 * `<dir>/<name>-<pid>.log` (to read what the services did in a failed run; off by default).
 */
function logFile(name: string, pid: number | undefined): WriteStream | undefined {
  const dir = process.env["TEST_PROCESS_LOG_DIR"];
  if (dir === undefined || dir === "" || pid === undefined) return undefined;
  mkdirSync(dir, { recursive: true });
  return createWriteStream(join(dir, `${name.replace(/[^\w.-]/g, "_")}-${pid}.log`), { flags: "a" });
}

/** A service process with its captured output. */
export class ServiceProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly listeners = new Set<() => void>();
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly name: string,
    script: string,
    env: Record<string, string>,
  ) {
    const base = { ...process.env };
    for (const v of SCRUBBED) delete base[v];
    this.child = spawn(process.execPath, ["--import", "tsx", script], {
      cwd: REPO_ROOT,
      // These tests are about faults, not tokens (authentication has its own tests in test/auth/).
      env: { ...base, LOG_LEVEL: "info", AUTH_DISABLED: "true", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(this);
    started.push(this);
    const file = logFile(name, this.child.pid);
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        file?.end(`-- exited: ${JSON.stringify({ code, signal })}\n`);
        this.exitStatus = { code, signal };
        live.delete(this);
        this.changed();
        resolve({ code, signal });
      });
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let buffered = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) !== -1) {
          const text = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (text.trim() === "") continue;
          file?.write(`${text}\n`);
          try {
            this.lines.push(JSON.parse(text) as LogLine);
          } catch {
            this.lines.push({ raw: text });
          }
          this.changed();
        }
      });
    }
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Whether the process is still running. */
  get alive(): boolean {
    return this.exitStatus === undefined;
  }

  private changed(): void {
    for (const l of [...this.listeners]) l();
  }

  /** Resolves with the first log line (from the start) that matches; rejects on exit or timeout. */
  waitForLog(what: string, match: (line: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const line = this.lines.find(match);
        if (line !== undefined) finish(() => resolve(line));
        else if (this.exitStatus !== undefined)
          finish(() =>
            reject(
              new Error(
                `${this.name} exited (${JSON.stringify(this.exitStatus)}) before logging ${what}\n${this.tail()}`,
              ),
            ),
          );
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new Error(`${this.name} did not log ${what} within ${timeoutMs} ms\n${this.tail()}`)),
          ),
        timeoutMs,
      );
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        settle();
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Log lines at warn level or above, plus non-JSON output. */
  problems(): LogLine[] {
    return this.lines.filter(
      (l) => l.raw !== undefined || (typeof l["level"] === "number" && l["level"] >= 40),
    );
  }

  /** The last `n` lines, for failure messages. */
  tail(n = 25): string {
    return this.lines
      .slice(-n)
      .map((l) => `  [${this.name}] ${l.raw ?? JSON.stringify(l)}`)
      .join("\n");
  }

  /** SIGTERMs the process (its orderly stop) and waits until it is gone. */
  async stop(): Promise<void> {
    if (this.exitStatus === undefined) this.child.kill("SIGTERM");
    await this.exited;
  }

  /** SIGKILLs the process (no shutdown code runs) and waits until it is gone. */
  async kill(): Promise<void> {
    if (this.exitStatus === undefined) this.child.kill("SIGKILL");
    await this.exited;
  }
}

/** Starts a scheduler process on `port` (0: any) and waits until it listens; returns it with its address. */
export async function startSchedulerProcess(
  name: string,
  databaseUrl: string,
  port: number,
  env: Record<string, string> = {},
): Promise<{ process: ServiceProcess; address: string }> {
  const p = new ServiceProcess(name, SCHEDULER_MAIN, {
    DATABASE_URL: databaseUrl,
    SCHEDULER_HOST: "127.0.0.1",
    SCHEDULER_PORT: String(port),
    HEARTBEAT_INTERVAL: "200ms",
    SESSION_TIMEOUT: "1500ms",
    ...env,
  });
  const line = await p.waitForLog('"scheduler listening"', (l) => l.msg === "scheduler listening", 60_000);
  return { process: p, address: String(line["address"]) };
}

/** Starts an executor process attached to `schedulerAddress` and waits for its first attach. */
export async function startExecutorProcess(
  executorId: string,
  schedulerAddress: string,
  env: Record<string, string> = {},
): Promise<ServiceProcess> {
  const p = new ServiceProcess(executorId, EXECUTOR_MAIN, {
    SCHEDULER_ADDRESS: schedulerAddress,
    EXECUTOR_ID: executorId,
    ...env,
  });
  await p.waitForLog(
    '"executor attached to the scheduler"',
    (l) => l.msg === "executor attached to the scheduler",
    60_000,
  );
  return p;
}

/**
 * Starts a gateway process on a free port (GATEWAY_PORT=0, metrics off) in front of the scheduler
 * replicas at `schedulerAddresses` and waits until it listens; returns it with its base URL.
 */
export async function startGatewayProcess(
  name: string,
  schedulerAddresses: readonly string[],
  env: Record<string, string> = {},
): Promise<{ process: ServiceProcess; url: string }> {
  const p = new ServiceProcess(name, GATEWAY_MAIN, {
    GATEWAY_HOST: "127.0.0.1",
    GATEWAY_PORT: "0",
    SCHEDULER_ADDRESS: schedulerAddresses.join(","),
    METRICS_PORT: "off",
    ...env,
  });
  const line = await p.waitForLog('"gateway listening"', (l) => l.msg === "gateway listening", 60_000);
  return { process: p, url: String(line["url"]) };
}

/** Every process started so far, running or gone. */
export function startedProcesses(): readonly ServiceProcess[] {
  return started;
}

/**
 * The log lines of every process started so far (running or gone) that mention one of `ids`, in
 * the order each process wrote them, at most `limit` (the last ones), each cut to 500 characters:
 * what the services said about a stuck run, for a failure message.
 */
export function linesMentioning(ids: readonly string[], limit = 80): string {
  const found: string[] = [];
  for (const p of started) {
    for (const l of p.lines) {
      const text = l.raw ?? JSON.stringify(l);
      if (ids.some((id) => text.includes(id))) found.push(`  [${p.name}/${p.pid}] ${text.slice(0, 500)}`);
    }
  }
  const shown = found.slice(-limit);
  return `${found.length} log line(s) mention them${found.length > limit ? ` (the last ${limit})` : ""}:\n${shown.join("\n")}`;
}

/** SIGKILLs every process started by this module that is still running. */
export async function killAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
}
