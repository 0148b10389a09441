/**
 * WatchRun, here or at the run's owner (issue #22, milestone 4). The stream's first message is the
 * run as stored; each later one is sent when a task changed (status, attempts, pending reason) or
 * the run ended, and the stream ends after the run's final state.
 *
 * What a message says is decided in one place for the whole stream ({@link WatchState}): the last
 * state sent, by task. The snapshots it is offered come from where the run is held now:
 * - **here** (this replica holds the run's partition): the run is read from the database after each
 *   commit of the engine that touches it (the engine's watchers);
 * - **at its owner** (another live replica): the owner's own WatchRun stream, forwarded with the
 *   caller's metadata; each message is a full snapshot.
 * When the run moves (a partition taken, lost or released here; the owner's stream ends or fails
 * with a retryable code; or the owners' table names another owner, read every watch interval while
 * following, so that a killed or paused owner is left too), the watch finds the owner again and
 * goes on from the new source's first snapshot. As every snapshot is compared with the last state
 * sent, an update is neither lost (the new source's first snapshot holds every commit before it)
 * nor repeated (an unchanged snapshot sends nothing). A forwarded WatchRun is answered only where
 * the run is held: when it leaves, the stream ends with UNAVAILABLE "moving", and the replica that
 * forwarded it finds the new owner.
 *
 * As for a local watch, snapshots may coalesce several commits (a message per change seen, not per
 * commit), and at another replica the live state is the owner's latest commit.
 *
 * A message carries the run whole while a client with gRPC's and protobuf's usual limits can read
 * it (3 MiB encoded, 100 nested messages: convert.ts's watchedRun); a larger or deeper run goes
 * without its values (inputs, outputs, error details, signal payloads), every task's state kept,
 * and the message says so (`values_omitted`): the client keeps the values it read before and asks
 * GetRun for the rest. Before, such a run could not be watched at all (RESOURCE_EXHAUSTED on every
 * message). That is decided at the replica the caller called: an owner answers a forwarded watch
 * with whole runs (the forwarding replica's client reads any size).
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, Code } from "@nexusflow/common";
import {
  type Run,
  RunStatus,
  WatchRunResponseSchema,
  type WatchRunRequest,
  type WatchRunResponse,
} from "@nexusflow/gen";
import type { Engine } from "../engine/engine.js";
import { TERMINAL_RUN_STATUSES, type RunStatusName } from "../model/run-state.js";
import { checkRunId, type RunDetail, type RunStore } from "../persistence/run-store.js";
import {
  type ReplicaAddress,
  type ReplicaRouter,
  apiErrorOf,
  forwardedBy,
  runMoving,
} from "../cluster/replica-router.js";
import { runDetail, watchedRun, type PendingReasons } from "./convert.js";

/** What a watch needs of the scheduler. */
export interface WatchDeps {
  engine: Pick<Engine, "watch">;
  runs: Pick<RunStore, "get">;
  router: ReplicaRouter | undefined;
  reasonsOf: (d: RunDetail) => Promise<PendingReasons>;
}

/**
 * Codes of an owner's answer that are the caller's answer too; any other is retried at the owner
 * found again. RESOURCE_EXHAUSTED among them: a snapshot larger than this replica's client takes
 * (grpc-js's "Received message larger than max") would be as large at the next try, forever.
 */
const FINAL_CODES: ReadonlySet<number> = new Set([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.PERMISSION_DENIED,
  Code.UNAUTHENTICATED,
  Code.FAILED_PRECONDITION,
  Code.DEADLINE_EXCEEDED,
  Code.UNIMPLEMENTED,
  Code.RESOURCE_EXHAUSTED,
]);

/** The state last sent on one stream; decides what a snapshot sends (see the module comment). */
export class WatchState {
  private previous: Map<string, string> | undefined;

  /**
   * `whole`: every message carries the run whole, whatever its size (a stream forwarded by
   * another replica, whose client reads any size: that replica decides for its own caller);
   * otherwise a run too large or too deep for a client's usual limits goes without its values,
   * the message saying so (WatchRunResponse.values_omitted; {@link watchedRun}).
   */
  constructor(
    private readonly send: (m: WatchRunResponse) => Promise<void>,
    private readonly whole = false,
  ) {}

  /**
   * Sends what `snapshot` changed since the last message (the whole run first); true once it has
   * ended. `valuesOmitted`: the snapshot already came without its values (an owner's message that
   * said so), which its message says too.
   */
  async offer(snapshot: Run, valuesOmitted = false): Promise<boolean> {
    const current = new Map(
      snapshot.tasks.map((t) => [t.id, `${t.status}:${t.attempts.length}:${t.pendingReason}`]),
    );
    const ended = TERMINAL_RUN_STATUSES.has(RunStatus[snapshot.status] as RunStatusName);
    const previous = this.previous;
    const changed =
      previous === undefined
        ? []
        : [...current].filter(([id, s]) => previous.get(id) !== s).map(([id]) => id);
    this.previous = current;
    if (previous === undefined || changed.length > 0 || ended) {
      const sent = this.whole || valuesOmitted ? { run: snapshot, valuesOmitted } : watchedRun(snapshot);
      await this.send(
        create(WatchRunResponseSchema, {
          run: sent.run,
          valuesOmitted: sent.valuesOmitted,
          changedTaskIds: changed,
          time: timestampNow(),
        }),
      );
    }
    return ended;
  }
}

/** How one segment of a watch ended: the run ended (or the caller left), or it moved. */
type SegmentEnd = "done" | "moved" | "failed";

