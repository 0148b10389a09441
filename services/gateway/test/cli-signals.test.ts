/**
 * `nexusflow runs signal` spawned as a process, and POST /v1/runs/{run_id}:signal over REST,
 * against a real gateway (authentication on) and scheduler on a real embedded PostgreSQL: a run
 * waiting for approval completes with the signal's payload; a signal with the same idempotency
 * key is stored once; bad input is refused naming the flag or the field; an ended run refuses.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { waitFor } from "../../scheduler/test/support.js";
import { nexusflow } from "./cli-process.js";
import { type CliStack, startCliStack } from "./cli-stack.js";

const T = { timeout: 120_000 };

interface RunJson {
  id: string;
  status?: string;
  output?: unknown;
  tasks?: { stepId: string; status?: string; output?: unknown }[];
}

describe("nexusflow runs signal and /v1/runs/{id}:signal against a live stack", () => {
  let stack: CliStack | undefined;
  let dataDir: string;
  let env: Record<string, string>;
  let url: string;
  let token: string;

  before(async () => {
    stack = await startCliStack("nf-cli-signal-");
    ({ dataDir, url, token, env } = stack);
    const file = join(dataDir, "expense.json");
    await writeFile(
      file,
      JSON.stringify({
        name: "expense-approval",
        version: 1,
        steps: [
          { id: "approval", wait: { signal: "approved", timeout: "2d" } },
          { id: "cool-off", sleep: { for: "100ms" }, dependsOn: ["approval"] },
        ],
        output: { approvedBy: "{{ steps.approval.output.by }}" },
      }),
    );
    const applied = await nexusflow(["apply", file], env);
    assert.equal(applied.code, 0, applied.stderr);
  });

  after(async () => {
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

  const startRun = async (): Promise<string> => {
    const started = await nexusflow(["runs", "start", "expense-approval", "--output", "json"], env);
    assert.equal(started.code, 0, started.stderr);
    return (JSON.parse(started.stdout) as { run: RunJson }).run.id;
  };

  const getRun = async (id: string): Promise<RunJson> => {
    const got = await nexusflow(["runs", "get", id, "--output", "json"], env);
    assert.equal(got.code, 0, got.stderr);
    const parsed = JSON.parse(got.stdout) as RunJson | { run: RunJson };
    return "run" in parsed ? parsed.run : parsed;
  };

  const finished = (id: string): Promise<RunJson> =>
    waitFor(`run ${id} to succeed`, async () => {
      const run = await getRun(id);
      return run.status === "RUN_STATUS_SUCCEEDED" ? run : undefined;
    });

  it("completes a waiting run with the CLI's signal, once per idempotency key", T, async () => {
    const id = await startRun();
    await waitFor("the approval step waiting", async () =>
      (await getRun(id)).tasks?.some((t) => t.stepId === "approval" && t.status === "TASK_STATUS_WAITING")
        ? true
        : undefined,
    );
    const sent = await nexusflow(
      ["runs", "signal", id, "approved", "--payload", '{"by":"maria"}', "--idempotency-key", "mail-1"],
      env,
    );
    assert.equal(sent.code, 0, sent.stderr);
    assert.match(sent.stdout, /signal approved sent: completed step approval/);
    const again = await nexusflow(
      [
        "runs",
        "signal",
        id,
        "approved",
        "--payload",
        '{"by":"other"}',
        "--idempotency-key",
        "mail-1",
        "--output",
        "json",
      ],
      env,
    );
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout), { stepId: "approval", duplicate: true });
    const run = await finished(id);
    assert.deepEqual(run.output, { approvedBy: "maria" });
  });

  it("takes a signal over REST, and refuses bad ones naming the field or the flag", T, async () => {
    const id = await startRun();
    const empty = await rest(`/v1/runs/${id}:signal`, { name: "", payload: {} });
    assert.equal(empty.status, 400);
    assert.match(String(empty.json["message"]), /name/);
    const badJson = await nexusflow(["runs", "signal", id, "approved", "--payload", "{nope"], env);
    assert.notEqual(badJson.code, 0);
    assert.match(badJson.stderr, /--payload is not JSON/);
    const missing = await nexusflow(["runs", "signal", id], env);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /name/);

    const sent = await rest(`/v1/runs/${id}:signal`, { name: "approved", payload: { by: "rui" } });
    assert.equal(sent.status, 200, JSON.stringify(sent.json));
    const run = await finished(id);
    assert.deepEqual(run.output, { approvedBy: "rui" });

    const late = await rest(`/v1/runs/${id}:signal`, { name: "approved", payload: { by: "late" } });
    assert.equal(late.status, 400, JSON.stringify(late.json));
    assert.match(String(late.json["message"]), /has ended/);
    const unknown = await rest(`/v1/runs/00000000-0000-4000-8000-000000000000:signal`, { name: "approved" });
    assert.equal(unknown.status, 404);
  });
});
