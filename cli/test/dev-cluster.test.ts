/**
 * `nexusflow dev --schedulers 3` (what `npm start -- --schedulers 3` runs, issue #22): three
 * scheduler replicas in cluster mode on the embedded PostgreSQL the command starts, the executors
 * and the gateway in front of all three; the sample run succeeds, and everything stops cleanly.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { cleanEnv } from "./clean-env.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "cli", "src", "bin.mjs");

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, out }));
  });
}

describe("nexusflow dev --schedulers 3", { timeout: 600_000 }, () => {
  let work: string;
  let env: Record<string, string>;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-dev-cluster-"));
    env = {
      ...cleanEnv(),
      NEXUSFLOW_DATA_DIR: join(work, "data"),
      XDG_RUNTIME_DIR: join(work, "runtime"),
      GATEWAY_PORT: "0",
      SCHEDULER_PORT: "0",
    };
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("runs three replicas sharing the partitions, the sample succeeds, and it stops cleanly", async () => {
    const { code, out } = await run(["dev", "--schedulers", "3", "--exit-after-sample"], env);
    assert.equal(code, 0, out);
    assert.match(out, /\(replica 3 of 3\)/, "the box lists the three replicas");
    assert.match(out, /Waiting for the 3 scheduler replicas to share the partitions/);
    for (const name of ["scheduler-1", "scheduler-2", "scheduler-3"])
      assert.match(out, new RegExp(`\\[${name}\\] took partitions`), `${name} took partitions`);
    assert.match(out, /run \S+ SUCCEEDED in/);
    assert.doesNotMatch(out, /did not all hold partitions/);
  });

  it("refuses a replica count out of range with a usage error", async () => {
    for (const bad of ["0", "10", "two"]) {
      const { code, out } = await run(["dev", "--schedulers", bad], env);
      assert.equal(code, 2, out);
      assert.match(out, /--schedulers: expected 1 to 9/);
    }
  });
});
