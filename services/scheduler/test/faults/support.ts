/**
 * Shared pieces of the fault suite: the scheduler settings that make lease expiry fast, the
 * handler module the executor processes load, marker files, and small run helpers.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { jsonToValue } from "@nexusflow/common";
import { TaskKind, TaskStatus, type Run, type TaskRun } from "@nexusflow/gen";
import type { WorkflowClient } from "../e2e/harness.js";
import { killAll } from "../e2e/processes.js";
import { startTestDatabase } from "../support.js";
import { FaultTables } from "./invariants.js";
import type { Marker } from "./fixtures/handlers.js";

/** The handler module of the executor processes (`fault.slow`, `fault.flaky`, `fault.boom`, `fault.undo`). */
export const HANDLERS = fileURLToPath(new URL("./fixtures/handlers.ts", import.meta.url));

/** Scheduler settings for fault tests: pings every 200 ms, a session silent for 1 s is dead. */
export const FAST_EXPIRY = { HEARTBEAT_INTERVAL: "200ms", SESSION_TIMEOUT: "1s" } as const;

/** Executor settings: the fault handlers plus the built-ins. */
export function executorEnv(slots: number, extra: Record<string, string> = {}): Record<string, string> {
  return { EXECUTOR_HANDLERS: HANDLERS, EXECUTOR_SLOTS: String(slots), ...extra };
}

/** The lines of a marker file written by the fault handlers (none when it does not exist yet). */
export async function markers(file: string): Promise<Marker[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Marker);
}

/** Starts a run and returns its id. */
export async function startRun(
  client: WorkflowClient,
  workflowName: string,
  input: unknown,
): Promise<string> {
  const { run } = await client.startRun({ workflowName, input: jsonToValue(input) });
  assert.ok(run, `StartRun ${workflowName} returned no run`);
  return run.id;
}

/** The task of `stepId` of the given kind, or a failed assertion. */
export function taskOf(run: Run, stepId: string, kind = TaskKind.STEP): TaskRun {
  const t = run.tasks.find((x) => x.stepId === stepId && x.kind === kind);
  assert.ok(t, `run ${run.id} has no ${TaskKind[kind]} task ${stepId}`);
  return t;
}

/** `[status, error type]` of each attempt of a task, for compact assertions. */
export function attemptSummary(task: TaskRun): [string, string][] {
  return task.attempts.map((a) => [TaskStatus[a.status] ?? String(a.status), a.error?.type ?? ""]);
}

/** What every fault test file sets up: a database, invariant queries over it, and a scratch folder. */
export interface FaultFixture {
  readonly db: Awaited<ReturnType<typeof startTestDatabase>>;
  readonly tables: FaultTables;
  readonly dir: string;
}

/**
 * Registers before/after hooks that start a test database, open {@link FaultTables} on it and make
 * a scratch folder named `<prefix>…`, and afterwards kill every process the file spawned and
 * remove it all. Read the fields inside tests (they exist once `before` ran).
 */
export function faultFixture(prefix: string): FaultFixture {
  let db: FaultFixture["db"] | undefined;
  let tables: FaultTables | undefined;
  let dir: string | undefined;
  before(async () => {
    db = await startTestDatabase();
    tables = new FaultTables(db.url);
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  after(async () => {
    await killAll();
    await tables?.close();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  const ready = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`fault fixture: ${what} is not ready (read it inside a test)`);
    return v;
  };
  return {
    get db() {
      return ready(db, "db");
    },
    get tables() {
      return ready(tables, "tables");
    },
    get dir() {
      return ready(dir, "dir");
    },
  };
}
