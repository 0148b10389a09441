/**
 * The engine's rules, as a pure core: each input (a run started or cancelled, a lease granted, a
 * task started, completed, failed or released, a heartbeat, a timer fired, a session lost or
 * re-attached) changes the in-memory model (context.ts) and reports the effects to carry out
 * (rows and events to write, leases to offer, timers to set, messages to send) to the shell,
 * engine/engine.ts, which performs them through an EngineStore and the executor sessions. Nothing
 * here does I/O or reads a clock: time, jitter and ids are inputs. One file per job:
 *
 * - transitions.ts: the state changes the rules are made of (queue, end, fail, complete)
 * - runs.ts: start, advance (DAG evaluation applied), cancel, run deadline, refusal
 * - compensation.ts: the saga rollback in waves
 * - leasing.ts: granting a lease, and whether it still stands when committed
 * - fencing.ts: judging a report by its lease key
 * - reports.ts: started, heartbeat, completed, failed, released; offloaded outputs
 * - retries.ts: a failed attempt retried by policy (jitter an input) or failed for good
 * - timers.ts / timeouts.ts: arming the durable timers / what each does when it fires
 * - sessions.ts: lost sessions, the grace of their leases, reclaim and expiry on re-attach
 * - recovery.ts: the model rebuilt from storage and resumed
 * - reruns.ts: rerun from a step (the steps a new run takes over from an ended one)
 * - holds.ts / explain.ts: why a task is not running (the gates that hold it)
 * - waits.ts: durable waits for signals and sleeps (steps no executor runs)
 * - event-waits.ts / event-wait-index.ts: durable waits for an event (matched, then applied)
 * - children.ts: child workflow steps (a run started by a step, its end the step's end)
 * - child-rollback.ts: a parent's rollback reaching its children (a succeeded child compensated)
 * - concurrency.ts: keyed concurrency limits (slots held, queues of full keys, strategies)
 * - unread-keys.ts: keys that read an offloaded output not read back yet (after a restart)
 * - fair-shares.ts: fair shares of the executors among tenants and keys (weights, minimums, maximums)
 */
export type { Core, Effects, EventInit, Moment, Rejection, SessionLeases, Timer } from "./context.js";
export { advanceCompensation } from "./compensation.js";
export { childRollbackRead, type ChildRollbackRead } from "./child-rollback.js";
export {
  childEnded,
  childFoundEnded,
  childOf,
  childResolved,
  childRunId,
  childTaskOf,
  type ChildEnd,
  type ChildResolution,
} from "./children.js";
export {
  ConcurrencyKeyError,
  ConcurrencyState,
  keyWaits,
  workflowKeys,
  type Claim,
  type KeyWait,
} from "./concurrency.js";
export { describeGate, explainPending, pendingReason, type Gate } from "./explain.js";
export {
  FairShareKeyError,
  fairPath,
  fairShareStats,
  OTHER_TENANTS,
  releaseShare,
  sharePath,
  type FairShareStat,
} from "./fair-shares.js";
export { checkReport, keyMatches, leaseKey } from "./fencing.js";
export { grantLease, leaseStands } from "./leasing.js";
export { recover, type Recovered } from "./recovery.js";
export {
  isRefusal,
  planRerun,
  type OriginalStep,
  type RerunPlan,
  type RerunRefusal,
  type RerunStart,
} from "./reruns.js";
export {
  completed,
  failed,
  heartbeat,
  outputResolved,
  outputUnavailable,
  released,
  started,
} from "./reports.js";
export { failAttempt, retryDelay, retryPolicyOf } from "./retries.js";
export {
  RateLimitKeyError,
  pauseBucket,
  rateHolds,
  rateLimitsOf,
  type Bucket,
  type RateLimitState,
} from "./rate-limits.js";
export {
  admitQueued,
  advance,
  advanceAny,
  cancelRun,
  dropRefusedRun,
  failBrokenRun,
  forgetRun,
  startRun,
  timeOutRun,
  type RunStart,
} from "./runs.js";
export {
  attached,
  isSilent,
  leasesToList,
  listedHeld,
  reclaim,
  sessionLost,
  type AskedLeases,
  type RunRules,
  type Attached,
} from "./sessions.js";
export { armStartToClose } from "./timers.js";
export { checkHeartbeat, timerFired, timerRun } from "./timeouts.js";
export { MAX_SIGNALS_PER_RUN, signalReceived, type SignalInput, type SignalOutcome } from "./waits.js";
export {
  applyEvent,
  matchEvent,
  waitOutput,
  type StoredWaitEvent,
  type WaitApplyOutcome,
  type WaitEvent,
  type WaitMatch,
} from "./event-waits.js";
