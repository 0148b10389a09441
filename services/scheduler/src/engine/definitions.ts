/**
 * Workflow definitions: validated and compiled on register, immutable per (name, version), cached
 * compiled by id. Identical content re-registered is a no-op; different content under an existing
 * version is ALREADY_EXISTS.
 */
import { ApiError, Code, type Logger } from "@nexusflow/common";
import { compileWorkflow, type CompiledWorkflow } from "../dag/index.js";
import type { Database } from "../persistence/database.js";
import { decodeToken, encodeToken } from "../persistence/page-token.js";
import { WorkflowDefinitionEntity } from "../persistence/entities.js";

/** How long "the latest version" of a workflow is cached, by default. */
const LATEST_TTL_MS = 2000;

/** A stored definition row. */
export interface DefinitionRow {
  id: number;
  name: string;
  version: number;
  spec: Record<string, unknown>;
  contentHash: string;
  createdAt: Date;
}

/** A definition resolved for a run: its id and compiled workflow, and when it was looked up. */
interface ResolvedDefinition {
  id: number;
  workflow: CompiledWorkflow;
  at: number;
}

/** Page of definitions. */
export interface DefinitionPage {
  rows: DefinitionRow[];
  nextPageToken: string;
}

/** Access to workflow definitions. */
export class DefinitionStore {
  private readonly byId = new Map<number, CompiledWorkflow>();
  private readonly resolved = new Map<string, ResolvedDefinition>();
  private readonly resolving = new Map<string, Promise<ResolvedDefinition>>();

  /** `latestTtlMs`: how long "the latest version" of a workflow is cached. */
  constructor(
    private readonly db: Database,
    private readonly log: Logger,
    private readonly latestTtlMs = LATEST_TTL_MS,
  ) {}

  private compile(spec: unknown): CompiledWorkflow {
    const result = compileWorkflow(spec);
    if (!result.ok) {
      throw new ApiError(
        Code.INVALID_ARGUMENT,
        `invalid workflow definition (${result.errors.length} problem${result.errors.length === 1 ? "" : "s"}): ${result.errors
          .map((e) => `${e.path}: ${e.message}`)
          .join("; ")}`,
        result.errors.map((e) => ({ field: e.path, description: e.message })),
      );
    }
    return result.workflow;
  }

  /** Validates and stores a definition. */
  async register(spec: unknown): Promise<{ row: DefinitionRow; created: boolean }> {
    const workflow = this.compile(spec);
    const em = this.db.orm.em.fork();
    const inserted = await this.db.pool.query<{ id: number }>(
      `INSERT INTO workflow_definitions (name, version, spec, content_hash, description)
       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, version) DO NOTHING RETURNING id`,
      [
        workflow.name,
        workflow.version,
        workflow.canonicalJson,
        workflow.contentHash,
        workflow.spec.description ?? "",
      ],
    );
    const existing = await em.findOneOrFail(WorkflowDefinitionEntity, {
      name: workflow.name,
      version: workflow.version,
    });
    const row = toRow(existing);
    if (inserted.rowCount === 1) {
      this.byId.set(row.id, workflow);
      this.resolved.delete(`${workflow.name}@0`);
      this.log.info({ workflow: workflow.name, version: workflow.version }, "workflow registered");
      return { row, created: true };
    }
    if (row.contentHash !== workflow.contentHash) {
      throw new ApiError(
        Code.ALREADY_EXISTS,
        `workflow ${workflow.name} version ${workflow.version} already exists with different content; register a new version`,
        [{ field: "version", description: "definitions are immutable per (name, version)" }],
      );
    }
    return { row, created: false };
  }

  /** The definition `name`@`version` (0 = latest), compiled. */
  async resolve(name: string, version: number): Promise<ResolvedDefinition> {
    // Definitions never change, so (name, version) is cached for good; "latest" only briefly,
    // since another scheduler may register a newer version. Concurrent callers share one lookup.
    const key = `${name}@${version}`;
    const cached = this.resolved.get(key);
    if (cached !== undefined && (version !== 0 || cached.at > Date.now() - this.latestTtlMs)) return cached;
    let pending = this.resolving.get(key);
    if (pending === undefined) {
      pending = this.lookup(name, version).finally(() => this.resolving.delete(key));
      this.resolving.set(key, pending);
    }
    return pending;
  }