/** The WatchRun handler (see the module comment). */
export async function watchRun(
  deps: WatchDeps,
  req: WatchRunRequest,
  send: (m: WatchRunResponse) => Promise<void>,
  signal: AbortSignal,
  call: grpc.ServerWritableStream<WatchRunRequest, WatchRunResponse>,
): Promise<void> {
  checkRunId(req.runId);
  const { router } = deps;
  const forwarded = forwardedBy(call.metadata) !== undefined;
  // A forwarded watch answers the whole run: the replica that forwarded it reads any size, and
  // leaves the values out for its own caller when they are too large.
  const state = new WatchState(send, forwarded);
  let last: SegmentEnd = "moved";
  while (!signal.aborted) {
    if (router === undefined || router.holdsRun(req.runId)) {
      last = await followHere(deps, req.runId, state, signal, forwarded);
    } else if (forwarded) {
      throw runMoving(req.runId);
    } else {
      if (router.state.kind !== "RUNNING")
        throw new ApiError(Code.UNAVAILABLE, "this scheduler replica is stopping; retry");
      // After a failed segment, or with no live owner (a takeover under way), wait a little first.
      if (last === "failed") await movedOrAfter(router, signal);
      const owner = await router.ownerOfRun(req.runId);
      if (owner === undefined || owner.id === router.replicaId) {
        last = "failed";
        continue;
      }
      last = await followOwner(router, owner, req, state, signal, call);
    }
    if (last === "done") return;
  }
}

/** Waits for a move (see ReplicaRouter.onMove) or the router's refresh interval, whichever first. */
function movedOrAfter(router: ReplicaRouter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      unsubscribe();
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, router.retryDelayMs);
    const unsubscribe = router.onMove(done, false);
    signal.addEventListener("abort", done);
  });
}

/** Follows the run here until it ends ("done"), the caller leaves ("done") or its partition leaves ("moved"). */
async function followHere(
  deps: WatchDeps,
  runId: string,
  state: WatchState,
  signal: AbortSignal,
  forwarded: boolean,
): Promise<SegmentEnd> {
  const { engine, runs, router, reasonsOf } = deps;
  let wake: (() => void) | undefined;
  let dirty = true;
  const touch = (): void => {
    dirty = true;
    wake?.();
  };
  // Subscribe before the first read so no commit falls between them.
  const unsubscribe = engine.watch(runId, touch);
  const unmove = router?.onMove(touch, false);
  const onAbort = (): void => wake?.();
  signal.addEventListener("abort", onAbort);
  try {
    while (!signal.aborted) {
      if (!dirty) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      dirty = false;
      // A replica that stops ends its watches: their callers (or the replica that forwarded them)
      // go on at a replica that stays.
      if (router !== undefined && router.state.kind !== "RUNNING")
        throw forwarded
          ? runMoving(runId)
          : new ApiError(Code.UNAVAILABLE, "this scheduler replica is stopping; retry");
      const detail = await runs.get(runId);
      if (await state.offer(runDetail(detail, await reasonsOf(detail)))) return "done";
      // Left here (its last commits here are read above): its new owner goes on.
      if (router !== undefined && !router.holdsRun(runId)) return "moved";
    }
    return "done";
  } finally {
    unsubscribe();
    unmove?.();
    signal.removeEventListener("abort", onAbort);
  }
}

/** Follows the run through its owner's WatchRun stream (see the module comment). */
function followOwner(
  router: ReplicaRouter,
  owner: ReplicaAddress,
  req: WatchRunRequest,
  state: WatchState,
  signal: AbortSignal,
  call: grpc.ServerWritableStream<WatchRunRequest, WatchRunResponse>,
): Promise<SegmentEnd> {
  return new Promise<SegmentEnd>((resolve, reject) => {
    let settled = false;
    let chain: Promise<void> = Promise.resolve();
    const stream = router.openStream("watchRun", owner, req, call);
    const finish = (end: SegmentEnd | { error: Error }): void => {
      if (settled) return;
      settled = true;
      unmove();
      signal.removeEventListener("abort", onAbort);
      stream.cancel();
      if (typeof end === "string") resolve(end);
      else reject(end.error);
    };
    const onAbort = (): void => finish("done");
    // Here now, or another owner in the table: this stream is left (its updates are in the next
    // source's first snapshot). This replica stopping ends it too (the watch then ends UNAVAILABLE).
    const unmove = router.onMove(() => {
      if (router.state.kind !== "RUNNING") chain = chain.then(() => finish("failed"));
      else if (router.holdsRun(req.runId) || router.cachedOwnerOfRun(req.runId)?.id !== owner.id)
        chain = chain.then(() => finish("moved"));
    }, true);
    signal.addEventListener("abort", onAbort);
    stream.on("data", (m: WatchRunResponse) => {
      stream.pause();
      chain = chain
        .then(async () => {
          if (settled || m.run === undefined) return;
          if (await state.offer(m.run, m.valuesOmitted)) finish("done");
        })
        .then(
          () => {
            if (!settled) stream.resume();
          },
          (e: unknown) => finish({ error: apiErrorOf(e) }),
        );
    });
    stream.on("error", (e: grpc.ServiceError) => {
      chain = chain.then(() => {
        if (signal.aborted) finish("done");
        else if (FINAL_CODES.has(e.code)) finish({ error: apiErrorOf(e) });
        else {
          router.invalidate();
          finish("failed");
        }
      });
    });
    // Ended without the run's end: the owner let it go (it stops, or the run moved).
    stream.on("end", () => {
      chain = chain.then(() => finish("failed"));
    });
  });
}
