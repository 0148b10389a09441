/**
 * The real command-line clients the reflection tests drive: `buf` (npm, @bufbuild/buf at the root)
 * and `grpcurl` (Go), built once into `.cache/bin` with `go install` when Go is on the PATH.
 */
import { execFile } from "node:child_process";
import { access, mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The repository root (services/gateway/test is three levels below). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** The grpcurl release the tests build (Go module proxy, latest at the time of writing). */
export const GRPCURL_VERSION = "v1.9.4";

/** `buf` from node_modules. */
export const BUF = join(ROOT, "node_modules", ".bin", "buf");

const exists = (file: string): Promise<boolean> =>
  access(file).then(
    () => true,
    () => false,
  );

/**
 * Path of grpcurl in `.cache/bin`, built with `go install` the first time (a few minutes on a cold
 * module cache); undefined when it is missing and Go is not available.
 */
export async function grpcurl(): Promise<string | undefined> {
  const bin = join(ROOT, ".cache", "bin");
  const file = join(bin, "grpcurl");
  if (await exists(file)) return file;
  try {
    await run("go", ["version"], { timeout: 30_000 });
  } catch {
    return undefined;
  }
  await mkdir(bin, { recursive: true });
  // Built into a private directory and renamed into place: test files that build it at the same
  // time never see (or run) half a binary.
  const staging = await mkdtemp(join(bin, ".grpcurl-"));
  try {
    await run("go", ["install", `github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}`], {
      env: { ...process.env, GOBIN: staging },
      timeout: 900_000,
    });
    await rename(join(staging, "grpcurl"), file);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return (await exists(file)) ? file : undefined;
}

/** Why a test that needs grpcurl cannot run, or undefined when it can; under CI=true it must. */
export function missingGrpcurl(path: string | undefined): string | undefined {
  if (path !== undefined) return undefined;
  if (process.env["CI"] === "true")
    throw new Error("grpcurl is required under CI=true: install Go or put grpcurl in .cache/bin");
  return "grpcurl not available (no Go on the PATH)";
}

/** Runs a tool; resolves with its stdout, rejects with its stderr in the message. */
export async function tool(file: string, args: readonly string[], timeoutMs = 60_000): Promise<string> {
  try {
    const { stdout } = await run(file, [...args], { timeout: timeoutMs, cwd: ROOT });
    return stdout;
  } catch (e) {
    const stderr = typeof e === "object" && e !== null && "stderr" in e ? String(e.stderr) : "";
    throw new Error(`${file} ${args.join(" ")} failed: ${stderr || String(e)}`, { cause: e });
  }
}
