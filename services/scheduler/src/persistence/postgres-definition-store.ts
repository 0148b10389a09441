/** Workflow definitions in PostgreSQL's workflow_definitions table (see definition-store.ts). */
import type pg from "pg";
import type { Database } from "./database.js";
import type { DefinitionQuery, DefinitionRow, DefinitionStore, NewDefinition } from "./definition-store.js";
import { WorkflowDefinitionEntity } from "./entities.js";

/** A definition being stored, as the hooks see it. */
export interface StoredDefinition {
  name: string;
  version: number;
  /** The spec as JSON. */
  spec: unknown;
}

/** What else happens when a new definition is stored (e.g. its declared schedules). */
export interface DefinitionStoreHooks {
  /** Runs in the transaction that stores a new definition: a failure undoes the insert. */
  inserting(tx: pg.PoolClient, definition: StoredDefinition): Promise<void>;
  /** Runs once that transaction committed, with the same object. */
  inserted?(definition: StoredDefinition): void;
}

const INSERT_SQL = `INSERT INTO workflow_definitions (name, version, spec, content_hash, description)
  VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, version) DO NOTHING RETURNING id`;

/** Workflow definitions in PostgreSQL. */
export class PostgresDefinitionStore implements DefinitionStore {
  constructor(
    private readonly db: Database,
    private readonly hooks?: DefinitionStoreHooks,
  ) {}

  async insert(d: NewDefinition): Promise<{ row: DefinitionRow; created: boolean }> {
    const em = this.db.orm.em.fork();
    const params = [d.name, d.version, d.canonicalJson, d.contentHash, d.description];
    const created =
      this.hooks === undefined
        ? (await this.db.pool.query<{ id: number }>(INSERT_SQL, params)).rowCount === 1
        : await this.insertWithHooks(this.hooks, d, params);
    const existing = await em.findOneOrFail(WorkflowDefinitionEntity, { name: d.name, version: d.version });
    return { row: toRow(existing), created };
  }

  private async insertWithHooks(
    hooks: DefinitionStoreHooks,
    d: NewDefinition,
    params: unknown[],
  ): Promise<boolean> {
    const client = await this.db.pool.connect();
    let broken = false;
    let stored: StoredDefinition | undefined;
    try {
      await client.query("BEGIN");
      const inserted = await client.query<{ id: number }>(INSERT_SQL, params);
      if (inserted.rowCount === 1) {
        stored = { name: d.name, version: d.version, spec: JSON.parse(d.canonicalJson) as unknown };
        await hooks.inserting(client, stored);
      }
      await client.query("COMMIT");
    } catch (e) {
      broken = true;
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release(broken);
    }
    if (stored !== undefined) hooks.inserted?.(stored);
    return stored !== undefined;
  }

  async get(name: string, version: number): Promise<DefinitionRow | undefined> {
    const em = this.db.orm.em.fork();
    const found =
      version === 0
        ? await em.findOne(WorkflowDefinitionEntity, { name }, { orderBy: { version: "desc" } })
        : await em.findOne(WorkflowDefinitionEntity, { name, version });
    return found === null ? undefined : toRow(found);
  }

  async latestId(name: string): Promise<number | undefined> {
    const { rows } = await this.db.pool.query<{ id: number }>(
      "SELECT id FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1",
      [name],
    );
    return rows[0]?.id;
  }

  async specById(id: number): Promise<unknown> {
    const em = this.db.orm.em.fork();
    return (await em.findOneOrFail(WorkflowDefinitionEntity, { id })).spec;
  }

  async list(query: DefinitionQuery): Promise<DefinitionRow[]> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (query.name !== "") {
      params.push(query.name);
      where.push(`name = $${params.length}`);
    }
    if (query.beforeId !== undefined) {
      params.push(query.beforeId);
      where.push(`id < $${params.length}`);
    }
    if (query.latestOnly)
      where.push(
        `version = (SELECT max(version) FROM workflow_definitions d2 WHERE d2.name = workflow_definitions.name)`,
      );
    params.push(query.limit);
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
    return rows.rows.map((r) => ({
      id: r.id,
      name: r.name,
      version: r.version,
      spec: r.spec,
      contentHash: r.content_hash,
      createdAt: r.created_at,
    }));
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
