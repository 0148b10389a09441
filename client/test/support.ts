/**
 * A real stack for the client's tests: an embedded PostgreSQL, a scheduler on port 0 from the
 * workspace sources with authentication on (a test Ed25519 key), and tokens signed with that key.
 * The scheduler can be stopped and started again on the same port, to make the client meet a
 * server that is gone (UNAVAILABLE) and comes back. `close()` tears everything down.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, createTokenVerifier, type Logger, type TokenVerifier } from "@nexusflow/common";
import { type EmbeddedDatabase, Scheduler, startEmbeddedPostgres } from "@nexusflow/scheduler";
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from "jose";

const ISSUER = "https://issuer.test";
const AUDIENCE = "nexusflow";

/** A quiet logger at `level` (TEST_LOG_LEVEL overrides). */
export function testLogger(name: string, level: "warn" | "error" = "warn"): Logger {
  return createLogger(name, (process.env["TEST_LOG_LEVEL"] as "warn" | undefined) ?? level);
}

/** PostgreSQL, a scheduler with authentication on, and its token signer. */
export interface TestStack {
  /** host:port of the scheduler (the same across {@link restartScheduler}). */
  readonly address: string;
  readonly scheduler: Scheduler;
  /** Verifies the stack's tokens (for a gateway in front of it). */
  readonly verifier: TokenVerifier;
  /** A token of `sub` granting `scopes` (space-separated), valid for ten minutes. */
  sign(scopes: string, sub?: string): Promise<string>;
  /** Stops the scheduler; calls then find nobody listening. */
  stopScheduler(): Promise<void>;
  /** Starts a scheduler again on the same port, against the same database. */
  startScheduler(): Promise<void>;
  close(): Promise<void>;
}

/** Starts PostgreSQL and a scheduler with authentication on. */
export async function startTestStack(): Promise<TestStack> {
  const dir = await mkdtemp(join(tmpdir(), "nf-client-"));
  let db: EmbeddedDatabase | undefined;
  let scheduler: Scheduler | undefined;
  try {
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const privateKey: CryptoKey = pair.privateKey;
    const jwkFile = join(dir, "key.jwk.json");
    await writeFile(
      jwkFile,
      JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "EdDSA" }),
    );
    const auth: TokenVerifier = await createTokenVerifier({
      publicKeyFiles: [jwkFile],
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    db = await startEmbeddedPostgres({ dir: join(dir, "pg"), log: testLogger("postgres") });
    const url = db.url;
    const make = (port: number): Scheduler =>
      new Scheduler({
        port,
        databaseUrl: url,
        dataDir: dir,
        log: testLogger("scheduler"),
        heartbeatIntervalMs: 200,
        sessionTimeoutMs: 1500,
        auth,
      });
    scheduler = make(0);
    await scheduler.start();
    const address = scheduler.address;
    const port = Number(address.slice(address.lastIndexOf(":") + 1));
    const database = db;
    let current: Scheduler = scheduler;
    return {
      address,
      verifier: auth,
      get scheduler() {
        return current;
      },
      sign: (scopes, sub = "client-test") =>
        new SignJWT({ scope: scopes })
          .setProtectedHeader({ alg: "EdDSA", kid: "k1" })
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .setSubject(sub)
          .setExpirationTime("10m")
          .sign(privateKey),
      stopScheduler: () => current.stop(),
      async startScheduler() {
        current = make(port);
        await current.start();
      },
      async close() {
        await current.stop();
        await database.destroy();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await scheduler?.stop();
    await db?.destroy();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