  private async lookup(name: string, version: number): Promise<ResolvedDefinition> {
    const at = Date.now();
    let entry: ResolvedDefinition;
    if (version === 0) {
      // Only the id: the spec (up to megabytes for a wide workflow) is read once per id.
      checkKey(name, version);
      const { rows } = await this.db.pool.query<{ id: number }>(
        "SELECT id FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1",
        [name],
      );
      const id = rows[0]?.id;
      if (id === undefined) throw ApiError.notFound(`workflow ${name} is not registered`);
      entry = { id, workflow: await this.compiledById(id), at };
    } else {
      const row = await this.get(name, version);
      entry = { id: row.id, workflow: await this.compiledById(row.id, row.spec), at };
    }
    this.resolved.set(`${name}@${version}`, entry);
    return entry;
  }

  /** One definition row; NOT_FOUND when missing. */
  async get(name: string, version: number): Promise<DefinitionRow> {
    checkKey(name, version);
    const em = this.db.orm.em.fork();
    const found =
      version === 0
        ? await em.findOne(WorkflowDefinitionEntity, { name }, { orderBy: { version: "desc" } })
        : await em.findOne(WorkflowDefinitionEntity, { name, version });
    if (found === null) {
      throw ApiError.notFound(
        version === 0
          ? `workflow ${name} is not registered`
          : `workflow ${name} version ${version} is not registered`,
      );
    }
    return toRow(found);
  }

  /** The compiled workflow of a stored definition (cached; definitions never change). */
  async compiledById(id: number, spec?: unknown): Promise<CompiledWorkflow> {
    const cached = this.byId.get(id);
    if (cached !== undefined) return cached;
    let source = spec;
    if (source === undefined) {
      const em = this.db.orm.em.fork();
      source = (await em.findOneOrFail(WorkflowDefinitionEntity, { id })).spec;
    }
    const workflow = this.compile(source);
    this.byId.set(id, workflow);
    return workflow;
  }

  /** Lists definitions, newest first. */
  async list(
    name: string,
    pageSize: number,
    pageToken: string,
    latestOnly: boolean,
  ): Promise<DefinitionPage> {
    const size = pageSize === 0 ? 100 : pageSize;
    if (!Number.isInteger(size) || size < 1 || size > 1000)
      throw ApiError.invalid("page_size", "must be between 1 and 1000");
    const after =
      pageToken === ""
        ? undefined
        : decodeToken(
            pageToken,
            (v): v is { id: number } =>
              typeof v === "object" && v !== null && typeof (v as { id?: unknown }).id === "number",
          );
    const params: unknown[] = [];
    const where: string[] = [];
    if (name !== "") {
      params.push(name);
      where.push(`name = $${params.length}`);
    }
    if (after !== undefined) {
      params.push(after.id);
      where.push(`id < $${params.length}`);
    }
    if (latestOnly)
      where.push(
        `version = (SELECT max(version) FROM workflow_definitions d2 WHERE d2.name = workflow_definitions.name)`,
      );
    params.push(size + 1);
    const rows = await this.db.pool.query<{
      id: number;
      name: string;
      version: number;
      spec: Record<string, unknown>;
      content_hash: string;
      created_at: Date;
    }>(
      `SELECT id, name, version, spec, content_hash, created_at FROM workflow_definitions
       ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.length}`,
      params,
    );
    const page = rows.rows.slice(0, size).map((r) => ({
      id: r.id,
      name: r.name,
      version: r.version,
      spec: r.spec,
      contentHash: r.content_hash,
      createdAt: r.created_at,
    }));
    const last = page[page.length - 1];
    return {
      rows: page,
      nextPageToken: rows.rows.length > size && last !== undefined ? encodeToken({ id: last.id }) : "",
    };
  }
}

function toRow(e: {
  id: number;
  name: string;
  version: number;
  spec: Record<string, unknown>;
  contentHash: string;
  createdAt: Date;
}): DefinitionRow {
  return {
    id: e.id,
    name: e.name,
    version: e.version,
    spec: e.spec,
    contentHash: e.contentHash,
    createdAt: e.createdAt,
  };
}

function checkKey(name: string, version: number): void {
  if (name === "") throw ApiError.invalid("name", "a workflow name is required");
  if (!Number.isInteger(version) || version < 0)
    throw ApiError.invalid("version", "must be 0 (latest) or a positive version");
}
