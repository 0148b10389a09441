/**
 * Workflow definitions in memory: the same contract as PostgreSQL's (definition-store-contract.ts),
 * for an engine without a database. A spec is kept as its JSON parsed anew, as jsonb would return
 * it, and ids count up from 1 like the table's.
 */
import type { DefinitionQuery, DefinitionRow, DefinitionStore, NewDefinition } from "./definition-store.js";

/** Workflow definitions in memory. */
export class MemoryDefinitionStore implements DefinitionStore {
  /** Rows by id, in id order. */
  private readonly rows = new Map<number, DefinitionRow>();
  private nextId = 1;

  insert(d: NewDefinition): Promise<{ row: DefinitionRow; created: boolean }> {
    const existing = this.find(d.name, d.version);
    if (existing !== undefined) return Promise.resolve({ row: copy(existing), created: false });
    const row: DefinitionRow = {
      id: this.nextId++,
      name: d.name,
      version: d.version,
      spec: JSON.parse(d.canonicalJson) as Record<string, unknown>,
      contentHash: d.contentHash,
      createdAt: new Date(),
    };
    this.rows.set(row.id, row);
    return Promise.resolve({ row: copy(row), created: true });
  }

  get(name: string, version: number): Promise<DefinitionRow | undefined> {
    const row = version === 0 ? this.latest(name) : this.find(name, version);
    return Promise.resolve(row === undefined ? undefined : copy(row));
  }

  latestId(name: string): Promise<number | undefined> {
    return Promise.resolve(this.latest(name)?.id);
  }

  specById(id: number): Promise<unknown> {
    const row = this.rows.get(id);
    if (row === undefined) return Promise.reject(new Error(`no workflow definition ${id}`));
    return Promise.resolve(structuredClone(row.spec));
  }

  list(query: DefinitionQuery): Promise<DefinitionRow[]> {
    const rows = [...this.rows.values()]
      .filter(
        (r) =>
          (query.name === "" || r.name === query.name) &&
          (query.beforeId === undefined || r.id < query.beforeId) &&
          (!query.latestOnly || this.latest(r.name) === r),
      )
      .sort((a, b) => b.id - a.id)
      .slice(0, query.limit);
    return Promise.resolve(rows.map(copy));
  }

  private find(name: string, version: number): DefinitionRow | undefined {
    for (const r of this.rows.values()) if (r.name === name && r.version === version) return r;
    return undefined;
  }

  private latest(name: string): DefinitionRow | undefined {
    let latest: DefinitionRow | undefined;
    for (const r of this.rows.values())
      if (r.name === name && (latest === undefined || r.version > latest.version)) latest = r;
    return latest;
  }
}

/** A row as a caller may keep it: changing it changes nothing stored. */
function copy(row: DefinitionRow): DefinitionRow {
  return { ...row, spec: structuredClone(row.spec) };
}
