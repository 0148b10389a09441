/**
 * The live stack the gateway's CLI tests drive: PostgreSQL, a scheduler and a gateway on port 0
 * whose authentication trusts the CLI's own dev key, with an admin token minted by the CLI
 * (`nexusflow token`) in a data directory of its own.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTokenVerifier } from "@nexusflow/common";
import type { Scheduler } from "@nexusflow/scheduler";
import { startTestDatabase, startTestScheduler } from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { nexusflow } from "./cli-process.js";

/** A running stack; `close()` stops the gateway, the scheduler and the database, and removes the data directory. */
export interface CliStack {
  db: Awaited<ReturnType<typeof startTestDatabase>>;
  scheduler: Scheduler;
  gateway: Gateway;
  /** The CLI's data directory (its dev keys). */
  dataDir: string;
  /** The gateway's base URL. */
  url: string;
  /** An admin dev token. */
  token: string;
  /** The environment a CLI process needs to reach the stack as admin. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** Starts a stack whose data directory is named after `prefix` (e.g. "nf-cli-events-"). */
export async function startCliStack(prefix: string): Promise<CliStack> {
  const dataDir = await mkdtemp(join(tmpdir(), prefix));
  const minted = await nexusflow(["token", "--scope", "admin", "--ttl", "10m"], {
    NEXUSFLOW_DATA_DIR: dataDir,
  });
  assert.equal(minted.code, 0, minted.stderr);
  const token = minted.stdout.trim();
  const db = await startTestDatabase();
  const scheduler = await startTestScheduler(db.url);
  const gateway = createGateway({
    schedulerAddress: scheduler.address,
    port: 0,
    verifier: await createTokenVerifier({
      publicKeyFiles: [join(dataDir, "dev-keys", "public.pem")],
      issuer: "nexusflow-dev",
      audience: "nexusflow",
    }),
  });
  const url = (await gateway.listen()).url;
  return {
    db,
    scheduler,
    gateway,
    dataDir,
    url,
    token,
    env: { NEXUSFLOW_ADDRESS: url, NEXUSFLOW_TOKEN: token, NEXUSFLOW_DATA_DIR: dataDir },
    async close() {
      await gateway.close();
      await scheduler.stop();
      await db.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
