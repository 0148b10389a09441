/**
 * One scheduler per database. The engine keeps every active run in memory and is the only writer
 * of their rows; a second scheduler against the same database would lease the same tasks and
 * overwrite the first one's state. Until several replicas can share the work, a scheduler holds a
 * PostgreSQL session-level advisory lock on a dedicated connection for as long as it runs. The lock
 * dies with that session, so a scheduler that crashes (or whose host vanishes: the session sets TCP
 * keepalives so PostgreSQL notices within about half a minute) gives it back without help.
 *
 * The holder describes itself in the session's `application_name` (pid, host, start time), which a
 * refused scheduler reads from `pg_stat_activity` to say who holds the lock.
 */
import { hostname } from "node:os";
import pg from "pg";
import type { Logger } from "@nexusflow/common";

/** Key of the advisory lock: "NFSCHEDR" in ASCII (the outbox relay's lock is "NFOUTBOX"). */
export const SCHEDULER_LOCK_KEY = 0x4e46534348454452n;

/** Prefix of the lock session's `application_name`. */
const APPLICATION_PREFIX = "nexusflow-scheduler";

/** Who holds the lock, as far as PostgreSQL shows it. */
export interface LockHolder {
  /** Process id of the holding scheduler; undefined when not visible. */
  pid: number | undefined;
  /** Host of the holding scheduler; undefined when not visible. */
  host: string | undefined;
  /** When the holder's lock session began; undefined when not visible. */
  since: Date | undefined;
}

function describeHolder(holder: LockHolder): string {
  if (holder.pid === undefined) return "pid unknown";
  const since = holder.since === undefined ? "" : ` since ${holder.since.toISOString()}`;
  return `pid ${holder.pid} on host ${holder.host ?? "unknown"}${since}`;
}

/** Raised by Scheduler.start() when another scheduler holds the database; the message says which. */
export class SchedulerLockedError extends Error {
  override name = "SchedulerLockedError";
  constructor(readonly holder: LockHolder) {
    super(
      `another scheduler is already running against this database (${describeHolder(holder)}); to run several replicas, set SCHEDULER_CLUSTER=true on every scheduler (docs/replicas.md)`,
    );
  }
}

/** Type guard for {@link SchedulerLockedError}. */
export function isSchedulerLockedError(e: unknown): e is SchedulerLockedError {
  return e instanceof SchedulerLockedError;
}

/** Options of {@link acquireSchedulerLock}. */
export interface SchedulerLockOptions {
  /** PostgreSQL URL. */
  url: string;
  log: Logger;
  /** Lock key. @default SCHEDULER_LOCK_KEY */
  key?: bigint;
  /**
   * Called when the lock cannot be taken back after its connection was lost (another scheduler
   * took it meanwhile): this scheduler must stop.
   */
  onLost?: (error: SchedulerLockedError) => void;
  /**
   * How long start-up keeps trying while the lock is held, for a predecessor that has just died
   * and whose session PostgreSQL is still ending. @default 1000
   */
  waitMs?: number;
  /** First delay between attempts to reconnect a lost lock session. @default 250 */
  retryInitialMs?: number;
  /** Longest such delay. @default 5000 */
  retryMaxMs?: number;
}

/** The held lock; `release()` gives it back and closes its connection. */
export interface SchedulerLock {
  release(): Promise<void>;
}

/** `application_name` of the lock session (at most 63 bytes: PostgreSQL truncates longer names). */
function applicationName(startedAt: Date): string {
  const at = Math.floor(startedAt.getTime() / 1000);
  return `${APPLICATION_PREFIX} ${process.pid} ${at} ${hostname()}`.slice(0, 63);
}

function parseApplicationName(name: string | null | undefined): Omit<LockHolder, "since"> & { at?: Date } {
  const m = /^nexusflow-scheduler (\d+) (\d+) (.*)$/.exec(name ?? "");
  if (m === null) return { pid: undefined, host: undefined };
  return { pid: Number(m[1]), host: m[3], at: new Date(Number(m[2]) * 1000) };
}

