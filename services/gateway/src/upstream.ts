/**
 * The gateway's connection to the scheduler replicas: a Connect `Transport` over one or more
 * addresses (SCHEDULER_ADDRESS, comma-separated), with one HTTP/2 session manager and one gRPC
 * transport per address. Every replica answers every call (a replica forwards run-scoped calls to
 * the run's owner), so the gateway only has to reach one that is alive.
 *
 * Calls go to the preferred address: the first one at start, then the last one that answered (an
 * address whose connection fails hands the preference to the next one at once).
 * When an attempt fails without a scheduler having answered, what it saw of its HTTP/2 stream
 * decides what happens next:
 * - the request never reached a scheduler: the connection could not be made (refused, host
 *   unreachable, ...) so no stream was opened, or the stream was refused (`REFUSED_STREAM`, also
 *   what streams above a GOAWAY's last stream id end with; RFC 9113 §8.7: not processed). Any call
 *   is then sent again to each other address in turn, once, and the preferred address moves to the
 *   one that answers;
 * - the connection broke after the request went out and before any response byte: the request
 *   may have been applied. Only a call safe to repeat (a method read with HTTP GET in its
 *   `google.api.http` rule: GetRun, ListRuns, WatchRun, ...) is sent again; any other
 *   (StartRun, CancelRun, ...) fails with UNAVAILABLE, which the client may retry, with an
 *   idempotency key where it has one.
 * A streaming call is sent again only before its response started (nothing received yet), and
 * only a server-streaming one (its one request message is kept; a client stream cannot be replayed).
 * A connection that breaks after the response started ends the call with UNAVAILABLE. HTTP/2 PINGs
 * (`pingIntervalMs`) tell a replica that stopped answering (a paused process, a vanished host)
 * from a slow one: its connection is closed and its calls fail over as above.
 *
 * Whatever a scheduler answers (an error status in headers or trailers) is returned as it is,
 * UNAVAILABLE included ("moving between replicas": the client retries), and counts as that
 * address being alive. A call aborted by its caller (cancel, deadline, the gateway draining) is
 * never sent again. The UNAVAILABLE errors made here never name an address: the schedulers'
 * addresses are internal, so they and what each failed with are logged (warn), and the client is
 * told that the scheduler is unavailable.
 *
 * How an attempt's stream is seen: the calls of an attempt run in an AsyncLocalStorage context;
 * each address's `Http2SessionManager` is a subclass whose `request()` (called by connect-node
 * for every call, in that context) records the stream it opened, or that it could not open one.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import * as http2 from "node:http2";
import {
  type DescMessage,
  type DescMethod,
  type DescMethodStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  getOption,
  hasOption,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type Interceptor,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import {
  type Logger,
  MAX_GATEWAY_REQUEST_BYTES,
  type ReadinessCheck,
  ServingStatus,
  createLogger,
  sharedReadiness,
} from "@nexusflow/common";
import { http } from "@nexusflow/gen/google/api/annotations_pb";

/** Options of {@link createUpstream}. */
export interface UpstreamOptions {
  /** The schedulers' gRPC addresses, host:port (plain HTTP/2); at least one, none twice. */
  addresses: readonly string[];
  /**
   * Client interceptors of every attempt (each attempt is one call to one address).
   * @default none
   */
  interceptors?: Interceptor[];
  /**
   * Logger: a failover and each address that fails are logged at warn level.
   * @default a silent logger
   */
  logger?: Logger;
  /**
   * A connection with calls open is sent an HTTP/2 PING when it has received nothing for this
   * long, and a connection idle for longer is checked with one before its next call: a replica
   * that stopped answering without closing its connections (paused, or its host gone) is noticed.
   * @default 5000
   */
  pingIntervalMs?: number;
  /**
   * A PING unanswered after this long closes the connection: its calls fail over as a connection
   * that broke. @default 3000
   */
  pingTimeoutMs?: number;
  /**
   * A connection not made after this long is given up (its calls go to the next address), rather
   * than waiting for the operating system's connect timeout (minutes) on an address that drops
   * packets. @default 5000
   */
  connectTimeoutMs?: number;
}

interface CompiledUpstreamOptions {
  addresses: readonly string[];
  interceptors: Interceptor[];
  logger: Logger;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  connectTimeoutMs: number;
}

/** Lifecycle states of an {@link Upstream}. */
export type UpstreamState = "open" | "closed";

/** A Connect transport to the scheduler replicas, failing over between their addresses. */
export interface Upstream extends Transport {
  /** The addresses, in the order given. */
  readonly addresses: readonly string[];
  /** The address the next call goes to first. */
  readonly preferred: string;
  readonly state: UpstreamState;
  /** Closes every session; calls after it fail with UNAVAILABLE. Idempotent. */
  close(): void;
}

