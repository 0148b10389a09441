/**
 * The Nexusflow client: typed clients of WorkflowService, ArtifactService and ClusterService over
 * one connection, with the bearer token, deadlines and retries of {@link ClientOptions}, and the
 * conveniences a caller needs (start a run safely, wait for it to end).
 */
import { randomUUID } from "node:crypto";
import * as http from "node:http";
import * as https from "node:https";
import { type JsonValue, type MessageInitShape, fromJson, toJson } from "@bufbuild/protobuf";
import { type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  type Interceptor,
  type Transport,
  createClient,
} from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ArtifactService,
  ClusterService,
  EventService,
  type RegisterWorkflowResponse,
  RateLimitService,
  ReplicaService,
  type Run,
  RunStatus,
  RunView,
  ScheduleService,
  type StartRunRequestSchema,
  type WatchRunResponse,
  WorkflowService,
} from "@nexusflow/gen";
import { bearerInterceptor } from "./auth.js";
import { NexusflowClientError } from "./errors.js";
import { type ClientOptions, type CompiledClientOptions, compileClientOptions } from "./options.js";
import { retryDelayMs, retryInterceptor, sleep } from "./retry.js";
import { mergeWatchedRun } from "./watched-run.js";

/** What {@link NexusflowClient.startRun} starts. */
export interface StartRunRequest {
  /** Workflow name. */
  workflowName: string;
  /**
   * Workflow version.
   * @default 0 (the latest)
   */
  workflowVersion?: number | undefined;
  /**
   * The run's input, plain JSON.
   * @default none
   */
  input?: JsonValue | undefined;
  /**
   * Every call with the same key returns the same run, even when calls race (at most 200
   * characters). It is also what makes the call safe to retry after UNAVAILABLE.
   * @default a random UUID, so this call's own retries never start a second run
   */
  idempotencyKey?: string | undefined;
  /**
   * Labels for filtering runs.
   * @default {}
   */
  labels?: Readonly<Record<string, string>> | undefined;
  /**
   * How much of the run the answer carries; RunView.BASIC leaves out input, output and tasks.
   * @default RunView.FULL
   */
  view?: RunView | undefined;
}

/** What {@link NexusflowClient.startRun} answers. */
export interface StartedRun {
  /** The run: new, or the existing one for a repeated idempotency key. */
  readonly run: Run;
  /** True when this call created the run. */
  readonly created: boolean;
}

/**
 * One result of {@link NexusflowClient.startRuns}, in the order of the requests: the run, or the
 * error StartRun would have thrown for that request alone (its field violations name
 * `runs[i].<field>`; read them with {@link fieldViolations}).
 */
export type StartRunsResult =
  ({ readonly ok: true } & StartedRun) | { readonly ok: false; readonly error: ConnectError };

/** How {@link NexusflowClient.waitForRun} waits. */
export interface WaitForRunOptions {
  /**
   * Stops waiting: the promise rejects with CANCELED (a {@link ConnectError}).
   * @default none
   */
  signal?: AbortSignal | undefined;
  /**
   * Gives up after this many milliseconds: the promise rejects with DEADLINE_EXCEEDED.
   * @default none (waits as long as the run takes)
   */
  timeoutMs?: number | undefined;
  /**
   * Called with the run as it changes (the first call is its state when the watch opened). What
   * it throws ends the wait: `waitForRun` rejects with that error, as it is. A run too large for
   * a message (`valuesOmitted`) comes with the values of earlier messages
   * ({@link mergeWatchedRun}): its states are current, values seen since may be missing.
   * @default none
   */
  onUpdate?: ((run: Run) => void) | undefined;
  /**
   * Called with every WatchRun message, the last one (the run ended) included, before
   * `onUpdate`; after the watch is opened again, its first message is the run's current state.
   * For callers that show the messages themselves (changed task ids, time, annotations). The
   * message is as received: with `valuesOmitted` set, its run has no values (inputs, outputs,
   * error details, signal payloads).
   * @default none
   */
  onMessage?: ((message: WatchRunResponse) => void) | undefined;
}

