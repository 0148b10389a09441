/**
 * Workflow definitions: validated and compiled on register, immutable per (name, version), cached
 * compiled by id. Identical content re-registered is a no-op; different content under an existing
 * version is ALREADY_EXISTS. The rows are kept by a {@link DefinitionStore} (PostgreSQL, or memory
 * for an engine without a database).
 */
import { ApiError, Code, isApiError, type Logger } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import * as core from "../core/index.js";
import {
  checkSchedules,
  compileWorkflow,
  validateRunInput,
  type CompiledWorkflow,
  type SpecError,
} from "../dag/index.js";
import type { DefinitionRow, DefinitionStore } from "../persistence/definition-store.js";
import type { ErrorInfo } from "../model/run-state.js";
import { type Listing, decodeToken, encodeToken, pageSizeOf } from "../persistence/page-token.js";

export type { DefinitionRow };

/** How long "the latest version" of a workflow is cached, by default. */
const LATEST_TTL_MS = 2000;

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

/**
 * A stored workflow definition that this version's validation refuses (a rule added since it was
 * registered): its runs cannot run. FAILED_PRECONDITION to a caller (StartRun of that version);
 * loading one of its runs ends that run FAILED with DEFINITION_INVALID (engine/partition-load.ts).
 */
export class StoredDefinitionInvalidError extends ApiError {
  override name = "StoredDefinitionInvalidError";
  constructor(
    readonly definitionId: number,
    spec: unknown,
    problems: readonly SpecError[],
  ) {
    const { name, version } = (typeof spec === "object" && spec !== null ? spec : {}) as {
      name?: unknown;
      version?: unknown;
    };
    super(
      Code.FAILED_PRECONDITION,
      `the stored definition of workflow ${String(name)} version ${String(version)} (id ${definitionId}) no longer passes validation (${describeProblems(problems)}); register a version that does`,
    );
  }

  /** The error a run of this definition ends FAILED with when it is loaded. */
  get runError(): ErrorInfo {
    return { type: TaskErrorType.DEFINITION_INVALID, message: this.message, retryable: false };
  }
}

/** The problems of a spec, as error messages name them. */
function describeProblems(problems: readonly SpecError[]): string {
  return problems.map((e) => `${e.path}: ${e.message}`).join("; ");
}

/** Access to workflow definitions. */
export class Definitions {
  private readonly byId = new Map<number, CompiledWorkflow>();
  private readonly resolved = new Map<string, ResolvedDefinition>();
  private readonly resolving = new Map<string, Promise<ResolvedDefinition>>();

  /** `latestTtlMs`: how long "the latest version" of a workflow is cached. */
  constructor(
    private readonly store: DefinitionStore,
    private readonly log: Logger,
    private readonly latestTtlMs = LATEST_TTL_MS,
  ) {}

  private compile(spec: unknown): CompiledWorkflow {
    const result = compileWorkflow(spec);
    if (!result.ok) {
      throw new ApiError(
        Code.INVALID_ARGUMENT,
        `invalid workflow definition (${result.errors.length} problem${result.errors.length === 1 ? "" : "s"}): ${describeProblems(result.errors)}`,
        result.errors.map((e) => ({ field: e.path, description: e.message })),
      );
    }
    return result.workflow;
  }

