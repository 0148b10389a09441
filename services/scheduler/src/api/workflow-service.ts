/** WorkflowService over gRPC: validates requests, calls the engine and the stores. */
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampNow } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import {
  ApiError,
  Code,
  checkJsonForm,
  nulCharacterPath,
  serverStream,
  toRpcStatus,
  unary,
  valueToJsonChecked,
} from "@nexusflow/common";
import {
  CancelRunResponseSchema,
  GetRunResponseSchema,
  GetWorkflowResponseSchema,
  ListRunsResponseSchema,
  ListWorkflowsResponseSchema,
  RegisterWorkflowResponseSchema,
  type Run,
  RunSchema,
  RunStatus,
  RunView,
  StartRunResponseSchema,
  StartRunResultSchema,
  StartRunsResponseSchema,
  type StartRunResponse,
  type StartRunsRequest,
  WatchRunResponseSchema,
  WorkflowSpecSchema,
  type CancelRunRequest,
  type SignalRunRequest,
  SignalRunResponseSchema,
  type ExplainPendingRequest,
  type GetRunRequest,
  type GetWorkflowRequest,
  type ListRunsRequest,
  type ListWorkflowsRequest,
  type RegisterWorkflowRequest,
  type RerunRunRequest,
  type StartRunRequest,
  type WatchRunRequest,
  type WatchRunResponse,
} from "@nexusflow/gen";
import type { Engine } from "../engine/engine.js";
import { SIGNAL_NAME_PATTERN, SIGNAL_NAME_RULE } from "../dag/index.js";
import { TERMINAL_RUN_STATUSES, type RunStatusName, type SignalState } from "../model/run-state.js";
import { checkRunId, runPageToken, type RunDetail, type RunStore } from "../persistence/run-store.js";
import { parkedPendingReasons } from "../engine/parked-reasons.js";
import {
  definition,
  runBasic,
  runBasicFromState,
  runDetail,
  runFromState,
  runStatusName,
  type PendingReasons,
} from "./convert.js";
import { explainPending } from "./explain-pending.js";
import { rerunRun } from "./rerun-run.js";

/**
 * Largest encoded ListRuns page in RUN_VIEW_FULL: under the 4 MiB that grpcurl, grpcio and grpc-js
 * accept by default, with room for the rest of the response and framing.
 */
export const LIST_RUNS_PAGE_BYTES = 3 * 1024 * 1024;
/** Room kept within the bound for next_page_token. */
const PAGE_TOKEN_ROOM = 512;

/** Bytes of `n` as a protobuf varint. */
function varintSize(n: number): number {
  let size = 1;
  for (let v = n; v >= 0x80; v = Math.floor(v / 0x80)) size++;
  return size;
}

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$/i;

/** Refuses a value holding U+0000 (PostgreSQL stores no text or jsonb with it), naming where. */
function refuseNul(value: unknown, field: string): void {
  const at = nulCharacterPath(value, field);
  if (at !== undefined)
    throw ApiError.invalid(at, "contains a NUL character (U+0000), which cannot be stored");
}

/** Largest signal payload, as JSON. */
export const MAX_SIGNAL_PAYLOAD_BYTES = 64 * 1024;

/** The signals column of a run row (RunState.signals as stored). */
function storedSignals(column: unknown): SignalState[] {
  return Array.isArray(column) ? (column as SignalState[]) : [];
}

function checkLabels(labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > 32) throw ApiError.invalid("labels", "at most 32 labels");
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k))
      throw ApiError.invalid(`labels[${k}]`, "keys are 1-63 letters, digits, '.', '_', '/' or '-'");
    if (v.length > 255) throw ApiError.invalid(`labels[${k}]`, "values are at most 255 characters");
    refuseNul(v, `labels[${k}]`);
  }
}

/** Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range of a google.protobuf.Timestamp. */
const TIMESTAMP_SECONDS = [-62_135_596_800n, 253_402_300_799n] as const;

/** A filter's time, or INVALID_ARGUMENT naming `field` when it is no valid Timestamp. */
function filterTime(ts: Timestamp | undefined, field: string): Date | undefined {
  if (ts === undefined) return undefined;
  if (ts.seconds < TIMESTAMP_SECONDS[0] || ts.seconds > TIMESTAMP_SECONDS[1])
    throw ApiError.invalid(field, "must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
  if (ts.nanos < 0 || ts.nanos > 999_999_999)
    throw ApiError.invalid(field, "nanos must be from 0 to 999999999");
  return timestampDate(ts);
}

function parseSpecJson(text: string): unknown {
  if (text.length > 1024 * 1024) throw ApiError.invalid("spec_json", "larger than 1 MiB");
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw ApiError.invalid("spec_json", `not valid JSON: ${(e as Error).message}`);
  }
}