/** Run states that never change again. */
export const TERMINAL_RUN_STATUSES: ReadonlySet<RunStatus> = new Set([
  RunStatus.SUCCEEDED,
  RunStatus.FAILED,
  RunStatus.CANCELLED,
  RunStatus.TIMED_OUT,
  RunStatus.COMPENSATED,
  RunStatus.COMPENSATION_FAILED,
]);

/** Whether a run in `status` has ended (and so will not change again). */
export function isTerminalRunStatus(status: RunStatus): boolean {
  return TERMINAL_RUN_STATUSES.has(status);
}

/** The run's output as plain JSON, or undefined when it has none (yet, or in a BASIC view). */
export function runOutput(run: Run): JsonValue | undefined {
  return run.output === undefined ? undefined : toJson(ValueSchema, run.output);
}

/**
 * Errors after which a watch is opened again: the connection lost (UNAVAILABLE, or the stream
 * cut: ABORTED, CANCELED by the server, INTERNAL from an HTTP/2 reset). Watching is a read, so
 * repeating it is always safe; the first message of every watch is the run's current state.
 */
const REWATCH_CODES: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.Aborted,
  Code.Canceled,
  Code.Internal,
]);

/**
 * A client of the Nexusflow API.
 *
 * ```ts
 * const nexusflow = new NexusflowClient({ baseUrl: "http://127.0.0.1:8080", token: () => getToken() });
 * const { run } = await nexusflow.startRun({ workflowName: "order", input: { orderId: "o-1" } });
 * const done = await nexusflow.waitForRun(run.id, { signal });
 * ```
 */
export class NexusflowClient {
  /** WorkflowService: every RPC, typed, with this client's token, deadline and retries. */
  readonly workflows: Client<typeof WorkflowService>;
  /** ArtifactService: logs and files of runs, with this client's token, deadline and retries. */
  readonly artifacts: Client<typeof ArtifactService>;
  /** ClusterService: the executor sessions attached to the scheduler, with this client's token. */
  readonly cluster: Client<typeof ClusterService>;
  /** ScheduleService: cron schedules that start runs, with this client's token, deadline and retries. */
  readonly schedules: Client<typeof ScheduleService>;
  /** ReplicaService: the scheduler replicas and the partitions they own, with this client's token. */
  readonly replicas: Client<typeof ReplicaService>;
  /** EventService: publish events that start the runs of workflows whose triggers match them. */
  readonly events: Client<typeof EventService>;
  /** RateLimitService: list rate limit buckets, pause or resume a key. */
  readonly rateLimits: Client<typeof RateLimitService>;
  /** The options in effect, defaults applied. */
  readonly options: CompiledClientOptions;
  readonly #release: () => void;

  /** Throws {@link NexusflowClientError} `INVALID_OPTIONS` for a bad option. */
  constructor(options: ClientOptions = {}) {
    this.options = compileClientOptions(options);
    const { transport, release } = createTransport(this.options);
    this.#release = release;
    this.workflows = createClient(WorkflowService, transport);
    this.artifacts = createClient(ArtifactService, transport);
    this.cluster = createClient(ClusterService, transport);
    this.schedules = createClient(ScheduleService, transport);
    this.replicas = createClient(ReplicaService, transport);
    this.events = createClient(EventService, transport);
    this.rateLimits = createClient(RateLimitService, transport);
  }

  /**
   * Registers a workflow definition, given as JSON text or as the parsed JSON (the format of
   * the files in examples/). Identical content under an existing (name, version) changes nothing
   * (`created: false`); an invalid definition is INVALID_ARGUMENT with every problem in
   * {@link fieldViolations}.
   */
  async registerWorkflow(
    definition: string | JsonValue,
    options?: CallOptions,
  ): Promise<RegisterWorkflowResponse> {
    let specJson: string;
    try {
      specJson = typeof definition === "string" ? definition : JSON.stringify(definition);
    } catch (e) {
      throw new NexusflowClientError("INVALID_INPUT", "the definition cannot be written as JSON", {
        cause: e,
      });
    }
    if (typeof specJson !== "string") {
      throw new NexusflowClientError("INVALID_INPUT", "the definition cannot be written as JSON");
    }
    return this.workflows.registerWorkflow({ definition: { case: "specJson", value: specJson } }, options);
  }

