/**
 * `nexusflow token` from another directory: it mints with the running dev stack's key (found
 * through the state file), and with no stack and no key it fails in one line instead of creating
 * a key that no stack trusts. The CLI runs as a process.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createTokenVerifier } from "@nexusflow/common";
import { DEV_AUDIENCE, DEV_ISSUER, devKeysDir, ensureDevKeys } from "./dev-keys.js";
import { devStateFile, readDevState, removeDevState, writeDevState } from "./dev-state.js";
import { runNexusflow } from "./testing.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A pid that no process has any more. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  assert.ok(child.pid !== undefined);
  return child.pid;
}

describe("nexusflow token finds the running dev stack's key", () => {
  let work: string;
  let runtime: string;
  let elsewhere: string;
  let stackData: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-dev-state-"));
    runtime = join(work, "runtime");
    elsewhere = join(work, "some", "other", "dir");
    stackData = join(work, "stack-data");
    for (const dir of [runtime, elsewhere]) await mkdir(dir, { recursive: true });
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("mints from another directory with the key of the stack the state file records", async () => {
    const env = { XDG_RUNTIME_DIR: runtime };
    const keys = await ensureDevKeys(devKeysDir(stackData));
    // This test process plays the stack: its pid is alive.
    assert.equal(
      await writeDevState(env, { dataDir: stackData, gatewayUrl: "http://127.0.0.1:1", pid: process.pid }),
      true,
    );
    try {
      const r = await runNexusflow(["token", "--scope", "admin"], { cwd: elsewhere, env });
      assert.equal(r.code, 0, r.stderr);
      const verifier = await createTokenVerifier({
        publicKeyFiles: [keys.publicKeyFile],
        issuer: DEV_ISSUER,
        audience: DEV_AUDIENCE,
      });
      const principal = await verifier.verify(r.stdout.trim());
      assert.deepEqual([...principal.scopes], ["admin"]);
      assert.equal(existsSync(join(elsewhere, ".nexusflow")), false, "no key created where it ran");
    } finally {
      await removeDevState(env, process.pid);
    }
    assert.equal(existsSync(devStateFile(env)), false);
  });

  it("fails in one line, creating no key, when no stack runs and no key is here", async () => {
    const env = { XDG_RUNTIME_DIR: runtime };
    // A state file left by a stack that was killed: its process is gone, so it is ignored.
    assert.equal(
      await writeDevState(env, {
        dataDir: stackData,
        gatewayUrl: "http://127.0.0.1:1",
        pid: await deadPid(),
      }),
      true,
    );
    assert.equal(await readDevState(env), undefined);
    const r = await runNexusflow(["token"], { cwd: elsewhere, env });
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0] ?? "", /^nexusflow: cannot find the dev stack's key .*NEXUSFLOW_DATA_DIR=/);
    assert.equal(r.stdout, "");
    assert.deepEqual(await readdir(elsewhere), [], "no key created where it ran");
    assert.equal(existsSync(join(ROOT, ".nexusflow", "dev-keys")), false, "nor in the checkout");
  });
});
