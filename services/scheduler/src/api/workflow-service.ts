/** WorkflowService over gRPC: validates requests, calls the engine and the stores. */
import { create, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
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
  RunStatus,
  RunView,
  StartRunResponseSchema,
  StartRunResultSchema,
  StartRunsResponseSchema,
  type StartRunResponse,
  type StartRunsRequest,
  WorkflowSpecSchema,
  type CancelRunRequest,
  type SignalRunRequest,
  SignalRunResponseSchema,
  type SignalRunResponse,
  type CancelRunResponse,
  type ExplainPendingRequest,
  type GetRunRequest,
  type GetRunResponse,
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
import { NAME_PATTERN, SIGNAL_NAME_PATTERN, SIGNAL_NAME_RULE } from "../dag/index.js";
import { NAME_RULE } from "../dag/checker.js";
import { refuseReservedKey } from "../engine/keyed-starts.js";
import { TERMINAL_RUN_STATUSES, type RunStatusName, type SignalState } from "../model/run-state.js";
import {
  checkRunId,
  runPageToken,
  type RunDetail,
  type RunFilter,
  type RunStore,
} from "../persistence/run-store.js";
import { parkedPendingReasons } from "../engine/parked-reasons.js";
import {
  MAX_RUN_ANSWER_BYTES,
  basicOf,
  boundedRun,
  definition,
  encodedRunSize,
  runBasic,
  runBasicFromState,
  runDetail,
  runFromState,
  runStatusName,
  runTooDeep,
  type PendingReasons,
} from "./convert.js";
import { refuseTooDeep, RUN_INPUT_DEPTH, STEP_OUTPUT_DEPTH } from "../model/answer-depth.js";
import {
  type IncomingCall,
  type ReplicaAddress,
  type ReplicaRouter,
  forwardedBy,
  isRunMoving,
  runMoving,
} from "../cluster/replica-router.js";
import { keyPartition } from "../cluster/partitioning.js";
import { checkExplainPending, explainPending } from "./explain-pending.js";
import { checkRerunRequest, rerunRun } from "./rerun-run.js";
import { watchRun } from "./watch-run.js";

/**
 * Largest encoded ListRuns page in RUN_VIEW_FULL: under the 4 MiB that grpcurl, grpcio and grpc-js
 * accept by default, with room for the rest of the response and framing (as one run's answer).
 */
export const LIST_RUNS_PAGE_BYTES = MAX_RUN_ANSWER_BYTES;
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

/**
 * The WorkflowService implementation for grpc-js. With a `router` (a replica of a cluster,
 * cluster/replica-router.ts), a call for a run whose partition another live replica holds is
 * forwarded to it, and so is a StartRun this replica cannot take (see {@link startTarget}).
 */
export function workflowService(
  engine: Engine,
  runs: RunStore,
  router?: ReplicaRouter,
  /** How long finished runs are kept (0: for ever); RerunRun refuses a run due for deletion. */
  runRetentionMs = 0,
): grpc.UntypedServiceImplementation {
  /**
   * The replica a call for `runId` is answered by: undefined for this one (it holds the run's
   * partition; or no live replica does, and it answers as it can), else its live owner. A call
   * forwarded here already is never forwarded again: UNAVAILABLE "moving" when the run is not here.
   */
  const ownerElsewhere = async (runId: string, call: IncomingCall): Promise<ReplicaAddress | undefined> => {
    if (router === undefined || router.holdsRun(runId)) return undefined;
    if (forwardedBy(call.metadata) !== undefined) throw runMoving(runId);
    const owner = await router.ownerOfRun(runId);
    return owner === undefined || owner.id === router.replicaId ? undefined : owner;
  };
  /** A run-scoped call: answered by `local` here, or forwarded as it came to the run's owner. */
  const routed = async <Res>(
    method: string,
    runId: string,
    req: unknown,
    call: IncomingCall,
    local: () => Promise<Res>,
  ): Promise<Res> => {
    const owner = await ownerElsewhere(runId, call);
    if (owner === undefined || router === undefined) return local();
    try {
      return await router.forward<Res>(method, owner, req, call, async () => {
        if (router.holdsRun(runId)) return undefined;
        return router.ownerOfRun(runId);
      });
    } catch (e) {
      // The owner had let it go, and it came here meanwhile (the owner acted on nothing).
      if (isRunMoving(e) && router.holdsRun(runId)) return local();
      throw e;
    }
  };
  /**
   * Where a new run (StartRun, RerunRun) is started: undefined here, else a live replica. A keyed
   * start goes to the owner of its key's partition (keyPartition), so that two calls with one key
   * at two replicas are answered by one; an unkeyed one stays here unless this replica holds no
   * partition. Forwarded calls stay here.
   */
  const startTarget = async (
    workflowName: string,
    key: string,
    call: IncomingCall,
  ): Promise<ReplicaAddress | undefined> => {
    if (router === undefined) return undefined;
    if (forwardedBy(call.metadata) !== undefined) {
      // Sent here as the key's owner: started here only while that is still so (a key whose
      // partition moved meanwhile is its new owner's to answer, from what it committed).
      if (key !== "" && !router.holds(keyPartition(workflowName, key, router.partitionCount)))
        throw new ApiError(
          Code.UNAVAILABLE,
          "the partition of this idempotency key is moving between scheduler replicas; retry with the same key",
        );
      return undefined;
    }
    if (key !== "") {
      const partition = keyPartition(workflowName, key, router.partitionCount);
      const owner = await router.ownerOf(partition);
      if (owner !== undefined && owner.id !== router.replicaId) return owner;
      if (owner !== undefined) return undefined;
      // No live replica holds the key's partition (a takeover under way): its next owner answers
      // the key from what is committed by then, so a run started here meanwhile could be a second.
      throw new ApiError(
        Code.UNAVAILABLE,
        "no scheduler replica holds the partition of this idempotency key now (a takeover is under way); retry with the same key",
      );
    }
    return router.holdsAny() ? undefined : router.anyOwner();
  };
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
  /** StartRun's checks of its request (before it is started here or forwarded). */
  function checkStartRun(req: StartRunRequest): void {
    if (req.workflowName === "") throw ApiError.invalid("workflow_name", "a workflow name is required");
    if (req.workflowVersion < 0)
      throw ApiError.invalid("workflow_version", "must be 0 (latest) or a positive version");
    // No registered workflow has another name: NOT_FOUND would echo a name of megabytes.
    if (!NAME_PATTERN.test(req.workflowName))
      throw ApiError.invalid(
        "workflow_name",
        `${JSON.stringify(req.workflowName.slice(0, 100))} is not a workflow name: ${NAME_RULE}`,
      );
    if (req.idempotencyKey.length > 200) throw ApiError.invalid("idempotency_key", "at most 200 characters");
    refuseNul(req.idempotencyKey, "idempotency_key");
    refuseReservedKey(req.idempotencyKey, "idempotency_key");
    checkLabels(req.labels);
    if (RunView[req.view] === undefined) throw ApiError.invalid("view", `unknown run view ${req.view}`);
    // INVALID_ARGUMENT naming the field for a Value with no JSON form (NaN, ±Infinity, no kind).
    const input = valueToJsonChecked(req.input, "input");
    refuseNul(input, "input");
    refuseTooDeep(input, RUN_INPUT_DEPTH, "input");
  }

  /**
   * StartRun: `defaultView` answers an unspecified view (FULL alone, BASIC in StartRuns). Started
   * here, or forwarded to the replica {@link startTarget} names (with the view set).
   */
  async function startRun(
    req: StartRunRequest,
    defaultView: RunView,
    call: IncomingCall,
  ): Promise<StartRunResponse> {
    checkStartRun(req);
    const view = req.view === RunView.UNSPECIFIED ? defaultView : req.view;
    const target = await startTarget(req.workflowName, req.idempotencyKey, call);
    if (target !== undefined && router !== undefined)
      return router.forward<StartRunResponse>("startRun", target, { ...req, view }, call);
    const input = valueToJsonChecked(req.input, "input");
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
        : boundedRun(
            active !== undefined
              ? runFromState(active, pendingReason)
              : runDetail(await runs.get(runId), pendingReason),
          );
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

    startRun: unary((req: StartRunRequest, call) => startRun(req, RunView.FULL, call)),

    startRuns: unary(async (req: StartRunsRequest, call) => {
      if (req.runs.length === 0) throw ApiError.invalid("runs", "at least one run is required");
      if (req.runs.length > MAX_START_RUNS)
        throw ApiError.invalid("runs", `at most ${MAX_START_RUNS} runs per call; got ${req.runs.length}`);
      // A replica holding no partition sends a batch without keys on whole (items keep their index).
      if (
        router !== undefined &&
        forwardedBy(call.metadata) === undefined &&
        !router.holdsAny() &&
        req.runs.every((item) => item.idempotencyKey === "")
      ) {
        const target = await router.anyOwner();
        if (target !== undefined) return router.forward("startRuns", target, req, call);
      }
      // Each item as its own StartRun, all at once: they share the engine's next group commit (an
      // item whose key another replica answers for is sent there alone).
      const results = await Promise.all(
        req.runs.map((item, i) => {
          const started =
            item.view === RunView.UNSPECIFIED || item.view === RunView.BASIC
              ? startRun(item, RunView.BASIC, call)
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

    getRun: unary(async (req: GetRunRequest, call) => {
      const detail = await runs.get(req.runId);
      const local = async (): Promise<GetRunResponse> =>
        create(GetRunResponseSchema, { run: runDetail(detail, await reasonsOf(detail)) });
      // Served from the database anywhere, but why a queued task waits is its owner's live knowledge
      // (its executor sessions): an active run with a queued task held elsewhere is asked there.
      if (
        router === undefined ||
        router.holdsRun(req.runId) ||
        forwardedBy(call.metadata) !== undefined ||
        TERMINAL_RUN_STATUSES.has(detail.run.status as RunStatusName) ||
        !detail.tasks.some((t) => t.status === "QUEUED")
      )
        return local();
      const owner = await router.ownerOfRun(req.runId);
      if (owner === undefined || owner.id === router.replicaId) return local();
      // A read is answered even when the owner is not: from the rows, without the live reasons.
      return router.forward<GetRunResponse>("getRun", owner, req, call).catch(local);
    }),

    explainPending: unary(async (req: ExplainPendingRequest, call) => {
      checkExplainPending(req);
      return routed("explainPending", req.runId, req, call, () => explainPending(engine, runs, req));
    }),

    listRuns: unary(async (req: ListRunsRequest) => {
      for (const [i, s] of req.statuses.entries()) {
        if (s === RunStatus.UNSPECIFIED || RunStatus[s] === undefined)
          throw ApiError.invalid(`statuses[${i}]`, `unknown run status ${s}`);
      }
      refuseNul(req.workflowName, "workflow_name");
      for (const [k, v] of Object.entries(req.labels)) refuseNul(k + v, `labels[${k}]`);
      if (RunView[req.view] === undefined) throw ApiError.invalid("view", `unknown run view ${req.view}`);
      const filter: RunFilter = {
        workflowName: req.workflowName,
        statuses: req.statuses.map(runStatusName),
        labels: req.labels,
        createdAfter: filterTime(req.createdAfter, "created_after"),
        createdBefore: filterTime(req.createdBefore, "created_before"),
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      };
      const page = await runs.list(filter);
      // Lists default to BASIC: a run's input, output and tasks can be megabytes each.
      if (req.view !== RunView.FULL) {
        return create(ListRunsResponseSchema, {
          runs: page.runs.map(runBasic),
          nextPageToken: page.nextPageToken,
        });
      }
      // FULL: stop before the encoded page would pass the bound, but always carry one run: a run
      // that passes it alone (or that nests too deep for a client to decode) comes alone, in the
      // BASIC view, as StartRun would answer it.
      const details = await runs.details(page.runs);
      const full: Run[] = [];
      let bytes = PAGE_TOKEN_ROOM;
      for (const [i, detail] of details.entries()) {
        const run = runDetail(detail, await reasonsOf(detail));
        const length = encodedRunSize(run);
        const size = 1 + varintSize(length) + length; // field tag, length, message
        const tooLarge = PAGE_TOKEN_ROOM + size > LIST_RUNS_PAGE_BYTES || runTooDeep(run);
        const last = details[i - 1];
        if (last !== undefined && (tooLarge || bytes + size > LIST_RUNS_PAGE_BYTES))
          return create(ListRunsResponseSchema, {
            runs: full,
            nextPageToken: runPageToken(last.run, filter),
          });
        if (tooLarge) {
          const nextPageToken =
            i === details.length - 1 ? page.nextPageToken : runPageToken(detail.run, filter);
          return create(ListRunsResponseSchema, { runs: [basicOf(run)], nextPageToken });
        }
        full.push(run);
        bytes += size;
      }
      return create(ListRunsResponseSchema, { runs: full, nextPageToken: page.nextPageToken });
    }),

    cancelRun: unary(async (req: CancelRunRequest, call) => {
      checkRunId(req.runId);
      refuseNul(req.reason, "reason");
      return routed("cancelRun", req.runId, req, call, () => cancelHere(req));
    }),

    rerunRun: unary(async (req: RerunRunRequest, call) => {
      checkRerunRequest(req);
      if (router !== undefined && forwardedBy(call.metadata) === undefined) {
        // The key's partition names the replica that answers for the key (as StartRun's).
        const workflowName = req.idempotencyKey === "" ? "" : (await runs.getRun(req.runId)).workflowName;
        const target = await startTarget(workflowName, req.idempotencyKey, call);
        if (target !== undefined) return router.forward("rerunRun", target, req, call);
      }
      return rerunRun(engine, runs, req, pendingReason, runRetentionMs);
    }),

    signalRun: unary(async (req: SignalRunRequest, call) => {
      checkSignalRun(req);
      return routed("signalRun", req.runId, req, call, () => signalHere(req));
    }),

    watchRun: serverStream(
      (req: WatchRunRequest, send: (m: WatchRunResponse) => Promise<void>, signal: AbortSignal, call) =>
        watchRun({ engine, runs, router, reasonsOf }, req, send, signal, call),
    ),
  };

  /** CancelRun of a run this replica answers for. */
  async function cancelHere(req: CancelRunRequest): Promise<CancelRunResponse> {
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
    return create(CancelRunResponseSchema, { run: boundedRun(runDetail(detail, await reasonsOf(detail))) });
  }

  /** SignalRun's checks of its request (before it is answered here or forwarded). */
  function checkSignalRun(req: SignalRunRequest): void {
    checkRunId(req.runId);
    if (req.name === "") throw ApiError.invalid("name", "a signal name is required");
    if (!SIGNAL_NAME_PATTERN.test(req.name))
      throw ApiError.invalid(
        "name",
        `${JSON.stringify(req.name.slice(0, 100))} is invalid: ${SIGNAL_NAME_RULE}`,
      );
    if (req.idempotencyKey.length > 200) throw ApiError.invalid("idempotency_key", "at most 200 characters");
    refuseNul(req.idempotencyKey, "idempotency_key");
    const payload = valueToJsonChecked(req.payload, "payload");
    refuseNul(payload, "payload");
    refuseTooDeep(payload, STEP_OUTPUT_DEPTH, "payload");
    const bytes = Buffer.byteLength(JSON.stringify(payload));
    if (bytes > MAX_SIGNAL_PAYLOAD_BYTES)
      throw ApiError.invalid(
        "payload",
        `is ${bytes} bytes as JSON; a signal's payload is at most ${MAX_SIGNAL_PAYLOAD_BYTES}`,
      );
  }

  /** SignalRun of a run this replica answers for. */
  async function signalHere(req: SignalRunRequest): Promise<SignalRunResponse> {
    const payload = valueToJsonChecked(req.payload, "payload");
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
  }
}