  /**
   * Starts a run. Always with an idempotency key (a random one unless you give yours), so a call
   * retried after UNAVAILABLE never starts a second run. Throws {@link NexusflowClientError}
   * `INVALID_INPUT` when `input` is not JSON.
   */
  async startRun(request: StartRunRequest, options?: CallOptions): Promise<StartedRun> {
    const response = await this.workflows.startRun(startRunMessage(request, ""), options);
    return { run: required(response.run, "StartRun"), created: response.created };
  }

  /**
   * Starts up to 1000 runs in one call, committed together; each request gets its own result (a
   * RUN_VIEW_BASIC run, or its error), so one bad request does not fail the others. Every request
   * gets an idempotency key (a random one unless you give yours), which makes the whole call safe
   * to retry after UNAVAILABLE. Throws {@link NexusflowClientError} `INVALID_INPUT` naming the
   * request whose input is not JSON; the call itself fails only for no requests or too many.
   */
  async startRuns(requests: readonly StartRunRequest[], options?: CallOptions): Promise<StartRunsResult[]> {
    const runs = requests.map((request, i) => startRunMessage(request, `runs[${i}]: `));
    const response = await this.workflows.startRuns({ runs }, options);
    return response.results.map((result): StartRunsResult => {
      if (result.result.case === "started") {
        const started = result.result.value;
        return { ok: true, run: required(started.run, "StartRuns"), created: started.created };
      }
      const status = result.result.value;
      const error = new ConnectError(
        status?.message ?? "StartRuns answered no result for this run",
        status === undefined ? Code.Internal : status.code,
      );
      // As a status received in grpc-status-details-bin: findDetails() decodes them.
      for (const detail of status?.details ?? [])
        error.details.push({
          type: detail.typeUrl.slice(detail.typeUrl.lastIndexOf("/") + 1),
          value: detail.value,
        });
      return { ok: false, error };
    });
  }

  /** The run with every task and attempt. NOT_FOUND for an unknown id. */
  async getRun(runId: string, options?: CallOptions): Promise<Run> {
    return required((await this.workflows.getRun({ runId }, options)).run, "GetRun");
  }

  /**
   * Sends a signal to a run: it completes the run's wait step for `name` with `payload` as the
   * step's output, or is kept on the run until such a step waits. With an idempotency key it is
   * stored once (and retried on UNAVAILABLE). FAILED_PRECONDITION once the run has ended. Throws
   * {@link NexusflowClientError} `INVALID_INPUT` when `payload` cannot be sent as JSON.
   */
  async signalRun(
    runId: string,
    name: string,
    request: { payload?: JsonValue | undefined; idempotencyKey?: string | undefined } = {},
    options?: CallOptions,
  ): Promise<{ stepId: string; duplicate: boolean }> {
    const response = await this.workflows.signalRun(
      {
        runId,
        name,
        ...(request.payload === undefined
          ? {}
          : { payload: jsonValue(request.payload, "the signal's payload") }),
        idempotencyKey: request.idempotencyKey ?? "",
      },
      options,
    );
    return { stepId: response.stepId, duplicate: response.duplicate };
  }

  /**
   * Reruns an ended run from `fromStep`: a new run of the same workflow version and input that
   * takes over the stored outputs of the steps upstream of it and runs it and everything
   * downstream again, optionally with a new input for `fromStep`. Always with an idempotency key
   * (a random one unless you give yours), so a call retried after UNAVAILABLE never starts a second
   * rerun. FAILED_PRECONDITION while the run is active, or when a step upstream did not succeed.
   * Throws {@link NexusflowClientError} `INVALID_INPUT` when `stepInput` cannot be sent as JSON.
   */
  async rerunRun(
    runId: string,
    fromStep: string,
    request: { stepInput?: JsonValue | undefined; idempotencyKey?: string | undefined } = {},
    options?: CallOptions,
  ): Promise<StartedRun> {
    const response = await this.workflows.rerunRun(
      {
        runId,
        fromStep,
        ...(request.stepInput === undefined
          ? {}
          : { stepInput: jsonValue(request.stepInput, "the rerun step's input") }),
        idempotencyKey: request.idempotencyKey ?? randomUUID(),
      },
      options,
    );
    return { run: required(response.run, "RerunRun"), created: response.created };
  }

