/**
 * Where workflow definitions are kept, as one interface with two implementations: PostgreSQL
 * (postgres-definition-store.ts, the workflow_definitions table) and memory
 * (memory-definition-store.ts, for an engine without a database). Both pass the suite in
 * definition-store-contract.ts. Validation, compilation, caching and API errors are the engine's
 * (engine/definitions.ts); a store only keeps rows, immutable per (name, version).
 */

/** A stored definition. */
export interface DefinitionRow {
  id: number;
  name: string;
  version: number;
  spec: Record<string, unknown>;
  contentHash: string;
  createdAt: Date;
}

/** A definition to store. */
export interface NewDefinition {
  name: string;
  version: number;
  /** The spec as canonical JSON text (what its content hash is of). */
  canonicalJson: string;
  contentHash: string;
  description: string;
}

/** Which definitions {@link DefinitionStore.list} returns. */
export interface DefinitionQuery {
  /** Only this workflow's versions; "" for all. */
  name: string;
  /** Only ids below this one (the page after it). */
  beforeId?: number | undefined;
  /** Only the latest version of each workflow. */
  latestOnly: boolean;
  /** At most this many rows. */
  limit: number;
}

/** Storage of workflow definitions; see the module comment. */
export interface DefinitionStore {
  /**
   * Stores a definition unless its (name, version) is taken; returns the row stored under it
   * (the existing one when taken, whatever its content) and whether this call created it.
   */
  insert(definition: NewDefinition): Promise<{ row: DefinitionRow; created: boolean }>;
  /** The row of `name` at `version` (0: its latest version), or undefined. */
  get(name: string, version: number): Promise<DefinitionRow | undefined>;
  /** The id of the latest version of `name`, or undefined; reads no spec. */
  latestId(name: string): Promise<number | undefined>;
  /** The spec of definition `id`; rejects when there is none. */
  specById(id: number): Promise<unknown>;
  /** Definitions matching `query`, highest id (newest) first. */
  list(query: DefinitionQuery): Promise<DefinitionRow[]>;
}
