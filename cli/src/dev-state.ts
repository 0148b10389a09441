/**
 * Where a running `nexusflow dev` (npm start) keeps its data: a small state file in a per-user
 * place (`$XDG_RUNTIME_DIR/nexusflow/dev-stack.json`, else `<tmpdir>/nexusflow-<uid>/`), written
 * once the stack is up and removed when it stops. `nexusflow token` run from any directory finds
 * the stack's dev key through it, instead of minting with a new key the stack does not trust;
 * `nexusflow executor` finds the stack's scheduler and artifact directory there too.
 */
import { access, lstat, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { devKeysDir } from "./dev-keys.js";

/** What the state file records. */
export interface DevState {
  /** Absolute data directory of the stack (its dev key is under `dev-keys/`). */
  dataDir: string;
  /** The gateway's base URL. */
  gatewayUrl: string;
  /** Process id of `nexusflow dev`; a state file whose process is gone is ignored. */
  pid: number;
  /** The scheduler's gRPC address, host:port (absent in a state written by an older CLI). */
  schedulerAddress?: string | undefined;
  /**
   * Absolute directory where the stack keeps logs and artifacts, when on the filesystem (absent
   * with S3): an executor of its own writes there so the gateway can serve its tasks' logs.
   */
  artifactsDir?: string | undefined;
}

/** The per-user directory of the state file. */
export function devStateDir(env: NodeJS.ProcessEnv): string {
  const runtime = env["XDG_RUNTIME_DIR"]?.trim();
  if (runtime !== undefined && runtime !== "" && isAbsolute(runtime)) return join(runtime, "nexusflow");
  return join(tmpdir(), `nexusflow-${process.getuid?.() ?? "user"}`);
}

/** The state file. */
export function devStateFile(env: NodeJS.ProcessEnv): string {
  return join(devStateDir(env), "dev-stack.json");
}

/**
 * Records the running stack; false when the per-user directory is not ours (a shared temporary
 * directory where someone else created it first) or cannot be written.
 */
export async function writeDevState(env: NodeJS.ProcessEnv, state: DevState): Promise<boolean> {
  const dir = devStateDir(env);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const info = await lstat(dir);
    if (!info.isDirectory() || (process.getuid !== undefined && info.uid !== process.getuid())) return false;
    const file = devStateFile(env);
    await writeFile(`${file}.${process.pid}.tmp`, `${JSON.stringify(state)}\n`, { mode: 0o600 });
    await rename(`${file}.${process.pid}.tmp`, file);
    return true;
  } catch {
    return false;
  }
}

/** Removes the state file if it still records process `pid` (a newer stack may have replaced it). */
export async function removeDevState(env: NodeJS.ProcessEnv, pid: number): Promise<void> {
  const file = devStateFile(env);
  const state = await readState(file);
  if (state?.pid === pid) await rm(file, { force: true });
}

async function readState(file: string): Promise<DevState | undefined> {
  try {
    const value = JSON.parse(await readFile(file, "utf8")) as Partial<DevState>;
    if (typeof value.dataDir !== "string" || typeof value.gatewayUrl !== "string") return undefined;
    if (typeof value.pid !== "number" || !Number.isInteger(value.pid) || value.pid <= 0) return undefined;
    const state: DevState = { dataDir: value.dataDir, gatewayUrl: value.gatewayUrl, pid: value.pid };
    if (typeof value.schedulerAddress === "string") state.schedulerAddress = value.schedulerAddress;
    if (typeof value.artifactsDir === "string") state.artifactsDir = value.artifactsDir;
    return state;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, it is just not ours to signal.
    return typeof e === "object" && e !== null && "code" in e && e.code === "EPERM";
  }
}

/** The running stack's state, or undefined when there is none (no file, or its process is gone). */
export async function readDevState(env: NodeJS.ProcessEnv): Promise<DevState | undefined> {
  const state = await readState(devStateFile(env));
  return state !== undefined && isAlive(state.pid) ? state : undefined;
}

/** No dev key was found; the message says what to pass. */
export class DevKeyNotFoundError extends Error {
  override name = "DevKeyNotFoundError";
}

/** Where the dev key to mint with is, and whether it may be created there. */
export interface DevKeyLocation {
  /** The `dev-keys` directory. */
  dir: string;
  /** Only when NEXUSFLOW_DATA_DIR names the directory: it may be created there. */
  create: boolean;
}

async function hasDevKeys(dataDir: string): Promise<boolean> {
  return access(join(devKeysDir(dataDir), "private.pem")).then(
    () => true,
    () => false,
  );
}

/**
 * The dev key of the stack to talk to: NEXUSFLOW_DATA_DIR (relative to `root`) if set; else
 * `./.nexusflow` if it holds a dev key; else the running stack's recorded data directory. Throws
 * {@link DevKeyNotFoundError} otherwise: a new key would only mint tokens that no stack accepts.
 */
export async function findDevKeys(
  env: NodeJS.ProcessEnv,
  root: string,
  cwd: string,
): Promise<DevKeyLocation> {
  const fromEnv = env["NEXUSFLOW_DATA_DIR"]?.trim();
  if (fromEnv !== undefined && fromEnv !== "") {
    return { dir: devKeysDir(resolve(root, fromEnv)), create: true };
  }
  const here = join(cwd, ".nexusflow");
  if (await hasDevKeys(here)) return { dir: devKeysDir(here), create: false };
  const running = await readDevState(env);
  if (running !== undefined && (await hasDevKeys(running.dataDir))) {
    return { dir: devKeysDir(running.dataDir), create: false };
  }
  throw new DevKeyNotFoundError(
    `cannot find the dev stack's key (no running 'npm start' recorded in ${devStateFile(env)}, ` +
      `no .nexusflow/dev-keys here); start the stack, or pass ` +
      `NEXUSFLOW_DATA_DIR=<the stack's data directory, absolute>`,
  );
}
