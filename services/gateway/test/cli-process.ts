/**
 * The `nexusflow` CLI as a child process (its `bin`, on this process's Node), for the tests that
 * drive it against a live stack: without this process's NEXUSFLOW_ and AUTH_ variables, so that
 * only what a test passes reaches it.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./tools.js";

/** The CLI's entry point. */
export const BIN = join(ROOT, "cli", "src", "bin.mjs");

/** How a CLI process ended, with what it wrote (stdout as bytes: downloads are binary). */
export interface CliExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** How a CLI process ended, with its output as text. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Starts `nexusflow ...args` with `env` on a clean base; `exited` collects its output. A process
 * still running after `timeoutMs` is killed (its result then says SIGKILL).
 */
export function startCli(
  args: readonly string[],
  env: Record<string, string | undefined>,
  timeoutMs = 60_000,
): { child: ChildProcess; exited: Promise<CliExit> } {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("NEXUSFLOW_") && !k.startsWith("AUTH_")),
  );
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...base, NO_COLOR: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => out.push(c));
  child.stderr?.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const exited = new Promise<CliExit>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr });
    });
  });
  return { child, exited };
}

/** Runs `nexusflow ...args` to its end and returns its exit code and output as text. */
export async function nexusflow(
  args: readonly string[],
  env: Record<string, string | undefined>,
  timeoutMs?: number,
): Promise<CliResult> {
  const { code, stdout, stderr } = await startCli(args, env, timeoutMs).exited;
  return { code, stdout: stdout.toString("utf8"), stderr };
}

/** The one line a failing command writes to stderr (asserting there is exactly one). */
export function oneLine(r: { stderr: string }): string {
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  return lines[0] as string;
}
