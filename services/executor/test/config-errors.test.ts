/**
 * The executor process (src/main.ts, under tsx) refuses a bad configuration at start: one line on
 * stderr naming the variable, exit status 2, before it connects anywhere.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const EXECUTOR_MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
/** How long the process may take to start (tsx compiles it) and refuse; it is killed then. */
const EXIT_WITHIN_MS = 30_000;

/** Variables of the shell running the tests that would change what the process does. */
const SCRUBBED = /^(S3_|EXECUTOR_|SCHEDULER_ADDRESS$|ARTIFACT|METRICS_|HEALTH_|OTEL_|LOG_LEVEL$)/;

/** Runs the executor process with `env` until it exits (killed after {@link EXIT_WITHIN_MS}). */
async function runExecutor(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !SCRUBBED.test(name)));
  const child = spawn(process.execPath, ["--import", "tsx", EXECUTOR_MAIN], {
    cwd: REPO_ROOT,
    env: { ...base, METRICS_PORT: "off", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => (stderr += chunk));
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_WITHIN_MS);
  try {
    const [code, signal] = await exited;
    assert.equal(
      signal,
      null,
      `the process did not exit by itself within ${EXIT_WITHIN_MS} ms; stderr: ${stderr}`,
    );
    return { code, stderr };
  } finally {
    clearTimeout(timer);
  }
}

describe("executor process configuration", { timeout: 2 * EXIT_WITHIN_MS }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-executor-config-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses ARTIFACT_OFFLOAD_THRESHOLD above the largest output it sends inline, in one line, exit 2", async () => {
    const { code, stderr } = await runExecutor({
      ARTIFACTS_DIR: join(dir, "artifacts"),
      ARTIFACT_OFFLOAD_THRESHOLD: String(8 * 1024 * 1024),
      // Nothing listens there: a process that went on would retry for ever (and be killed).
      SCHEDULER_ADDRESS: "127.0.0.1:1",
    });
    assert.equal(code, 2, stderr);
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(
      lines[0] ?? "",
      /^nexusflow-executor: ARTIFACT_OFFLOAD_THRESHOLD: must be between 1024 and 3145728 \(an executor sends outputs of up to 3 MiB inline .*\), got 8388608$/,
    );
  });
});