/** The addresses were not a non-empty list of distinct host:port. */
export class UpstreamAddressError extends Error {
  override name = "UpstreamAddressError";
}

/** Creates the transport; no connection is made before the first call. */
export function createUpstream(options: UpstreamOptions): Upstream {
  const { addresses } = options;
  if (addresses.length === 0) throw new UpstreamAddressError("no scheduler address given");
  const seen = new Set<string>();
  for (const address of addresses) {
    if (seen.has(address)) throw new UpstreamAddressError(`scheduler address ${address} is listed twice`);
    seen.add(address);
  }
  return new FailoverUpstream({
    addresses,
    interceptors: options.interceptors ?? [],
    logger: options.logger ?? createLogger("gateway", "silent"),
    pingIntervalMs: options.pingIntervalMs ?? 5000,
    pingTimeoutMs: options.pingTimeoutMs ?? 3000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5000,
  });
}

/** What one attempt (one call to one address) saw of its HTTP/2 stream. */
interface Attempt {
  /** The session manager could not open a stream: the connection could not be made. */
  unopened: boolean;
  stream: http2.ClientHttp2Stream | undefined;
  /** The session the stream was opened on (a destroyed stream no longer names it). */
  session: http2.Http2Session | undefined;
  /** Response headers arrived. */
  responded: boolean;
  /** A grpc-status arrived (in trailers, or in a trailers-only response): a scheduler answered. */
  answered: boolean;
}

const attempts = new AsyncLocalStorage<Attempt>();

/** The request headers a Transport call takes (`HeadersInit | undefined`). */
type HeaderInit = Parameters<Transport["unary"]>[3];

/** An upstream HTTP/2 session's memory, in MB (http2's `maxSessionMemory`): above the largest forwarded call. */
const UPSTREAM_SESSION_MEMORY_MB = 64;

/**
 * An `Http2SessionManager` that tells the current attempt about the stream it opens, and gives up
 * a connection not made within `connectTimeoutMs`.
 */
class ObservedSessionManager extends Http2SessionManager {
  readonly #connectTimeoutMs: number;

  constructor(
    url: string,
    options: { pingIntervalMs: number; pingTimeoutMs: number; connectTimeoutMs: number },
  ) {
    // The session may hold a whole forwarded call (up to 16 MiB): with http2's default 10 MB, a
    // scheduler answering a large call before reading all of it made Node reset that answer
    // (ENHANCE_YOUR_CALM) and every later one on the session every client shares.
    super(
      url,
      { pingIntervalMs: options.pingIntervalMs, pingTimeoutMs: options.pingTimeoutMs },
      { maxSessionMemory: UPSTREAM_SESSION_MEMORY_MB },
    );
    this.#connectTimeoutMs = options.connectTimeoutMs;
  }

  override async request(
    method: string,
    path: string,
    headers: http2.OutgoingHttpHeaders,
    options: Omit<http2.ClientSessionRequestOptions, "signal">,
  ): Promise<http2.ClientHttp2Stream> {
    const attempt = attempts.getStore();
    const state = this.state();
    // A connection is (or is about to be) made for this request: it gets connectTimeoutMs.
    const timer =
      state === "closed" || state === "error" || state === "connecting"
        ? setTimeout(() => {
            if (this.state() !== "connecting") return;
            this.abort(
              new ConnectError(`no connection within ${this.#connectTimeoutMs} ms`, Code.Unavailable),
            );
          }, this.#connectTimeoutMs)
        : undefined;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = await super.request(method, path, headers, options);
    } catch (e) {
      if (attempt !== undefined) attempt.unopened = true;
      throw e;
    } finally {
      clearTimeout(timer);
    }
    if (attempt !== undefined) {
      attempt.stream = stream;
      attempt.session = stream.session;
      stream.once("response", (h: http2.IncomingHttpHeaders) => {
        attempt.responded = true;
        if (h["grpc-status"] !== undefined) attempt.answered = true;
      });
      stream.once("trailers", () => (attempt.answered = true));
    }
    return stream;
  }
}

/**
 * How an attempt failed, when no scheduler answered it: "unsent" (it never reached one),
 * "unanswered" (the connection broke after the request went out, before any response byte) or
 * "broken" (the connection broke after the response started). Undefined: a scheduler answered,
 * the caller aborted, or the error is local (e.g. a message over the size limit): returned as is.
 */
type Failure = "unsent" | "unanswered" | "broken";

