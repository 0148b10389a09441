/**
 * The triggers an event is matched against: those of the latest version (highest number) of
 * every workflow, read from `workflow_definitions`. Definitions never change, so the index is read
 * again only when the number of definitions or the highest id changed (one cheap query per
 * publish, an index-only count): a workflow registered before a publish is answered is matched by
 * it. The count matters: ids are taken when a registration inserts, not when it commits, so one
 * that commits after a later id was seen leaves the highest id as it was. A workflow whose latest
 * version declares no triggers is matched by nothing, whatever its older versions declare.
 */
import type { Logger } from "@nexusflow/common";
import type pg from "pg";
import { checkTriggers, matchTriggers, type CompiledTrigger, type TriggerEvent } from "../dag/index.js";

/** The triggers of one workflow's latest version. */
export interface WorkflowTriggers {
  readonly workflowName: string;
  readonly workflowVersion: number;
  readonly triggers: readonly CompiledTrigger[];
}

/** What an event did to one workflow: matched (its run to start), or its filter failed. */
export interface EventMatchDraft {
  workflowName: string;
  workflowVersion: number;
  triggerIndex: number;
  status: "STARTING" | "FAILED";
  error: string | null;
}

/** See the module comment. */
export class TriggerIndex {
  /** Count and highest id of the definitions the index was read from. */
  private version: string | undefined;
  private workflows: readonly WorkflowTriggers[] = [];
  private loading: Promise<readonly WorkflowTriggers[]> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
  ) {}

  /** The triggers of every workflow's latest version, as of now. */
  async current(): Promise<readonly WorkflowTriggers[]> {
    this.loading ??= this.load().finally(() => (this.loading = undefined));
    return this.loading;
  }

  /** The workflows an event matches (or whose filter failed on it), by name. */
  async match(event: TriggerEvent): Promise<EventMatchDraft[]> {
    const out: EventMatchDraft[] = [];
    for (const w of await this.current()) {
      const outcome = matchTriggers(w.triggers, event);
      if (outcome === undefined) continue;
      out.push({
        workflowName: w.workflowName,
        workflowVersion: w.workflowVersion,
        triggerIndex: outcome.index,
        status: outcome.matched ? "STARTING" : "FAILED",
        error: outcome.matched ? null : outcome.error,
      });
    }
    return out;
  }

  private async load(): Promise<readonly WorkflowTriggers[]> {
    const { rows: top } = await this.pool.query<{ version: string }>(
      `SELECT count(*) || ':' || coalesce(max(id)::text, '') AS version FROM workflow_definitions`,
    );
    const version = top[0]?.version;
    if (version !== undefined && version === this.version) return this.workflows;
    const { rows } = await this.pool.query<{ name: string; version: number; triggers: unknown }>(
      `SELECT name, version, triggers FROM (
         SELECT DISTINCT ON (name) name, version, spec->'triggers' AS triggers
         FROM workflow_definitions ORDER BY name, version DESC) latest
       WHERE triggers IS NOT NULL ORDER BY name`,
    );
    const workflows: WorkflowTriggers[] = [];
    for (const r of rows) {
      const { triggers, errors } = checkTriggers(r.triggers, "$.triggers");
      // Validated when registered; a definition stored before triggers existed cannot have them.
      if (errors.length > 0)
        this.log.error(
          { workflow: r.name, version: r.version, errors },
          "a stored workflow's triggers do not validate; they are ignored",
        );
      if (triggers.length > 0) workflows.push({ workflowName: r.name, workflowVersion: r.version, triggers });
    }
    this.workflows = workflows;
    this.version = version;
    return workflows;
  }
}