  /** Cancels a run (idempotent) and returns it as it is after the request. */
  async cancelRun(
    runId: string,
    request: { reason?: string | undefined; compensate?: boolean | undefined } = {},
    options?: CallOptions,
  ): Promise<Run> {
    const response = await this.workflows.cancelRun(
      { runId, reason: request.reason ?? "", compensate: request.compensate ?? false },
      options,
    );
    return required(response.run, "CancelRun");
  }

  /**
   * Waits until the run has ended (any of {@link TERMINAL_RUN_STATUSES}, failures included: look
   * at `status`) and returns it, with its output and tasks. Watches with WatchRun; when the
   * connection is lost (the server restarting, say) it watches again, with the client's retry
   * backoff, and gives up after `retry.maxAttempts` failures in a row without news. Rejects with
   * NOT_FOUND for an unknown run, CANCELED when `signal` aborts, DEADLINE_EXCEEDED after `timeoutMs`.
   * A run too large for WatchRun's messages to carry its values (`valuesOmitted`) is read once with
   * GetRun when it has ended, so the run returned is whole.
   */
  async waitForRun(runId: string, options: WaitForRunOptions = {}): Promise<Run> {
    const controller = new AbortController();
    const signal = controller.signal;
    const onAbort = (): void =>
      controller.abort(ConnectError.from(options.signal?.reason ?? "aborted", Code.Canceled));
    let timer: NodeJS.Timeout | undefined;
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      if (!Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > 2_147_483_647) {
        throw new NexusflowClientError(
          "INVALID_OPTIONS",
          `timeoutMs must be a non-negative integer, got ${timeoutMs}`,
        );
      }
      timer = setTimeout(
        () =>
          controller.abort(
            new ConnectError(`run ${runId} did not end within ${timeoutMs} ms`, Code.DeadlineExceeded),
          ),
        timeoutMs,
      );
    }
    if (options.signal?.aborted === true) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    const { retry } = this.options;
    try {
      let failures = 0;
      /** The run as last seen, with the values of earlier messages kept (see mergeWatchedRun). */
      let known: Run | undefined;
      for (;;) {
        let lastError: unknown;
        /** True while onMessage or onUpdate runs: what it throws is the caller's, not the watch's. */
        let callbackFailed = false;
        // One controller per watch: leaving the loop early must end the stream on the wire.
        const watch = new AbortController();
        const onStop = (): void => watch.abort(signal.reason);
        signal.addEventListener("abort", onStop, { once: true });
        try {
          for await (const message of this.workflows.watchRun(
            { runId },
            { signal: watch.signal, timeoutMs: 0 },
          )) {
            if (message.run === undefined) continue;
            const run = message.valuesOmitted ? mergeWatchedRun(known, message.run) : message.run;
            known = run;
            failures = 0;
            callbackFailed = true;
            options.onMessage?.(message);
            callbackFailed = false;
            if (isTerminalRunStatus(run.status)) {
              if (!message.valuesOmitted) return run;
              // Its last message came without the values: GetRun has them (its output, its error).
              watch.abort();
              return await this.getRun(runId, { signal });
            }
            callbackFailed = true;
            options.onUpdate?.(run);
            callbackFailed = false;
          }
          lastError = new NexusflowClientError(
            "WATCH_ENDED",
            `the watch of run ${runId} ended before the run did`,
          );
        } catch (e) {
          // The caller's own callback threw: its error, as it is (not an RPC status).
          if (callbackFailed) throw e;
          if (signal.aborted) throw ConnectError.from(signal.reason, Code.Canceled);
          const error = ConnectError.from(e);
          if (!REWATCH_CODES.has(error.code)) throw error;
          lastError = error;
        } finally {
          signal.removeEventListener("abort", onStop);
          watch.abort();
        }
        failures++;
        if (failures >= retry.maxAttempts) throw lastError;
        try {
          await sleep(retryDelayMs(failures, retry), signal);
        } catch {
          throw ConnectError.from(signal.reason, Code.Canceled);
        }
      }
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Closes the client's connections; calls still in flight fail. Idempotent. */
  close(): void {
    this.#release();
  }
}

/**
 * The StartRunRequest message of `request`: its input as a Value, and an idempotency key (a random
 * one unless it has its own). Throws `INVALID_INPUT` (its message starting with `where`) when the
 * input is not JSON.
 */
function startRunMessage(
  request: StartRunRequest,
  where: string,
): MessageInitShape<typeof StartRunRequestSchema> {
  const input = request.input === undefined ? undefined : jsonValue(request.input, `${where}the run's input`);
  return {
    workflowName: request.workflowName,
    workflowVersion: request.workflowVersion ?? 0,
    input,
    idempotencyKey: request.idempotencyKey ?? randomUUID(),
    labels: { ...request.labels },
    view: request.view ?? RunView.UNSPECIFIED,
  };
}

/**
 * `value` as a protobuf Value; throws {@link NexusflowClientError} `INVALID_INPUT`, its message
 * starting with `what`, for what has no JSON form (undefined, a function, a bigint, a cycle) or is
 * nested deeper than a Value can be.
 */
function jsonValue(value: JsonValue, what: string): Value {
  try {
    return fromJson(ValueSchema, value);
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new NexusflowClientError("INVALID_INPUT", `${what} cannot be sent as JSON: ${reason}`, {
      cause: e,
    });
  }
}

function required(run: Run | undefined, rpc: string): Run {
  if (run === undefined)
    throw new ConnectError(`protocol error: ${rpc} answered without a run`, Code.Internal);
  return run;
}

/** An HTTP/2 session's memory, in MB (http2's `maxSessionMemory`): above the largest request a server takes. */
const HTTP2_SESSION_MEMORY_MB = 64;

/**
 * The transport of {@link CompiledClientOptions}: retries outermost (so each attempt asks for the
 * token again), then the token, then the caller's interceptors; unary calls get the default
 * deadline, streams none.
 */
function createTransport(options: CompiledClientOptions): { transport: Transport; release: () => void } {
  const interceptors: Interceptor[] = [
    retryInterceptor(options.retry),
    ...(options.token === undefined ? [] : [bearerInterceptor(options.token)]),
    ...options.interceptors,
  ];
  const { baseUrl } = options;
  let transport: Transport;
  let release: () => void;
  if (options.httpVersion === "2") {
    // The session may hold a whole request (a scheduler takes up to 16 MiB): with http2's default
    // 10 MB, a server that answers a large request before reading all of it (refused for its size,
    // its token) made Node reset that answer (ENHANCE_YOUR_CALM) and every later one on the session.
    const sessionManager = new Http2SessionManager(baseUrl, undefined, {
      maxSessionMemory: HTTP2_SESSION_MEMORY_MB,
    });
    transport =
      options.protocol === "grpc"
        ? createGrpcTransport({ baseUrl, sessionManager, interceptors })
        : createConnectTransport({
            baseUrl,
            httpVersion: "2",
            sessionManager,
            interceptors,
            useBinaryFormat: true,
          });
    release = () => sessionManager.abort();
  } else {
    const agent = baseUrl.startsWith("https:")
      ? new https.Agent({ keepAlive: true })
      : new http.Agent({ keepAlive: true });
    transport = createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      nodeOptions: { agent },
      interceptors,
      useBinaryFormat: true,
    });
    release = () => agent.destroy();
  }
  const timeoutMs = options.timeoutMs;
  return {
    transport: {
      unary(method, signal, callTimeoutMs, header, input, contextValues) {
        return transport.unary(method, signal, callTimeoutMs ?? timeoutMs, header, input, contextValues);
      },
      stream(method, signal, callTimeoutMs, header, input, contextValues) {
        return transport.stream(method, signal, callTimeoutMs, header, input, contextValues);
      },
    },
    release,
  };
}