function failureOf(attempt: Attempt, signal: AbortSignal | undefined): Failure | undefined {
  if (signal?.aborted === true || attempt.answered) return undefined;
  if (attempt.unopened) return "unsent";
  const stream = attempt.stream;
  if (stream === undefined) return undefined;
  if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) return "unsent";
  // The connection itself went away (peer gone, reset, GOAWAY with an error, PING timeout).
  const session = attempt.session;
  if (session === undefined || session.destroyed || session.closed)
    return attempt.responded ? "broken" : "unanswered";
  return undefined;
}

const safeMethods = new WeakMap<DescMethod, boolean>();

/** Whether a method may be sent twice: read with HTTP GET in its `google.api.http` rule. */
export function isSafeToRepeat(method: DescMethod): boolean {
  let safe = safeMethods.get(method);
  if (safe === undefined) {
    safe = hasOption(method, http) && getOption(method, http).pattern.case === "get";
    safeMethods.set(method, safe);
  }
  return safe;
}

function reasonOf(e: unknown): string {
  return e instanceof ConnectError ? e.rawMessage : e instanceof Error ? e.message : String(e);
}

interface Upstream1 {
  index: number;
  address: string;
  sessions: ObservedSessionManager;
  transport: Transport;
}

class FailoverUpstream implements Upstream {
  readonly addresses: readonly string[];
  readonly #upstreams: Upstream1[];
  readonly #log: Logger;
  #preferred = 0;
  #state: UpstreamState = "open";

  constructor({ addresses, interceptors, logger, ...connection }: CompiledUpstreamOptions) {
    this.addresses = [...addresses];
    this.#log = logger;
    this.#upstreams = addresses.map((address, index) => {
      const baseUrl = `http://${address}`;
      const sessions = new ObservedSessionManager(baseUrl, connection);
      return {
        index,
        address,
        sessions,
        transport: createGrpcTransport({
          baseUrl,
          sessionManager: sessions,
          interceptors,
          // A request within the gateway's limit as JSON can be larger as protobuf (a REST body of
          // 4 MB of `[0,0,...]` is 22 MB): refused here with RESOURCE_EXHAUSTED rather than sent
          // past the scheduler's receive limit, which resets the HTTP/2 session every client shares.
          writeMaxBytes: MAX_GATEWAY_REQUEST_BYTES,
        }),
      };
    });
  }

  get preferred(): string {
    return (this.#upstreams[this.#preferred] as Upstream1).address;
  }

  get state(): UpstreamState {
    return this.#state;
  }

  close(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    for (const u of this.#upstreams) u.sessions.abort();
  }

  /** The indexes to try, preferred first, then the others in order. */
  #order(): number[] {
    const n = this.#upstreams.length;
    return Array.from({ length: n }, (_, k) => (this.#preferred + k) % n);
  }

  /** A connection to `index` failed: if it is the preferred address, the next one becomes it. */
  #failedAt(index: number): void {
    if (index === this.#preferred && this.#upstreams.length > 1)
      this.#answeredBy((index + 1) % this.#upstreams.length);
  }

  #answeredBy(index: number): void {
    if (index === this.#preferred) return;
    const from = this.preferred;
    this.#preferred = index;
    this.#log.warn({ from, to: this.preferred }, "calls to the scheduler now go to another address");
  }

  /** Runs `call` on each address in turn while `again(failure)` allows another attempt. */
  async #attempt<R>(
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    again: (failure: Failure) => boolean,
    call: (upstream: Upstream1, timeoutMs: number | undefined, attempt: Attempt) => Promise<R>,
  ): Promise<R> {
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    const failures: string[] = [];
    for (const index of this.#order()) {
      if (this.#state === "closed") break;
      const u = this.#upstreams[index] as Upstream1;
      const remaining =
        deadline === undefined ? undefined : Math.max(1, Math.round(deadline - performance.now()));
      const attempt: Attempt = {
        unopened: false,
        stream: undefined,
        session: undefined,
        responded: false,
        answered: false,
      };
      try {
        const result = await attempts.run(attempt, () => call(u, remaining, attempt));
        this.#answeredBy(index);
        return result;
      } catch (e) {
        const failure = failureOf(attempt, signal);
        if (failure === undefined) {
          if (attempt.answered) this.#answeredBy(index);
          throw e;
        }
        this.#log.warn({ address: u.address, failure, error: reasonOf(e) }, "scheduler call failed");
        this.#failedAt(index);
        failures.push(`${u.address}: ${reasonOf(e)}`);
        if (!again(failure)) throw brokenError(failure, e);
      }
    }
    if (this.#state === "closed" && failures.length === 0)
      throw new ConnectError("the gateway's connection to the scheduler is closed", Code.Unavailable);
    this.#log.warn({ failures }, "no scheduler could be reached");
    throw new ConnectError(UNAVAILABLE_MESSAGE, Code.Unavailable);
  }

  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: MessageInitShape<I>,
    contextValues?: ContextValues,
  ): Promise<UnaryResponse<I, O>> {
    const safe = isSafeToRepeat(method);
    return this.#attempt(
      signal,
      timeoutMs,
      (failure) => failure === "unsent" || (failure === "unanswered" && safe),
      ({ transport }, ms) => transport.unary(method, signal, ms, header, input, contextValues),
    );
  }

  async stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodStreaming<I, O>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    header: HeaderInit,
    input: AsyncIterable<MessageInitShape<I>>,
    contextValues?: ContextValues,
  ): Promise<StreamResponse<I, O>> {
    // A server stream's one request message is read first, so that it can be sent again.
    const replayable = method.methodKind === "server_streaming";
    const requests: MessageInitShape<I>[] = [];
    if (replayable) for await (const message of input) requests.push(message);
    const safe = isSafeToRepeat(method);
    return this.#attempt(
      signal,
      timeoutMs,
      (failure) => replayable && (failure === "unsent" || (failure === "unanswered" && safe)),
      async ({ transport, address, index }, ms, attempt) => {
        const res = await transport.stream(
          method,
          signal,
          ms,
          header,
          replayable ? createAsyncIterable(requests) : input,
          contextValues,
        );
        const broke = (failure: Failure, e: unknown): ConnectError => {
          this.#log.warn({ address, failure, error: reasonOf(e) }, "scheduler stream broke");
          this.#failedAt(index);
          return brokenError(failure, e);
        };
        return { ...res, message: guardStream(res.message, attempt, signal, broke) };
      },
    );
  }
}

