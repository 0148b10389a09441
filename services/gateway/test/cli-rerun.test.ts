/**
 * `nexusflow runs rerun` spawned as a process, and POST /v1/runs/{run_id}:rerun over REST, against
 * a real gateway (authentication on), scheduler and executor (built-in shell steps) on a real
 * embedded PostgreSQL: a run fails at a step that needs a file, the file is made, the rerun from
 * that step succeeds without running the step before it again (each step appends to a log); bad
 * input is refused naming the flag or the field.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Executor } from "@nexusflow/executor";
import type { Scheduler } from "@nexusflow/scheduler";
import { startTestExecutor, waitFor } from "../../scheduler/test/support.js";
import { nexusflow } from "./cli-process.js";
import { type CliStack, startCliStack } from "./cli-stack.js";

const T = { timeout: 120_000 };

interface RunJson {
  id: string;
  status?: string;
  rerunOf?: string;
  rerunFromStep?: string;
  reruns?: string[];
  labels?: Record<string, string>;
  tasks?: { stepId: string; status?: string; reusedFrom?: string }[];
}

/** A shell step that appends its id to the log, then runs `more` (a sh script) if given. */
function shellStep(id: string, dependsOn: string[], more = "") {
  return {
    id,
    type: "shell",
    dependsOn,
    retry: { maxAttempts: 1 },
    input: { command: ["sh", "-c", `echo ${id} >> "$0"${more}`, "{{ input.log }}", "{{ input.flag }}"] },
  };
}

describe("nexusflow runs rerun and /v1/runs/{id}:rerun against a live stack", () => {
  let stack: CliStack | undefined;
  let scheduler: Scheduler;
  let executor: Executor;
  let dataDir: string;
  let env: Record<string, string>;
  let url: string;
  let token: string;

  before(async () => {
    stack = await startCliStack("nf-cli-rerun-");
    ({ scheduler, dataDir, url, token, env } = stack);
    executor = await startTestExecutor(scheduler, { executorId: "rerun-shell", slots: 4 });
    const file = join(dataDir, "report.json");
    await writeFile(
      file,
      JSON.stringify({
        name: "rerun-report",
        version: 1,
        steps: [
          shellStep("fetch", []),
          // Fails unless the flag file exists: the "bug", fixed by creating it.
          shellStep("build", ["fetch"], ' && test -e "$1"'),
          shellStep("publish", ["build"]),
        ],
      }),
    );
    const applied = await nexusflow(["apply", file], env);
    assert.equal(applied.code, 0, applied.stderr);
  });

  after(async () => {
    await executor?.stop("test over");
    await stack?.close();
  });

  const rest = async (
    path: string,
    body: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await fetch(`${url}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };

  const getRun = async (id: string): Promise<RunJson> => {
    const got = await nexusflow(["runs", "get", id, "--output", "json"], env);
    assert.equal(got.code, 0, got.stderr);
    return JSON.parse(got.stdout) as RunJson;
  };

  /** A run of rerun-report that failed at build, logging to `log`, with `flag` not there yet. */
  const failedRun = async (name: string): Promise<{ id: string; log: string; flag: string }> => {
    const log = join(dataDir, `${name}.log`);
    const flag = join(dataDir, `${name}.flag`);
    const started = await nexusflow(
      ["runs", "start", "rerun-report", "--input", JSON.stringify({ log, flag }), "--watch", "-o", "json"],
      env,
    );
    assert.equal(started.code, 1, `the run fails at build: ${started.stdout}${started.stderr}`);
    const id = await waitFor("the failed run", async () => {
      const list = await nexusflow(["runs", "list", "--workflow", "rerun-report", "-o", "json"], env);
      const runs = (JSON.parse(list.stdout) as { runs?: RunJson[] }).runs ?? [];
      const found = await Promise.all(runs.map((r) => getRun(r.id)));
      return found.find(
        (r) => r.status === "RUN_STATUS_FAILED" && r.reruns === undefined && r.rerunOf === undefined,
      )?.id;
    });
    return { id, log, flag };
  };

  it(
    "reruns a failed run from its broken step once it is fixed, without running fetch again",
    T,
    async () => {
      const { id, log, flag } = await failedRun("cli");
      assert.equal(await readFile(log, "utf8"), "fetch\nbuild\n");
      await writeFile(flag, "fixed");
      const rerun = await nexusflow(["runs", "rerun", id, "--from", "build", "--watch"], env);
      assert.equal(rerun.code, 0, rerun.stdout + rerun.stderr);
      assert.match(rerun.stdout, new RegExp(`rerun of ${id} from build; reused: fetch`));
      assert.equal(await readFile(log, "utf8"), "fetch\nbuild\nbuild\npublish\n");
      const original = await getRun(id);
      assert.equal(original.reruns?.length, 1);
      const again = await getRun(original.reruns?.[0] ?? "");
      assert.equal(again.status, "RUN_STATUS_SUCCEEDED");
      assert.equal(again.rerunOf, id);
      assert.equal(again.rerunFromStep, "build");
      assert.equal(again.labels?.["rerun-of"], id);
      const fetch = again.tasks?.find((t) => t.stepId === "fetch");
      const originalFetch = (await getRun(id)).tasks?.find((t) => t.stepId === "fetch");
      assert.ok(fetch?.reusedFrom !== undefined && fetch.reusedFrom !== "");
      assert.equal(fetch.reusedFrom, (originalFetch as { id?: string } | undefined)?.id);
      const table = await nexusflow(["runs", "get", again.id], env);
      assert.match(table.stdout, new RegExp(`rerun of ${id} from step build`));
      assert.match(table.stdout, /reused \(not run again\)/);
    },
  );

  it("reruns over REST, and refuses bad requests naming the field or the flag", T, async () => {
    const { id, log, flag } = await failedRun("rest");
    const noStep = await rest(`/v1/runs/${id}:rerun`, { fromStep: "" });
    assert.equal(noStep.status, 400);
    assert.match(String(noStep.json["message"]), /from_step/);
    const unknownStep = await rest(`/v1/runs/${id}:rerun`, { fromStep: "deploy" });
    assert.equal(unknownStep.status, 404);
    const upstreamFailed = await rest(`/v1/runs/${id}:rerun`, { fromStep: "publish" });
    assert.equal(upstreamFailed.status, 400, JSON.stringify(upstreamFailed.json));
    assert.match(String(upstreamFailed.json["message"]), /step build, upstream of publish, did not succeed/);
    const missingFrom = await nexusflow(["runs", "rerun", id], env);
    assert.notEqual(missingFrom.code, 0);
    assert.match(missingFrom.stderr, /--from/);
    const badInput = await nexusflow(["runs", "rerun", id, "--from", "build", "--input", "{nope"], env);
    assert.notEqual(badInput.code, 0);
    assert.match(badInput.stderr, /--input is not JSON/);

    await writeFile(flag, "fixed");
    const answer = await rest(`/v1/runs/${id}:rerun`, { fromStep: "build", idempotencyKey: "fix-1" });
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    const run = answer.json["run"] as RunJson;
    const repeat = await rest(`/v1/runs/${id}:rerun`, { fromStep: "build", idempotencyKey: "fix-1" });
    assert.equal((repeat.json["run"] as RunJson).id, run.id);
    await waitFor("the rerun to succeed", async () =>
      (await getRun(run.id)).status === "RUN_STATUS_SUCCEEDED" ? true : undefined,
    );
    assert.equal(await readFile(log, "utf8"), "fetch\nbuild\nbuild\npublish\n");
  });
});
