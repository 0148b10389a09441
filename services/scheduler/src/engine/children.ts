/**
 * The engine shell's side of child workflows (core/children.ts and core/child-rollback.ts have the
 * rules): what a child run will be, read from the definitions when its step starts, and the rows
 * of a child its parent's rollback reaches.
 */
import { ApiError, Code, type Logger } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import * as core from "../core/index.js";
import type { EngineStore } from "../persistence/engine-store.js";
import { checkStartInput, StoredDefinitionInvalidError, type Definitions } from "./definitions.js";
import type { Confine } from "./faults.js";

/**
 * The child run of a step that asks for workflow `child` (its version, or the latest) with
 * `input`: its definition and input, or the step's error when the workflow does not exist
 * (CHILD_WORKFLOW_NOT_FOUND), refuses the input, or is stored as a definition this version's
 * validation refuses (CHILD_START_FAILED: no retry can start it). Other failures (the database)
 * are thrown, for the caller to try again.
 */
export async function resolveChild(
  definitions: Pick<Definitions, "resolve">,
  child: { name: string; version: number | null },
  input: unknown,
): Promise<core.ChildResolution> {
  try {
    const def = await definitions.resolve(child.name, child.version ?? 0);
    checkStartInput(def.workflow, input);
    return { definitionId: def.id, workflow: def.workflow, input };
  } catch (error) {
    if (
      !(error instanceof ApiError) ||
      (error.code !== Code.NOT_FOUND &&
        error.code !== Code.INVALID_ARGUMENT &&
        !(error instanceof StoredDefinitionInvalidError))
    )
      throw error;
    const notFound = error.code === Code.NOT_FOUND;
    return {
      error: {
        type: notFound ? TaskErrorType.CHILD_WORKFLOW_NOT_FOUND : TaskErrorType.CHILD_START_FAILED,
        message: `workflow ${child.name}${child.version === null ? "" : ` v${child.version}`}: ${error.message}`,
        retryable: false,
      },
    };
  }
}

/** What {@link ChildRuns} needs of the engine. */
export interface ChildRunsOptions {
  store: Pick<EngineStore, "runOutcome" | "loadRun">;
  definitions: Pick<Definitions, "resolve" | "compiledById">;
  log: Logger;
  /** The rules' state (the engine's core). */
  core: () => core.Core;
  /** False once the engine stops: nothing more is read or tried again. */
  live: () => boolean;
  /**
   * Applies rules to a run, a fault (a throw) confined to it (faults.ts): the rules applied once a
   * read is back, on a turn of their own, fail the run whose rules threw, never escape.
   */
  confine: Confine;
  /** How long a read that failed (the database) waits before it is tried again. @default 1000 */
  retryMs?: number;
}

/**
 * The shell's reads for child runs: the child a step (or map element) starts, and the child a
 * parent's rollback reaches (core/child-rollback.ts). A database error is logged and the read
 * tried again a second later, while the engine runs.
 */
export class ChildRuns {
  private readonly retryMs: number;

  constructor(private readonly options: ChildRunsOptions) {
    this.retryMs = options.retryMs ?? 1000;
  }

  /**
   * Starts the child of the task with stored step id `key` (a child workflow step, or a map
   * element) that went WAITING: reads the child's row first (a restarted parent's child may exist,
   * or have ended), then resolves its workflow and checks its input. A workflow that is not
   * registered, or an input the child refuses, fails the step.
   */
  async start(runId: string, key: string): Promise<void> {
    const { store, definitions, confine } = this.options;
    const childId = core.childRunId(runId, key);
    let resolution: core.ChildResolution;
    try {
      const stored = await store.runOutcome(childId);
      if (stored !== undefined) {
        // Started before a restart: ended (its parent's step ends now), or active here already.
        // The parent's rules: a fault in them is the parent's, and is not read again.
        const c = this.options.core();
        confine(c.runs.get(runId), () => core.childFoundEnded(c, runId, key, stored, new Date()));
        return;
      }
      // Looked up once the maps are rebuilt, after a restart (core/recovery.ts).
      const parent = this.options.core().runs.get(runId);
      const found = parent === undefined ? null : core.childTaskOf(parent, key);
      if (found?.task.status !== "WAITING") return;
      const input = (found.task.input as { input?: unknown } | null)?.input ?? null;
      resolution = await resolveChild(definitions, found.child, input);
    } catch (error) {
      this.again(error, { run_id: runId, step_id: key }, "could not start a child run", () =>
        this.start(runId, key),
      );
      return;
    }
    if (!this.options.live()) return;
    const c = this.options.core();
    // The parent's rules (its step ends) or the child's (its start): a fault once the child is in
    // memory is the child's, which ends the parent's step as its failure would.
    const started = c.runs.has(childId);
    confine(
      () => (started ? undefined : c.runs.get(childId)) ?? c.runs.get(runId),
      () => core.childResolved(c, runId, key, resolution, new Date()),
    );
  }

  /**
   * Reads the child `childId` that the compensation of `stepId` of `runId` rolls back: its status,
   * and when it SUCCEEDED its rows and workflow, for it to roll back too (or, when its stored
   * definition no longer compiles, why it cannot).
   */
  async rollBack(runId: string, stepId: string, childId: string): Promise<void> {
    const { store, definitions, confine } = this.options;
    let read: core.ChildRollbackRead;
    try {
      const outcome = await store.runOutcome(childId);
      if (outcome?.status === "SUCCEEDED") {
        const rows = await store.loadRun(childId);
        read =
          rows === undefined
            ? undefined
            : await definitions.compiledById(rows.run.definitionId).then(
                (workflow) => ({ stored: rows.run, tasks: rows.tasks, workflow }),
                (error: unknown) => {
                  // No retry can compile it: the rollback fails (CHILD_FAILED), it does not wait for ever.
                  if (error instanceof StoredDefinitionInvalidError) return { unrollable: error.runError };
                  throw error;
                },
              );
      } else read = outcome;
    } catch (error) {
      this.again(
        error,
        { run_id: runId, step_id: stepId, child_run_id: childId },
        "could not read a child run to roll back",
        () => this.rollBack(runId, stepId, childId),
      );
      return;
    }
    if (!this.options.live()) return;
    const c = this.options.core();
    // The parent's rollback (a child's own rollback in it is the child's: core/child-rollback.ts).
    confine(c.runs.get(runId), () => core.childRollbackRead(c, runId, stepId, childId, read, new Date()));
  }

  private again(
    error: unknown,
    fields: Record<string, string>,
    what: string,
    retry: () => Promise<void>,
  ): void {
    if (!this.options.live()) return;
    this.options.log.warn({ err: error, ...fields }, `${what}; trying again in ${this.retryMs} ms`);
    setTimeout(() => void retry(), this.retryMs).unref();
  }
}
