/**
 * Waiting for the dev stack's services by asking each one whether it serves, never by reading its
 * output: the scheduler answers an RPC (ListWorkflows, through @nexusflow/client: it has no health
 * service of its own), the gateway's `GET /healthz` answers 200, and an executor's metrics say
 * `nexusflow_executor_attached 1` (the scheduler tells no one which sessions it holds without a
 * run; the executor's gauge is its own word that it has one).
 */
import * as http from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { Code, NexusflowClient, isRpcError } from "@nexusflow/client";
import { ChildExitedError, ChildNotReadyError, ChildTimeoutError, type ManagedChild } from "./child.js";
import { describeError } from "./describe-error.js";

/** Time between two checks of a service that is not ready yet. */
const POLL_INTERVAL_MS = 100;
/** Longest one check may take; one that takes longer counts as "not yet". */
const CHECK_TIMEOUT_MS = 2_000;

/** How to tell that one service is ready. */
export interface Readiness {
  /** What is waited for, for the message when it does not come ("GET /healthz answering 200"). */
  readonly what: string;
  /**
   * Resolves once the service is ready; rejects when it cannot become so (the error says why), or
   * with the signal's reason once `signal` aborts.
   */
  ready(signal: AbortSignal): Promise<void>;
}

/**
 * Waits until `child` passes `check`. Rejects with {@link ChildExitedError} when the child exits
 * first, {@link ChildTimeoutError} after `timeoutMs`, {@link ChildNotReadyError} when the check
 * fails, or with the signal's reason when `signal` aborts.
 */
export async function waitUntilReady(
  child: ManagedChild,
  check: Readiness,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  const stop = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onAbort = (): void => {};
  const ready = check.ready(stop.signal).catch((e: unknown) => {
    if (stop.signal.aborted) return; // the race is over; whatever ended it is reported
    throw new ChildNotReadyError(child.name, `${child.name} is not ready: ${describeError(e)}`, { cause: e });
  });
  try {
    await Promise.race([
      ready,
      child.exited.then((exit) => {
        throw new ChildExitedError(child.name, exit);
      }),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new ChildTimeoutError(child.name, check.what, timeoutMs)), timeoutMs);
        onAbort = () =>
          reject(signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)));
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    stop.abort();
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort);
  }
}

/** Calls `attempt` every {@link POLL_INTERVAL_MS} until it answers true, or `signal` aborts. */
async function poll(attempt: (signal: AbortSignal) => Promise<boolean>, signal: AbortSignal): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    if (await attempt(AbortSignal.any([signal, AbortSignal.timeout(CHECK_TIMEOUT_MS)]))) return;
    await delay(POLL_INTERVAL_MS, undefined, { signal });
  }
}

/**
 * The scheduler at `address` (host:port) is ready once it answers ListWorkflows with `token`:
 * it binds its port only after its database is up and migrated. UNAVAILABLE and
 * DEADLINE_EXCEEDED mean not yet; any other error is final (a token it refuses, say).
 */
export function schedulerReadiness(address: string, token: string): Readiness {
  return {
    what: `ListWorkflows answering at ${address}`,
    async ready(signal) {
      const client = new NexusflowClient({
        baseUrl: `http://${address}`,
        token,
        timeoutMs: CHECK_TIMEOUT_MS,
        retry: false,
      });
      try {
        await poll(async () => {
          try {
            await client.workflows.listWorkflows({ pageSize: 1 }, { signal });
            return true;
          } catch (e) {
            if (signal.aborted) throw e;
            if (isRpcError(e, Code.Unavailable) || isRpcError(e, Code.DeadlineExceeded)) return false;
            throw e;
          }
        }, signal);
      } finally {
        client.close();
      }
    },
  };
}

/** `GET url` on a connection of its own (nothing is left open); undefined when it cannot be asked. */
function get(url: string, signal: AbortSignal): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, signal }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", () => resolve(undefined));
    });
    req.on("error", () => resolve(undefined));
  });
}

/** The gateway at `url` is ready once `GET /healthz` answers 200. */
export function gatewayReadiness(url: string): Readiness {
  const healthz = `${url}/healthz`;
  return {
    what: `GET ${healthz} answering 200`,
    ready: (signal) => poll(async (attempt) => (await get(healthz, attempt))?.status === 200, signal),
  };
}

/** The value of the unlabelled sample `name` in a Prometheus text exposition, if it holds one. */
export function sampleValue(exposition: string, name: string): number | undefined {
  for (const line of exposition.split("\n")) {
    const [metric, value] = line.trim().split(/\s+/);
    if (metric === name && value !== undefined) return Number(value);
  }
  return undefined;
}

/**
 * An executor process is ready once its metrics endpoint (`metricsUrl`, ending in /metrics)
 * reports `nexusflow_executor_attached 1`: it has a session with the scheduler.
 */
export function executorReadiness(metricsUrl: string): Readiness {
  return {
    what: `nexusflow_executor_attached 1 at ${metricsUrl}`,
    ready: (signal) =>
      poll(async (attempt) => {
        const res = await get(metricsUrl, attempt);
        return res?.status === 200 && sampleValue(res.body, "nexusflow_executor_attached") === 1;
      }, signal),
  };
}