  /** Validates and stores a definition. */
  async register(spec: unknown): Promise<{ row: DefinitionRow; created: boolean }> {
    const workflow = this.compile(spec);
    checkDeclaredInputs(workflow);
    const { row, created } = await this.store.insert({
      name: workflow.name,
      version: workflow.version,
      canonicalJson: workflow.canonicalJson,
      contentHash: workflow.contentHash,
      description: workflow.spec.description ?? "",
    });
    if (created) {
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
      const id = await this.store.latestId(name);
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
    const found = await this.store.get(name, version);
    if (found === undefined) {
      throw ApiError.notFound(
        version === 0
          ? `workflow ${name} is not registered`
          : `workflow ${name} version ${version} is not registered`,
      );
    }
    return found;
  }

  /**
   * The compiled workflow of a stored definition (cached; definitions never change). Throws
   * {@link StoredDefinitionInvalidError} when the stored spec no longer passes validation.
   */
  async compiledById(id: number, spec?: unknown): Promise<CompiledWorkflow> {
    const cached = this.byId.get(id);
    if (cached !== undefined) return cached;
    const stored = spec ?? (await this.store.specById(id));
    const result = compileWorkflow(stored);
    if (!result.ok) throw new StoredDefinitionInvalidError(id, stored, result.errors);
    this.byId.set(id, result.workflow);
    return result.workflow;
  }

  /** Lists definitions, newest first. */
  async list(
    name: string,
    pageSize: number,
    pageToken: string,
    latestOnly: boolean,
  ): Promise<DefinitionPage> {
    const size = pageSizeOf(pageSize);
    const listing: Listing = { filters: [name, latestOnly], names: "name and latest_only" };
    const after =
      pageToken === ""
        ? undefined
        : decodeToken(
            pageToken,
            // Ours name a stored id: a forged one PostgreSQL could not read is refused.
            (v): v is { id: number } =>
              typeof v === "object" &&
              v !== null &&
              Number.isSafeInteger((v as { id?: unknown }).id) &&
              (v as { id: number }).id > 0,
            listing,
          );
    const rows = await this.store.list({ name, beforeId: after?.id, latestOnly, limit: size + 1 });
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return {
      rows: page,
      nextPageToken: rows.length > size && last !== undefined ? encodeToken({ id: last.id }, listing) : "",
    };
  }
}

/** Throws INVALID_ARGUMENT naming each field of a run's input that its workflow's input schema refuses. */
export function checkRunInput(workflow: CompiledWorkflow, input: unknown): void {
  const problems = validateRunInput(workflow, input);
  if (problems.length === 0) return;
  throw new ApiError(
    Code.INVALID_ARGUMENT,
    `input does not match the input schema of ${workflow.name} v${workflow.version}: ${problems
      .map((p) => `${p.path}: ${p.message}`)
      .join("; ")}`,
    problems.map((p) => ({ field: `input${p.path.slice(1)}`, description: p.message })),
  );
}

/**
 * Throws INVALID_ARGUMENT unless a run of `workflow` may start with `input`: the input schema
 * ({@link checkRunInput}) and the workflow's concurrency and fairness keys, which must read a
 * string or a number from it.
 */
export function checkStartInput(workflow: CompiledWorkflow, input: unknown): void {
  checkRunInput(workflow, input);
  if (workflow.concurrency.length === 0 && workflow.fairness.length === 0) return;
  try {
    // run.id is not known yet: a key built from it is a string whatever the id.
    core.workflowKeys({ id: "", workflow, input });
    core.fairPath({ id: "", workflow, input });
  } catch (error) {
    if (error instanceof core.ConcurrencyKeyError) throw ApiError.invalid("input", error.message);
    throw error;
  }
}

/**
 * Throws INVALID_ARGUMENT naming `$.schedules[i].input...` when a declared schedule's input is one
 * no run of the workflow may start with ({@link checkStartInput}): every fire of it would fail.
 */
function checkDeclaredInputs(workflow: CompiledWorkflow): void {
  if (workflow.spec.schedules === undefined) return;
  const { schedules } = checkSchedules(workflow.spec.schedules, "$.schedules", workflow, null);
  for (const s of schedules) {
    try {
      checkStartInput(workflow, s.spec.input);
    } catch (error) {
      if (!isApiError(error) || error.code !== Code.INVALID_ARGUMENT) throw error;
      const at = `$.schedules[${s.index}].`;
      throw new ApiError(
        error.code,
        `${at}${error.message}`,
        error.violations.map((v) => ({ field: `${at}${v.field}`, description: v.description })),
      );
    }
  }
}

function checkKey(name: string, version: number): void {
  if (name === "") throw ApiError.invalid("name", "a workflow name is required");
  if (!Number.isInteger(version) || version < 0)
    throw ApiError.invalid("version", "must be 0 (latest) or a positive version");
}
