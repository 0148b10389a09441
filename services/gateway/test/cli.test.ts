/**
 * The `nexusflow` operator CLI, spawned as a process (its `bin`), driving a full run through the
 * gateway (authentication on, trusting the CLI's own dev key) in front of a real scheduler and
 * executor: token, apply, runs start/watch/get/list/cancel, logs, and the one-line errors.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createLogger, createTokenVerifier, freePort } from "@nexusflow/common";
import { Executor } from "@nexusflow/executor";
import type { Scheduler } from "@nexusflow/scheduler";
import { startTestDatabase, startTestScheduler } from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { nexusflow, oneLine } from "./cli-process.js";
import { ROOT } from "./tools.js";

const T = { timeout: 120_000 };

describe("nexusflow CLI against a live stack", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let gateway: Gateway;
  let dataDir: string;
  let emptyDataDir: string;
  let env: Record<string, string>;
  let adminToken: string;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "nf-cli-"));
    emptyDataDir = await mkdtemp(join(tmpdir(), "nf-cli-empty-"));
    // The CLI creates the dev key on first use; the gateway then trusts exactly that key.
    const minted = await nexusflow(["token", "--scope", "admin", "--ttl", "10m"], {
      NEXUSFLOW_DATA_DIR: dataDir,
    });
    assert.equal(minted.code, 0, minted.stderr);
    adminToken = minted.stdout.trim();
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "cli-executor",
      slots: 4,
      logger: createLogger("executor", "silent"),
    });
    await executor.start();
    gateway = createGateway({
      schedulerAddress: scheduler.address,
      port: 0,
      verifier: await createTokenVerifier({
        publicKeyFiles: [join(dataDir, "dev-keys", "public.pem")],
        issuer: "nexusflow-dev",
        audience: "nexusflow",
      }),
    });
    const { url } = await gateway.listen();
    env = { NEXUSFLOW_ADDRESS: url, NEXUSFLOW_TOKEN: adminToken, NEXUSFLOW_DATA_DIR: emptyDataDir };
  });

  after(async () => {
    await gateway?.close();
    await executor?.stop();
    await scheduler?.stop();
    await db?.close();
    await rm(dataDir, { recursive: true, force: true });
    await rm(emptyDataDir, { recursive: true, force: true });
  });

  it("token: mints a clearly labelled, short-lived dev token", T, async () => {
    const r = await nexusflow(["token", "--scope", "runs:read", "--ttl", "5m", "--subject", "ci"], {
      NEXUSFLOW_DATA_DIR: dataDir,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(oneLine(r), /DEV token \(iss nexusflow-dev, sub ci, scopes runs:read, expires /);
    const [, payload] = r.stdout.trim().split(".");
    const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString()) as Record<string, unknown>;
    assert.equal(claims["iss"], "nexusflow-dev");
    assert.equal(claims["scope"], "runs:read");
    assert.equal((claims["exp"] as number) - (claims["iat"] as number), 300);
    const bad = await nexusflow(["token", "--scope", "runs:delete"], { NEXUSFLOW_DATA_DIR: dataDir });
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /^nexusflow: --scope: unknown scope "runs:delete" \(known: .*\)\nRun "nexusflow help token" for usage.\n$/,
    );
  });

  it("apply: registers definitions, then reports them unchanged", T, async () => {
    const first = await nexusflow(["apply", "examples/hello-world.json"], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      first.stdout,
      /^WORKFLOW\s+VERSION\s+RESULT\s+FILE\nhello-world\s+1\s+registered\s+examples\/hello-world.json\n$/,
    );
    const again = await nexusflow(["apply", "examples/hello-world.json", "--output", "json"], env);
    assert.equal(again.code, 0, again.stderr);
    const parsed = JSON.parse(again.stdout) as { workflow: { name: string }; created?: boolean }[];
    assert.equal(parsed[0]?.workflow.name, "hello-world");
    assert.equal(parsed[0]?.created, undefined);
  });

  let runId = "";

  it(
    "apply: skips JSON that is not a definition with a note, fails text that is not JSON, keeps going",
    T,
    async () => {
      const examples = ["hello-world.json", "order-pipeline.input.json", "order-pipeline.json"];
      const r = await nexusflow(["apply", ...examples.map((f) => join(ROOT, "examples", f))], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        oneLine(r),
        /^nexusflow: apply: skipping .*order-pipeline\.input\.json: not a workflow definition/,
      );
      assert.match(r.stdout, /hello-world +1 /);
      assert.match(r.stdout, /order-pipeline +1 /);

      const broken = join(dataDir, "broken.json");
      await writeFile(broken, "{ not json");
      const b = await nexusflow(["apply", broken, join(ROOT, "examples", "hello-world.json")], env);
      assert.equal(b.code, 1);
      assert.match(oneLine(b), /^nexusflow: apply: .*broken\.json is not valid JSON: /);
      assert.match(b.stdout, /hello-world +1 +unchanged/);
    },
  );

  it("runs start, watch, get and list: a full run", T, async () => {
    const inputFile = join(dataDir, "input.json");
    await writeFile(inputFile, JSON.stringify({ name: "Ada" }));
    const started = await nexusflow(
      ["runs", "start", "hello-world", "--input", `@${inputFile}`, "--label", "env=cli", "--output", "json"],
      env,
    );
    assert.equal(started.code, 0, started.stderr);
    runId = (JSON.parse(started.stdout) as { run: { id: string } }).run.id;
    assert.match(runId, /^[0-9a-f-]{36}$/);

    const watched = await nexusflow(["runs", "watch", runId], env);
    assert.equal(watched.code, 0, watched.stderr);
    assert.match(watched.stdout, new RegExp(`^run ${runId} hello-world v1\\n`));
    assert.match(watched.stdout, /greet\s+SUCCEEDED\s+cli-executor/);
    assert.match(watched.stdout, /pause\s+SUCCEEDED/);
    assert.match(watched.stdout, new RegExp(`run ${runId} SUCCEEDED in `));
    assert.match(watched.stdout, /"greeting": "hello, Ada!"/);

    const got = await nexusflow(["runs", "get", runId], env);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^RUN\s+WORKFLOW\s+STATUS\s+CREATED\s+DURATION\n/);
    assert.match(got.stdout, /STEP\s+STATUS\s+ATTEMPT\s+EXECUTOR\s+DURATION\s+ERROR\n/);
    assert.match(got.stdout, /greet\s+SUCCEEDED\s+1\s+cli-executor/);
    assert.match(got.stdout, /labels: env=cli/);
    const gotJson = await nexusflow(["runs", "get", runId, "-o", "json"], env);
    assert.equal((JSON.parse(gotJson.stdout) as { status: string }).status, "RUN_STATUS_SUCCEEDED");

    const listed = await nexusflow(
      ["runs", "list", "--workflow", "hello-world", "--status", "succeeded", "--label", "env=cli"],
      env,
    );
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(`${runId}\\s+hello-world v1\\s+SUCCEEDED`));
    const none = await nexusflow(["runs", "list", "--status", "FAILED", "--output", "json"], env);
    assert.deepEqual(JSON.parse(none.stdout), {});
  });

  it("runs start --watch and runs cancel: a cancelled run makes watch exit 1", T, async () => {
    const spec = join(dataDir, "slow.json");
    await writeFile(
      spec,
      JSON.stringify({
        name: "cli-slow",
        version: 1,
        steps: [{ id: "wait", type: "sleep", input: { duration: "60s" } }],
      }),
    );
    assert.equal((await nexusflow(["apply", spec], env)).code, 0);
    const started = await nexusflow(["runs", "start", "cli-slow", "-o", "json"], env);
    const id = (JSON.parse(started.stdout) as { run: { id: string } }).run.id;
    const watching = nexusflow(["runs", "watch", id], env);
    const cancelled = await nexusflow(["runs", "cancel", id, "--reason", "test"], env);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    const watched = await watching;
    assert.equal(watched.code, 1, watched.stdout + watched.stderr);
    assert.match(watched.stdout, /CANCELLED/);
  });

  it("logs: prints the task's lines, or says in one line that logs are not served", T, async () => {
    const r = await nexusflow(["logs", runId, "greet"], env);
    if (r.code === 0) {
      assert.equal(r.stderr, "");
    } else {
      assert.equal(r.code, 1);
      assert.match(
        oneLine(r),
        /^nexusflow: logs: (the gateway at .* does not serve task logs yet \(UNIMPLEMENTED\)|NOT_FOUND: .*)$/,
      );
    }
  });

  it("fails with one line and a non-zero exit code", T, async () => {
    const invalid = await nexusflow(["runs", "get", "not-a-run-id"], env);
    assert.equal(invalid.code, 1);
    assert.match(oneLine(invalid), /^nexusflow: runs get: INVALID_ARGUMENT: /);

    const missing = await nexusflow(["runs", "get", "00000000-0000-4000-8000-000000000000"], env);
    assert.equal(missing.code, 1);
    assert.match(oneLine(missing), /^nexusflow: runs get: NOT_FOUND: /);

    const reader = (
      await nexusflow(["token", "--scope", "runs:read"], { NEXUSFLOW_DATA_DIR: dataDir })
    ).stdout.trim();
    const denied = await nexusflow(["runs", "start", "hello-world"], { ...env, NEXUSFLOW_TOKEN: reader });
    assert.equal(denied.code, 1);
    assert.match(oneLine(denied), /PERMISSION_DENIED: .*requires the scope "runs:write"/);

    const anonymous = await nexusflow(["runs", "list"], { ...env, NEXUSFLOW_TOKEN: undefined });
    assert.equal(anonymous.code, 1);
    assert.match(oneLine(anonymous), /UNAUTHENTICATED: missing bearer token .*NEXUSFLOW_TOKEN/);

    const down = await nexusflow(["runs", "list", "--address", `127.0.0.1:${await freePort()}`], env);
    assert.equal(down.code, 1);
    assert.match(oneLine(down), /UNAVAILABLE: .*is the gateway running/);

    const badInput = await nexusflow(["runs", "start", "hello-world", "--input", "{nope"], env);
    assert.equal(badInput.code, 2);
    assert.match(badInput.stderr, /--input is not JSON/);
    const usage = await nexusflow(["runs", "frobnicate"], env);
    assert.equal(usage.code, 2);
  });

  it("uses a dev token from the local dev key when none is given (gateway on this machine)", T, async () => {
    const r = await nexusflow(["runs", "list", "--output", "json"], {
      ...env,
      NEXUSFLOW_TOKEN: undefined,
      NEXUSFLOW_DATA_DIR: dataDir,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(oneLine(r), /using a dev token \(nexusflow-dev\)/);
    assert.ok((JSON.parse(r.stdout) as { runs: unknown[] }).runs.length >= 2);
  });
});
