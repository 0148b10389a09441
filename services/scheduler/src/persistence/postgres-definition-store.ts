/** Workflow definitions in PostgreSQL's workflow_definitions table (see definition-store.ts). */
import type pg from "pg";
import type { Database } from "./database.js";
import type { DefinitionQuery, DefinitionRow, DefinitionStore, NewDefinition } from "./definition-store.js";

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

/** A definition's columns as a DefinitionRow's keys. */
const ROW_COLUMNS = `id, name, version, spec, content_hash AS "contentHash", created_at AS "createdAt"`;
const BY_VERSION_SQL = `SELECT ${ROW_COLUMNS} FROM workflow_definitions WHERE name = $1 AND version = $2`;
const LATEST_SQL = `SELECT ${ROW_COLUMNS} FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1`;

const INSERT_SQL = `INSERT INTO workflow_definitions (name, version, spec, content_hash, description)
  VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, version) DO NOTHING RETURNING id`;

/** Workflow definitions in PostgreSQL. */
export class PostgresDefinitionStore implements DefinitionStore {
  constructor(
    private readonly db: Database,
    private readonly hooks?: DefinitionStoreHooks,
  ) {}

  async insert(d: NewDefinition): Promise<{ row: DefinitionRow; created: boolean }> {
    const params = [d.name, d.version, d.canonicalJson, d.contentHash, d.description];
    const created =
      this.hooks === undefined
        ? (await this.db.pool.query<{ id: number }>(INSERT_SQL, params)).rowCount === 1
        : await this.insertWithHooks(this.hooks, d, params);
    const existing = await this.get(d.name, d.version);
    if (existing === undefined)
      throw new Error(`workflow definition ${d.name} v${d.version} not found after storing it`);
    return { row: existing, created };
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
    const { rows } =
      version === 0
        ? await this.db.readPool.query<DefinitionRow>(LATEST_SQL, [name])
        : await this.db.readPool.query<DefinitionRow>(BY_VERSION_SQL, [name, version]);
    return rows[0];
  }

  async latestId(name: string): Promise<number | undefined> {
    const { rows } = await this.db.pool.query<{ id: number }>(
      "SELECT id FROM workflow_definitions WHERE name = $1 ORDER BY version DESC LIMIT 1",
      [name],
    );
    return rows[0]?.id;
  }

  async specById(id: number): Promise<unknown> {
    const { rows } = await this.db.readPool.query<{ spec: unknown }>(
      "SELECT spec FROM workflow_definitions WHERE id = $1",
      [id],
    );
    if (rows[0] === undefined) throw new Error(`workflow definition ${id} does not exist`);
    return rows[0].spec;
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
