/** Test support: the CLI run as a process, as a user runs it. */
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The `nexusflow` executable (bin.mjs), run with this Node. */
export const BIN = join(dirname(fileURLToPath(import.meta.url)), "bin.mjs");

/** How a `nexusflow` process ended. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `nexusflow ...args` in `cwd` with `env` on top of this process's environment without
 * NEXUSFLOW_* and XDG_RUNTIME_DIR (so no running stack of the developer's is found), NO_COLOR set.
 */
export function runNexusflow(
  args: readonly string[],
  { cwd = process.cwd(), env = {} }: { cwd?: string; env?: Record<string, string> } = {},
): Promise<CliResult> {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("NEXUSFLOW_") && k !== "XDG_RUNTIME_DIR"),
  );
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd,
      env: { ...base, NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}
