/**
 * When the executor asks ListReplicas (replica-map.ts) and what it does with a refusal: every
 * `intervalMs` once started, at once on {@link ReplicaDiscovery.soon} (a session ended, a report
 * rejected NOT_FOUND, a Cancel for a moved partition), never two calls at a time, and at least
 * {@link MIN_REFRESH_GAP_MS} apart. A scheduler that cannot tell (UNIMPLEMENTED, PERMISSION_DENIED)
 * turns discovery off for good: one session. States: on (asking) -> off. While the last answer
 * came from a scheduler that is not in cluster mode (`sole`: the installation's only one, whose
 * replicas cannot change while its session lasts), the interval asks nothing: only {@link soon}
 * does (a session ended, a report rejected), so that hundreds of idle executors do not keep a
 * sole scheduler answering a call every few seconds each.
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "@nexusflow/common";
import { type ReplicaMap, listReplicas, noDiscovery, replicaMapOf } from "./replica-map.js";

/** Deadline of a ListReplicas call. */
const LIST_REPLICAS_TIMEOUT_MS = 5_000;
/** Least time between two ListReplicas calls asked for at once (a burst of rejections asks once). */
const MIN_REFRESH_GAP_MS = 200;

/** What discovery needs of the executor. */
export interface ReplicaDiscoveryOptions {
  /** Time between two asks; 0: discovery is off from the start (one session). */
  readonly intervalMs: number;
  readonly logger: Logger;
  /** Whether an ask may go out now (the executor keeps sessions). */
  readonly active: () => boolean;
  /** The clients to ask, in order, until one answers (the primary address, then the replicas reached). */
  readonly clients: () => grpc.Client[];
  /** The metadata of a call (its token). */
  readonly metadata: () => grpc.Metadata | Promise<grpc.Metadata>;
  /** A new map. */
  readonly apply: (map: ReplicaMap) => void;
}

/** See the module comment. */
export class ReplicaDiscovery {
  #on: boolean;
  #timer: NodeJS.Timeout | undefined;
  #soonTimer: NodeJS.Timeout | undefined;
  #asking = false;
  #again = false;
  #lastAsk = 0;
  /** The last answer said the scheduler is not in cluster mode (ListReplicasResponse.sole). */
  #sole = false;
  /** Sessions ended so far: an answer to an ask sent before the latest end says nothing of `sole`. */
  #sessionEnds = 0;

  constructor(private readonly options: ReplicaDiscoveryOptions) {
    this.#on = options.intervalMs !== 0;
  }

  /** Whether the last answer came from a scheduler not in cluster mode (the interval then asks nothing). */
  get sole(): boolean {
    return this.#sole;
  }

  /** Whether replicas are discovered (false once the scheduler could not tell, or never with 0). */
  get on(): boolean {
    return this.#on;
  }

  /** Asks now and every `intervalMs` (after the first attach); once. */
  start(): void {
    if (!this.#on || this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      if (!this.#sole) this.soon();
    }, this.options.intervalMs);
    this.#timer.unref();
    this.soon();
  }

  /** No more asks. */
  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#soonTimer);
    this.#timer = undefined;
    this.#soonTimer = undefined;
    this.#on = false;
  }

  /**
   * A session ended: whatever the last answer said, the scheduler may have come back in cluster
   * mode (or the address may now reach another one), so the interval asks again until an answer
   * says `sole` once more; and one ask goes out soon.
   */
  sessionEnded(): void {
    this.#sessionEnds++;
    this.#sole = false;
    this.soon();
  }

  /** Asks soon: at once, or {@link MIN_REFRESH_GAP_MS} after the last ask. */
  soon(): void {
    if (!this.#on || !this.options.active()) return;
    if (this.#asking) {
      this.#again = true;
      return;
    }
    if (this.#soonTimer !== undefined) return;
    const wait = Math.max(0, this.#lastAsk + MIN_REFRESH_GAP_MS - performance.now());
    this.#soonTimer = setTimeout(() => {
      this.#soonTimer = undefined;
      this.#asking = true;
      this.#lastAsk = performance.now();
      this.#ask()
        .catch((e: unknown) => this.options.logger.error({ err: e }, "refreshing the replica map failed"))
        .finally(() => {
          this.#asking = false;
          if (this.#again) {
            this.#again = false;
            this.soon();
          }
        });
    }, wait);
    this.#soonTimer.unref();
  }

  async #ask(): Promise<void> {
    const { logger } = this.options;
    let metadata: grpc.Metadata;
    try {
      metadata = await this.options.metadata();
    } catch (e) {
      logger.debug({ err: e }, "cannot make the metadata of ListReplicas");
      return;
    }
    let lastError: unknown;
    for (const client of this.options.clients()) {
      if (!this.#on) return;
      try {
        const askedAt = performance.now();
        const ends = this.#sessionEnds;
        const response = await listReplicas(client, metadata.clone(), LIST_REPLICAS_TIMEOUT_MS);
        // Asked of the scheduler before its session ended (it may be back in cluster mode since).
        if (ends === this.#sessionEnds) this.#sole = response.sole;
        this.options.apply(replicaMapOf(response, askedAt));
        return;
      } catch (e) {
        lastError = e;
        if (noDiscovery(e)) break;
      }
    }
    if (noDiscovery(lastError)) {
      const { code, details } = lastError as grpc.ServiceError;
      logger.warn(
        { code: grpc.status[code], details },
        "the scheduler does not list its replicas (ReplicaService.ListReplicas); keeping one session",
      );
      this.stop();
      return;
    }
    logger.debug({ err: lastError }, "ListReplicas failed; keeping the last replica map");
  }
}