/** A session of its own (not from a pool): it holds the lock for the scheduler's lifetime. */
async function connect(url: string, startedAt: Date): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    application_name: applicationName(startedAt),
    connectionTimeoutMillis: 3000,
    // Our side notices a dead server; the server-side settings below let PostgreSQL notice us.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  await client.connect();
  // On TCP connections, PostgreSQL drops the session of a vanished host after ~10 s + 3 × 5 s
  // (ignored on Unix sockets); an idle_session_timeout set on the server must not end it.
  try {
    await client.query(
      "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
    );
    // PostgreSQL 14 and later; older servers have no such timeout to disable.
    await client.query("SET idle_session_timeout = 0").catch(() => undefined);
  } catch (e) {
    await client.end().catch(() => undefined);
    throw e;
  }
  return client;
}

async function tryLock(client: pg.Client, key: bigint): Promise<boolean> {
  const { rows } = await client.query<{ locked: boolean }>(
    "SELECT pg_try_advisory_lock($1::bigint) AS locked",
    [key.toString()],
  );
  return rows[0]?.locked === true;
}

/** Who holds the advisory lock `key`, read from pg_locks and pg_stat_activity. */
async function holderOf(client: pg.Client, key: bigint): Promise<LockHolder> {
  // A bigint key is stored as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
  const { rows } = await client.query<{ application_name: string | null; backend_start: Date | null }>(
    `SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = $1 AND l.objid::bigint = $2`,
    [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
  );
  const row = rows[0];
  const parsed = parseApplicationName(row?.application_name);
  return { pid: parsed.pid, host: parsed.host, since: parsed.at ?? row?.backend_start ?? undefined };
}

/**
 * Takes the scheduler lock on a dedicated connection, or throws {@link SchedulerLockedError}
 * naming the holder. A lost connection (database restart) is reopened and the lock taken again.
 */
export async function acquireSchedulerLock(options: SchedulerLockOptions): Promise<SchedulerLock> {
  const key = options.key ?? SCHEDULER_LOCK_KEY;
  const log = options.log;
  const startedAt = new Date();
  const retryInitialMs = options.retryInitialMs ?? 250;
  const retryMaxMs = options.retryMaxMs ?? 5000;

  const first = await connect(options.url, startedAt);
  try {
    const giveUpAt = Date.now() + (options.waitMs ?? 1000);
    let locked = await tryLock(first, key);
    while (!locked && Date.now() < giveUpAt) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      locked = await tryLock(first, key);
    }
    if (!locked) {
      const holder = await holderOf(first, key).catch(() => ({
        pid: undefined,
        host: undefined,
        since: undefined,
      }));
      throw new SchedulerLockedError(holder);
    }
  } catch (e) {
    await first.end().catch(() => undefined);
    throw e;
  }

  let client: pg.Client | undefined = first;
  let released = false;
  let retryTimer: NodeJS.Timeout | undefined;

  const reacquire = (delay: number): void => {
    if (released) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void (async () => {
        let next: pg.Client | undefined;
        try {
          next = await connect(options.url, startedAt);
          if (released) {
            await next.end();
            return;
          }
          if (await tryLock(next, key)) {
            watch(next);
            client = next;
            log.info("scheduler lock taken again after its connection was lost");
            return;
          }
          const error = new SchedulerLockedError(await holderOf(next, key));
          await next.end().catch(() => undefined);
          log.fatal(
            { err: error },
            "another scheduler took the database while the lock's connection was lost",
          );
          released = true;
          options.onLost?.(error);
        } catch (e) {
          await next?.end().catch(() => undefined);
          log.warn({ error: (e as Error).message }, "cannot take the scheduler lock again yet; retrying");
          reacquire(Math.min(delay * 2, retryMaxMs));
        }
      })();
    }, delay);
  };

  function watch(c: pg.Client): void {
    let lost = false;
    const onLost = (e?: Error): void => {
      if (lost) return;
      lost = true;
      if (client === c) client = undefined;
      if (released) return;
      log.warn({ error: e?.message }, "the scheduler lock's connection was lost; taking the lock again");
      reacquire(retryInitialMs);
    };
    c.on("error", onLost);
    c.on("end", () => onLost());
  }
  watch(first);

  return {
    async release() {
      released = true;
      clearTimeout(retryTimer);
      const c = client;
      client = undefined;
      if (c === undefined) return;
      // Ending the session releases the lock on the server, even if the unlock itself failed.
      await c.query("SELECT pg_advisory_unlock($1::bigint)", [key.toString()]).catch(() => undefined);
      await c.end().catch(() => undefined);
    },
  };
}