/** The messages of `messages`; a connection that breaks while they flow ends them with UNAVAILABLE. */
async function* guardStream<T>(
  messages: AsyncIterable<T>,
  attempt: Attempt,
  signal: AbortSignal | undefined,
  broke: (failure: Failure, e: unknown) => ConnectError,
): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (e) {
    const failure = failureOf(attempt, signal);
    if (failure === undefined) throw e;
    throw broke(failure, e);
  }
}

/** What a client is told when no scheduler could be reached (the addresses tried are logged). */
export const UNAVAILABLE_MESSAGE = "the scheduler is unavailable; retry shortly";

/**
 * The UNAVAILABLE error of a `failure` (its address and `cause` are logged by the caller, and kept as
 * the error's cause, which never goes on the wire).
 */
function brokenError(failure: Failure, cause: unknown): ConnectError {
  const message =
    failure === "unsent"
      ? UNAVAILABLE_MESSAGE
      : failure === "unanswered"
        ? "the scheduler went away before it answered: the call may or may not have been applied; retry shortly"
        : "the scheduler went away while it answered; retry shortly";
  return new ConnectError(message, Code.Unavailable, undefined, undefined, cause);
}

/** Options of {@link replicasReadiness}. */
export interface ReplicasReadinessOptions {
  /** The health status of the server at an address (rejects when it cannot be asked). */
  check: (address: string) => Promise<ServingStatus>;
  /**
   * Logs at warn level, when it changes, which addresses are not serving while others are.
   * @default a silent logger
   */
  logger?: Logger;
  /**
   * How long an answer is reused. Calls while a check is in flight share it, and for this long
   * after it: /readyz and Health need no token, so their rate must not set how often the
   * schedulers are asked (each check opens a connection to each of them).
   * @default 1000
   */
  maxAgeMs?: number;
}

/**
 * The gateway's readiness over several scheduler replicas: ready while at least one address's
 * health service answers SERVING; when none does, the reason says what each address answered (for
 * the ops endpoint's /readyz and the log: the gateway's own /readyz does not show it).
 */
export function replicasReadiness(
  addresses: readonly string[],
  options: ReplicasReadinessOptions,
): ReadinessCheck {
  const log = options.logger ?? createLogger("gateway", "silent");
  let lastDown = "";
  const checkAll = async (): Promise<string | undefined> => {
    const answers = await Promise.all(
      addresses.map(async (address) => {
        try {
          const status = await options.check(address);
          return status === ServingStatus.SERVING
            ? undefined
            : `the scheduler at ${address} is not serving (status ${status})`;
        } catch (e) {
          return `the scheduler at ${address} does not answer: ${reasonOf(e)}`;
        }
      }),
    );
    const down = answers.filter((a) => a !== undefined);
    const ready = down.length < addresses.length;
    const summary = down.join("; ");
    if (summary !== lastDown && down.length > 0)
      log.warn(
        { notServing: down },
        ready ? "some scheduler replicas are not serving" : "no scheduler replica is serving",
      );
    lastDown = summary;
    return ready ? undefined : summary;
  };
  return sharedReadiness(checkAll, options.maxAgeMs ?? 1000);
}
