/**
 * Wake-ups between the replicas of a cluster (docs/replicas.md) through PostgreSQL LISTEN/NOTIFY:
 * a schedule created on one replica wakes the coordinator's fire loop at once rather than after
 * its sleep. One connection of its own listens to the channels it was given; a notification only
 * says "look again" (no payload is trusted), so one lost while the connection was away is made up
 * for by calling every handler once it listens again. States: IDLE -> RUNNING -> STOPPED.
 */
import pg from "pg";
import type { Logger } from "@nexusflow/common";

/** The channel that wakes the coordinator's fire loop (a schedule changed or was triggered). */
export const SCHEDULES_CHANNEL = "nexusflow_schedules";

/** The channel that tells every replica to read the rate limit pauses again (one was stored). */
export const RATE_LIMITS_CHANNEL = "nexusflow_rate_limit_pauses";

/** Options of {@link ClusterNotifications}. */
export interface ClusterNotificationsOptions {
  /** PostgreSQL URL (a connection of its own listens). */
  url: string;
  log: Logger;
  /** Handlers by channel (lower-case names, as PostgreSQL folds them). */
  handlers: Readonly<Record<string, () => void>>;
  /** First pause before connecting again after the connection was lost. @default 200 */
  retryInitialMs?: number;
  /** Longest pause between reconnections. @default 5000 */
  retryMaxMs?: number;
}

/** The component's state. */
export type ClusterNotificationsState =
  { kind: "IDLE" } | { kind: "RUNNING"; client: pg.Client | undefined } | { kind: "STOPPED" };

/** See the module comment. */
export class ClusterNotifications {
  private stateValue: ClusterNotificationsState = { kind: "IDLE" };
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(private readonly options: ClusterNotificationsOptions) {}

  /** The current state. */
  get state(): ClusterNotificationsState["kind"] {
    return this.stateValue.kind;
  }

  /** Starts listening (resolves once it listens; a failure to connect is retried in the background). */
  async start(): Promise<void> {
    if (this.stateValue.kind !== "IDLE")
      throw new Error(`cannot start notifications that are ${this.stateValue.kind}`);
    this.stateValue = { kind: "RUNNING", client: undefined };
    await this.connect();
  }

  /** Sends a notification on `channel` through `pool` (every replica's listener, this one's too). */
  static async notify(pool: pg.Pool, channel: string): Promise<void> {
    await pool.query("SELECT pg_notify($1, '')", [channel]);
  }

  /** Stops listening and closes the connection. */
  async stop(): Promise<void> {
    const state = this.stateValue;
    this.stateValue = { kind: "STOPPED" };
    clearTimeout(this.timer);
    if (state.kind === "RUNNING" && state.client !== undefined)
      await state.client.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    if (this.stateValue.kind !== "RUNNING") return;
    const client = new pg.Client({
      connectionString: this.options.url,
      application_name: "nexusflow-notify",
    });
    const lost = (): void => {
      client.removeAllListeners("notification");
      void client.end().catch(() => undefined);
      const state = this.stateValue;
      if (state.kind !== "RUNNING" || state.client !== client) return;
      this.stateValue = { kind: "RUNNING", client: undefined };
      this.retry();
    };
    client.on("error", lost);
    client.on("end", lost);
    client.on("notification", (n) => this.options.handlers[n.channel]?.());
    try {
      await client.connect();
      for (const channel of Object.keys(this.options.handlers))
        await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    } catch (e) {
      client.removeAllListeners("end");
      await client.end().catch(() => undefined);
      if (this.failures === 0)
        this.options.log.warn({ err: e }, "cannot listen to the cluster's notifications; retrying");
      this.retry();
      return;
    }
    if (this.stateValue.kind !== "RUNNING") {
      await client.end().catch(() => undefined);
      return;
    }
    this.stateValue = { kind: "RUNNING", client };
    if (this.failures > 0) {
      this.options.log.info("listening to the cluster's notifications again");
      // What was notified meanwhile is looked at now.
      for (const handler of Object.values(this.options.handlers)) handler();
    }
    this.failures = 0;
  }

  private retry(): void {
    if (this.stateValue.kind !== "RUNNING") return;
    const initial = this.options.retryInitialMs ?? 200;
    const delay = Math.min(initial * 2 ** this.failures, this.options.retryMaxMs ?? 5000);
    this.failures++;
    this.timer = setTimeout(() => void this.connect(), delay);
  }
}