/** Most runs one StartRuns call starts. */
export const MAX_START_RUNS = 1000;

/**
 * `e` as one item's error in a batch: its message and field violations name `runs[i]`, as if the
 * item had been sent alone under that path.
 */
function itemError(e: unknown, i: number): unknown {
  if (!(e instanceof ApiError)) return e;
  return new ApiError(
    e.code,
    `runs[${i}]: ${e.message}`,
    e.violations.map((v) => ({ field: `runs[${i}].${v.field}`, description: v.description })),
    {
      ...(e.errorInfo === undefined ? {} : { errorInfo: e.errorInfo }),
      ...(e.resourceInfo === undefined ? {} : { resourceInfo: e.resourceInfo }),
    },
  );
}

/** The WorkflowService implementation for grpc-js. */
export function workflowService(engine: Engine, runs: RunStore): grpc.UntypedServiceImplementation {
  // Why queued tasks wait is the engine's live knowledge of its executor sessions, not stored.
  const pendingReason = (taskRunId: string): string => engine.pendingReason(taskRunId);
  /** Whether the run may be active here: in memory, or parked and loaded back on demand (RUNNING). */
  const mayBeActiveHere = (runId: string): boolean =>
    engine.isActive(runId) || (engine.parking !== undefined && engine.state === "RUNNING");
  /** The pending reasons of a run's tasks: the engine's, or a parked run's from its rows. */
  const reasonsOf = async (d: RunDetail): Promise<PendingReasons> => {
    const parked = engine.isActive(d.run.id)
      ? undefined
      : await parkedPendingReasons(engine.definitions, d.run, d.tasks, new Date());
    return parked === undefined ? pendingReason : (id) => parked.get(id) ?? "";
  };

  /** StartRun: `defaultView` answers an unspecified view (FULL alone, BASIC in StartRuns). */
  async function startRun(req: StartRunRequest, defaultView: RunView): Promise<StartRunResponse> {
    if (req.workflowName === "") throw ApiError.invalid("workflow_name", "a workflow name is required");
    if (req.workflowVersion < 0)
      throw ApiError.invalid("workflow_version", "must be 0 (latest) or a positive version");
    refuseNul(req.workflowName, "workflow_name");
    if (req.idempotencyKey.length > 200) throw ApiError.invalid("idempotency_key", "at most 200 characters");
    refuseNul(req.idempotencyKey, "idempotency_key");
    checkLabels(req.labels);
    if (RunView[req.view] === undefined) throw ApiError.invalid("view", `unknown run view ${req.view}`);
    const view = req.view === RunView.UNSPECIFIED ? defaultView : req.view;
    // INVALID_ARGUMENT naming the field for a Value with no JSON form (NaN, ±Infinity, no kind).
    const input = valueToJsonChecked(req.input, "input");
    refuseNul(input, "input");
    const { runId, created } = await engine.startRun({
      workflowName: req.workflowName,
      workflowVersion: req.workflowVersion,
      input,
      idempotencyKey: req.idempotencyKey,
      labels: { ...req.labels },
    });
    const active = created ? engine.activeRun(runId) : undefined;
    const run =
      view === RunView.BASIC
        ? active !== undefined
          ? runBasicFromState(active)
          : runBasic(await runs.getRun(runId))
        : active !== undefined
          ? runFromState(active, pendingReason)
          : runDetail(await runs.get(runId), pendingReason);
    return create(StartRunResponseSchema, { run, created });
  }

  return {
    registerWorkflow: unary(async (req: RegisterWorkflowRequest) => {
      let spec: unknown;
      if (req.definition.case === "specJson") spec = parseSpecJson(req.definition.value);
      else if (req.definition.case === "spec") {
        // A Value with no JSON form (NaN, no kind) is the client's fault: INVALID_ARGUMENT naming it.
        checkJsonForm(WorkflowSpecSchema, req.definition.value, "spec");
        spec = toJson(WorkflowSpecSchema, req.definition.value);
      } else throw ApiError.invalid("definition", "set spec or spec_json");
      refuseNul(spec, req.definition.case === "specJson" ? "spec_json" : "spec");
      const { row, created } = await engine.definitions.register(spec);
      return create(RegisterWorkflowResponseSchema, { workflow: definition(row), created });
    }),

    getWorkflow: unary(async (req: GetWorkflowRequest) => {
      refuseNul(req.name, "name");
      const row = await engine.definitions.get(req.name, req.version);
      return create(GetWorkflowResponseSchema, { workflow: definition(row) });
    }),

    listWorkflows: unary(async (req: ListWorkflowsRequest) => {
      refuseNul(req.name, "name");
      const page = await engine.definitions.list(req.name, req.pageSize, req.pageToken, req.latestOnly);
      return create(ListWorkflowsResponseSchema, {
        workflows: page.rows.map(definition),
        nextPageToken: page.nextPageToken,
      });
    }),

    startRun: unary((req: StartRunRequest) => startRun(req, RunView.FULL)),

    startRuns: unary(async (req: StartRunsRequest) => {
      if (req.runs.length === 0) throw ApiError.invalid("runs", "at least one run is required");
      if (req.runs.length > MAX_START_RUNS)
        throw ApiError.invalid("runs", `at most ${MAX_START_RUNS} runs per call; got ${req.runs.length}`);
      // Each item as its own StartRun, all at once: they share the engine's next group commit.
      const results = await Promise.all(
        req.runs.map((item, i) => {
          const started =
            item.view === RunView.UNSPECIFIED || item.view === RunView.BASIC
              ? startRun(item, RunView.BASIC)
              : Promise.reject(
                  ApiError.invalid("view", "StartRuns answers RUN_VIEW_BASIC; leave view unset or BASIC"),
                );
          return started.then(
            (value) => create(StartRunResultSchema, { result: { case: "started", value } }),
            (e: unknown) =>
              create(StartRunResultSchema, {
                result: { case: "error", value: toRpcStatus(itemError(e, i)) },
              }),
          );
        }),
      );
      return create(StartRunsResponseSchema, { results });
    }),

    getRun: unary(async (req: GetRunRequest) => {
      const detail = await runs.get(req.runId);
      return create(GetRunResponseSchema, { run: runDetail(detail, await reasonsOf(detail)) });
    }),

    explainPending: unary((req: ExplainPendingRequest) => explainPending(engine, runs, req)),

    listRuns: unary(async (req: ListRunsRequest) => {
      for (const [i, s] of req.statuses.entries()) {
        if (s === RunStatus.UNSPECIFIED || RunStatus[s] === undefined)
          throw ApiError.invalid(`statuses[${i}]`, `unknown run status ${s}`);
      }
      refuseNul(req.workflowName, "workflow_name");
      for (const [k, v] of Object.entries(req.labels)) refuseNul(k + v, `labels[${k}]`);
      if (RunView[req.view] === undefined) throw ApiError.invalid("view", `unknown run view ${req.view}`);
      const page = await runs.list({
        workflowName: req.workflowName,
        statuses: req.statuses.map(runStatusName),
        labels: req.labels,
        createdAfter: filterTime(req.createdAfter, "created_after"),
        createdBefore: filterTime(req.createdBefore, "created_before"),
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      // Lists default to BASIC: a run's input, output and tasks can be megabytes each.
      if (req.view !== RunView.FULL) {
        return create(ListRunsResponseSchema, {
          runs: page.runs.map(runBasic),
          nextPageToken: page.nextPageToken,
        });
      }
      // FULL: stop before the encoded page would pass the bound, but always carry one run.
      const details = await runs.details(page.runs);
      const full: Run[] = [];
      let bytes = PAGE_TOKEN_ROOM;
      for (const detail of details) {
        const run = runDetail(detail, await reasonsOf(detail));
        const length = toBinary(RunSchema, run).length;
        const size = 1 + varintSize(length) + length; // field tag, length, message
        const last = details[full.length - 1];
        if (last !== undefined && bytes + size > LIST_RUNS_PAGE_BYTES)
          return create(ListRunsResponseSchema, { runs: full, nextPageToken: runPageToken(last.run) });
        full.push(run);
        bytes += size;
      }
      return create(ListRunsResponseSchema, { runs: full, nextPageToken: page.nextPageToken });
    }),

    cancelRun: unary(async (req: CancelRunRequest) => {
      checkRunId(req.runId);
      refuseNul(req.reason, "reason");
      // Only active runs can change (a parked one is loaded back); any other run is finished (or
      // missing: NOT_FOUND from the read).
      if (mayBeActiveHere(req.runId)) {
        await engine.cancelRun(
          req.runId,
          req.reason === "" ? "cancelled by request" : req.reason,
          req.compensate,
        );
      }
      const detail = await runs.get(req.runId);
      return create(CancelRunResponseSchema, { run: runDetail(detail, await reasonsOf(detail)) });
    }),

    rerunRun: unary((req: RerunRunRequest) => rerunRun(engine, runs, req, pendingReason)),

    signalRun: unary(async (req: SignalRunRequest) => {
      checkRunId(req.runId);
      if (req.name === "") throw ApiError.invalid("name", "a signal name is required");
      if (!SIGNAL_NAME_PATTERN.test(req.name))
        throw ApiError.invalid(
          "name",
          `${JSON.stringify(req.name.slice(0, 100))} is invalid: ${SIGNAL_NAME_RULE}`,
        );
      if (req.idempotencyKey.length > 200)
        throw ApiError.invalid("idempotency_key", "at most 200 characters");
      refuseNul(req.idempotencyKey, "idempotency_key");
      const payload = valueToJsonChecked(req.payload, "payload");
      refuseNul(payload, "payload");
      const bytes = Buffer.byteLength(JSON.stringify(payload));
      if (bytes > MAX_SIGNAL_PAYLOAD_BYTES)
        throw ApiError.invalid(
          "payload",
          `is ${bytes} bytes as JSON; a signal's payload is at most ${MAX_SIGNAL_PAYLOAD_BYTES}`,
        );
      const key = req.idempotencyKey === "" ? null : req.idempotencyKey;
      const outcome = mayBeActiveHere(req.runId)
        ? await engine.waits.signal(req.runId, { name: req.name, key, payload })
        : undefined;
      if (outcome !== undefined)
        return create(SignalRunResponseSchema, {
          stepId: outcome.stepId ?? "",
          duplicate: outcome.duplicate,
        });
      // Not active here: unknown (NOT_FOUND from the read) or ended; a repeat of a signal it took is
      // still answered as one.
      const row = await runs.getRun(req.runId);
      const stored = key === null ? undefined : storedSignals(row.signals).find((x) => x.key === key);
      if (stored !== undefined)
        return create(SignalRunResponseSchema, { stepId: stored.stepId ?? "", duplicate: true });
      if (!TERMINAL_RUN_STATUSES.has(row.status as RunStatusName))
        throw new ApiError(
          Code.UNAVAILABLE,
          `run ${req.runId} is active but not on this scheduler (recovering, or another replica holds it); retry`,
        );
      throw new ApiError(
        Code.FAILED_PRECONDITION,
        `run ${req.runId} has ended (${row.status}): it takes no more signals`,
      );
    }),

    watchRun: serverStream(
      async (req: WatchRunRequest, send: (m: WatchRunResponse) => Promise<void>, signal: AbortSignal) => {
        checkRunId(req.runId);
        let wake: (() => void) | undefined;
        let dirty = true;
        // Subscribe before the first read so no commit falls between them.
        const unsubscribe = engine.watch(req.runId, () => {
          dirty = true;
          wake?.();
        });
        const onAbort = (): void => wake?.();
        signal.addEventListener("abort", onAbort);
        try {
          let previous = new Map<string, string>();
          let first = true;
          while (!signal.aborted) {
            if (!dirty) {
              await new Promise<void>((resolve) => (wake = resolve));
              wake = undefined;
              continue;
            }
            dirty = false;
            const detail = await runs.get(req.runId);
            const run = runDetail(detail, await reasonsOf(detail));
            // A queued task whose reason to wait changed counts as changed (the engine wakes the
            // stream for that without a commit).
            const current = new Map(
              detail.tasks.map((t, i) => [
                t.id,
                `${t.status}:${t.attempt}:${run.tasks[i]?.pendingReason ?? ""}`,
              ]),
            );
            const changed = first
              ? []
              : [...current].filter(([id, s]) => previous.get(id) !== s).map(([id]) => id);
            if (
              first ||
              changed.length > 0 ||
              TERMINAL_RUN_STATUSES.has(detail.run.status as RunStatusName)
            ) {
              await send(
                create(WatchRunResponseSchema, { run, changedTaskIds: changed, time: timestampNow() }),
              );
            }
            first = false;
            previous = current;
            if (TERMINAL_RUN_STATUSES.has(detail.run.status as RunStatusName)) return;
          }
        } finally {
          unsubscribe();
          signal.removeEventListener("abort", onAbort);
        }
      },
    ),
  };
}
