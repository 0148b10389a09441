/**
 * A failing `shell` command under a step's retry policy, end to end: a real scheduler over an
 * embedded PostgreSQL and a real executor running real child processes. The command counts its
 * runs in a file, so the test knows how often it truly ran, not only what the scheduler recorded.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import type { Executor } from "@nexusflow/executor";
import { RunStatus, TaskStatus, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import {
  startTestDatabase,
  startTestExecutor,
  startTestScheduler,
  waitForRun,
  workflowClient,
} from "../support.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "./harness.js";

/**
 * argv[1] = counter file, argv[2] = how many runs fail (a number), argv[3] = their exit code.
 * Each run adds one to the counter; the first `failures` runs exit with the code, later ones succeed.
 */
const FLAKY = `
  const fs = require("node:fs");
  const [file, failures, code] = process.argv.slice(1);
  const n = (fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8")) : 0) + 1;
  fs.writeFileSync(file, String(n));
  if (n <= Number(failures)) { process.stderr.write("run " + n + " failing\\n"); process.exit(Number(code)); }
  process.stdout.write("ok on run " + n);
`;

describe("shell step retries end to end", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let executor: Executor;
  let client: WorkflowClient;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-shell-retry-"));
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
    client = workflowClient(scheduler.address);
    executor = await startTestExecutor(scheduler, {
      executorId: "shell-exec",
      slots: 4,
      drainTimeoutMs: 2000,
    });
  });

  after(async () => {
    await executor?.stop("test over");
    await scheduler?.stop();
    await db?.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  /** Registers a one-step shell workflow running FLAKY with `retry` and extra shell input. */
  const register = async (name: string, retry: unknown, extraInput: Record<string, unknown> = {}) => {
    await registerSpec(client, {
      name,
      version: 1,
      steps: [
        {
          id: "cmd",
          type: "shell",
          // failures and code are whole-string templates, so they reach the handler as numbers.
          input: {
            command: [
              process.execPath,
              "-e",
              FLAKY,
              "{{ input.counter }}",
              "{{ input.failures }}",
              "{{ input.code }}",
            ],
            ...extraInput,
          },
          retry,
        },
      ],
      output: { stdout: "{{ steps.cmd.output.stdout }}" },
    });
  };

  const run = async (name: string, failures: number, code: number): Promise<{ run: Run; ran: number }> => {
    const counter = join(dir, `${name}.count`);
    const started = await client.startRun({
      workflowName: name,
      input: jsonToValue({ counter, failures, code }),
    });
    assert.ok(started.run);
    const done = await waitForRun(client, started.run.id, 60_000);
    return { run: done, ran: Number(await readFile(counter, "utf8")) };
  };

  const attemptErrors = (r: Run): (string | undefined)[] => task(r, "cmd").attempts.map((a) => a.error?.type);

  it("retries a failing command under the step's policy until it succeeds on attempt 3", async () => {
    await register("shell-flaky", { maxAttempts: 3, initialInterval: "10ms" });
    const { run: done, ran } = await run("shell-flaky", 2, 7);

    assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
    assert.equal(ran, 3);
    const cmd = task(done, "cmd");
    assert.equal(cmd.status, TaskStatus.SUCCEEDED);
    assert.deepEqual(
      cmd.attempts.map((a) => [a.number, a.status]),
      [
        [1, TaskStatus.FAILED],
        [2, TaskStatus.FAILED],
        [3, TaskStatus.SUCCEEDED],
      ],
      describeRun(done),
    );
    assert.deepEqual(attemptErrors(done), ["EXIT_CODE", "EXIT_CODE", undefined]);
    // The failed attempts keep what the command said: exit code and the tail of stderr.
    const first = cmd.attempts[0]?.error;
    assert.equal(first?.retryable, true);
    assert.match(first?.message ?? "", /exited with code 7: run 1 failing$/);
    assert.deepEqual(
      [
        (valueToJson(first?.details) as { exitCode: number }).exitCode,
        (valueToJson(first?.details) as { stderr: string }).stderr,
      ],
      [7, "run 1 failing\n"],
    );
    assert.deepEqual(valueToJson(done.output), { stdout: "ok on run 3" });
  });

  it("fails after one attempt when the policy lists EXIT_CODE as non-retryable", async () => {
    await register("shell-no-retry", {
      maxAttempts: 3,
      initialInterval: "10ms",
      nonRetryableErrors: ["EXIT_CODE"],
    });
    const { run: done, ran } = await run("shell-no-retry", 2, 7);

    assert.equal(done.status, RunStatus.FAILED, describeRun(done));
    assert.equal(ran, 1);
    assert.equal(task(done, "cmd").status, TaskStatus.FAILED);
    assert.deepEqual(attemptErrors(done), ["EXIT_CODE"], describeRun(done));
    assert.equal(done.error?.type, "EXIT_CODE");
  });

  it("fails after one attempt on an exit code listed in terminalExitCodes", async () => {
    await register(
      "shell-terminal-code",
      { maxAttempts: 3, initialInterval: "10ms" },
      { terminalExitCodes: [64] },
    );
    const { run: done, ran } = await run("shell-terminal-code", 2, 64);

    assert.equal(done.status, RunStatus.FAILED, describeRun(done));
    assert.equal(ran, 1);
    assert.deepEqual(attemptErrors(done), ["EXIT_CODE"], describeRun(done));
    assert.equal(task(done, "cmd").attempts[0]?.error?.retryable, false);
  });

  it("fails without running the command when an exit code list is invalid", async () => {
    await register(
      "shell-bad-codes",
      { maxAttempts: 3, initialInterval: "10ms" },
      { retryOnExitCodes: [1, 256] },
    );
    const counter = join(dir, "shell-bad-codes.count");
    const started = await client.startRun({
      workflowName: "shell-bad-codes",
      input: jsonToValue({ counter, failures: 0, code: 1 }),
    });
    assert.ok(started.run);
    const done = await waitForRun(client, started.run.id, 60_000);

    assert.equal(done.status, RunStatus.FAILED, describeRun(done));
    assert.deepEqual(attemptErrors(done), ["INVALID_INPUT"], describeRun(done));
    assert.match(task(done, "cmd").attempts[0]?.error?.message ?? "", /^retryOnExitCodes\[1\]: /);
    await assert.rejects(readFile(counter, "utf8"), { code: "ENOENT" });
  });
});
