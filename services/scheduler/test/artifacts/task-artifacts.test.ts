/**
 * Task logs and artifacts end to end, on the filesystem store and on S3 (S3Proxy): a real
 * scheduler on a real embedded PostgreSQL, in-process Executors storing into the same store
 * (separate store instances, as separate processes would have), and ArtifactService read over
 * gRPC. Shell output and ctx.log lines come back through GetTaskLogs (also followed live),
 * handler files through ListArtifacts/GetArtifact (a presigned URL on S3), and an output over the
 * offload threshold reaches the downstream step intact while only its claim check is reported.
 *
 * Needs the wiring patches of the artifacts change (ExecutorOptions.artifacts,
 * SchedulerOptions.artifacts, ArtifactService registered, claim checks resolved by the engine).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { jsonToValue, valueToJson } from "@nexusflow/common";
import { requireService } from "@nexusflow/common/testing";
import {
  type ArtifactStore,
  FilesystemArtifactStore,
  S3ArtifactStore,
  decodeLogLines,
} from "@nexusflow/common/artifacts";
import { ArtifactLogSink, Executor } from "@nexusflow/executor";
import { ArtifactService, RunStatus, type LogLine, type Run } from "@nexusflow/gen";
import type { Scheduler } from "../../src/scheduler.js";
import { describeRun, registerSpec, task, type WorkflowClient } from "../e2e/harness.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
  workflowClient,
} from "../support.js";

type Backend = "filesystem" | "s3";

/** Two stores on the same place (the scheduler's and the executor's) and how to remove it. */
interface Stores {
  scheduler: ArtifactStore;
  executor: ArtifactStore;
  dispose(): Promise<void>;
}

async function openStores(backend: Backend): Promise<Stores> {
  if (backend === "filesystem") {
    const root = await mkdtemp(join(tmpdir(), "nf-task-artifacts-"));
    const scheduler = new FilesystemArtifactStore({ root });
    const executor = new FilesystemArtifactStore({ root });
    await executor.ensureReady();
    return { scheduler, executor, dispose: () => rm(root, { recursive: true, force: true }) };
  }
  const options = {
    endpoint: process.env["S3_ENDPOINT"] ?? "",
    accessKey: process.env["S3_ACCESS_KEY"] ?? "",
    secretKey: process.env["S3_SECRET_KEY"] ?? "",
    region: process.env["S3_REGION"] ?? "us-east-1",
    bucket: `nf-task-artifacts-${randomUUID()}`,
  };
  const scheduler = new S3ArtifactStore(options);
  const executor = new S3ArtifactStore(options);
  await executor.ensureReady(); // creates the bucket
  return {
    scheduler,
    executor,
    dispose: async () => {
      await executor.delete();
      const { Client: MinioClient } = await import("minio");
      const url = new URL(options.endpoint);
      await new MinioClient({
        endPoint: url.hostname,
        port: Number(url.port || 80),
        useSSL: url.protocol === "https:",
        accessKey: options.accessKey,
        secretKey: options.secretKey,
        region: options.region,
        pathStyle: true,
      }).removeBucket(options.bucket);
    },
  };
}

function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

/** 5,000 rows, ~400 KB of JSON: over the 64 KiB offload threshold set below. */
const BIG_ITEMS = Array.from({ length: 5000 }, (_, i) => ({
  i,
  name: `item-${i}`,
  tag: (i * 7919).toString(36),
}));

for (const backend of ["filesystem", "s3"] as const) {
  describe(`task logs and artifacts (${backend})`, () => {
    let db: Awaited<ReturnType<typeof startTestDatabase>> | undefined;
    let stores: Stores | undefined;
    let scheduler: Scheduler | undefined;
    let executor: Executor | undefined;
    let runs: WorkflowClient;
    let artifacts: Client<typeof ArtifactService>;
    /** Released by the follow test to let its task finish. */
    let releaseGate: () => void = () => {};
    const gate = new Promise<void>((resolve) => (releaseGate = resolve));

    /** Whether this backend can run here; skips the test (or throws under CI=true) when not. */
    const available = (t: TestContext): boolean =>
      backend === "filesystem" || requireService(t, "S3_ENDPOINT") !== undefined;

    before(async () => {
      if (backend === "s3" && (process.env["S3_ENDPOINT"] ?? "") === "") return;
      db = await startTestDatabase();
      stores = await openStores(backend);
      scheduler = await startTestScheduler(db.url, { artifacts: stores.scheduler });
      runs = workflowClient(scheduler.address);
      artifacts = createClient(
        ArtifactService,
        createGrpcTransport({ baseUrl: `http://${scheduler.address}` }),
      );
      executor = new Executor({
        schedulerAddress: scheduler.address,
        logger: testLogger("executor"),
        reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
        drainTimeoutMs: 2000,
        artifacts: stores.executor,
        logSink: new ArtifactLogSink({ store: stores.executor, flushIntervalMs: 50 }),
        offloadThresholdBytes: 64 * 1024,
      })
        .register("report.make", async (input: { rows: number }, ctx) => {
          ctx.log.info("making the report", { rows: input.rows });
          const csv = ["n,square", ...Array.from({ length: input.rows }, (_, n) => `${n},${n * n}`)].join(
            "\n",
          );
          const report = await ctx.artifacts.put("report.csv", csv, { contentType: "text/csv" });
          const blob = await ctx.artifacts.put("data/blob.bin", randomBytes(150_000));
          ctx.log.warn("report done");
          return { report: report.key, blob: { key: blob.key, sha256: blob.sha256 } };
        })
        .register("data.big", () => ({ items: BIG_ITEMS }))
        .register("data.digest", (input: { items: unknown[] }) => ({
          count: input.items.length,
          sha256: sha256(JSON.stringify(input.items)),
        }))
        .register("slow.talk", async (_input, ctx) => {
          ctx.log.info("before the gate");
          await gate;
          ctx.log.info("after the gate");
          return { ok: true };
        });
      await executor.start();

      await registerSpec(runs, {
        name: "artifacts-shell",
        version: 1,
        steps: [
          {
            id: "sh",
            type: "shell",
            input: { command: ["sh", "-c", "echo hello; echo oops >&2; printf 'no newline'"] },
          },
        ],
      });
      await registerSpec(runs, {
        name: "artifacts-report",
        version: 1,
        steps: [{ id: "make", type: "report.make", input: { rows: "{{ input.rows }}" } }],
      });
      await registerSpec(runs, {
        name: "artifacts-offload",
        version: 1,
        steps: [
          { id: "big", type: "data.big" },
          {
            id: "digest",
            type: "data.digest",
            dependsOn: ["big"],
            input: { items: "{{ steps.big.output.items }}" },
          },
        ],
        output: { count: "{{ steps.digest.output.count }}", last: "{{ steps.big.output.items[4999].name }}" },
      });
      await registerSpec(runs, {
        name: "artifacts-follow",
        version: 1,
        steps: [{ id: "talk", type: "slow.talk" }],
      });
    });

    after(async () => {
      releaseGate();
      await executor?.stop("test over");
      await scheduler?.stop();
      await stores?.dispose();
      await db?.close();
    });

    const run = async (workflowName: string, input: unknown = {}): Promise<Run> => {
      const { run: started } = await runs.startRun({ workflowName, input: jsonToValue(input) });
      assert.ok(started);
      const done = await waitForRun(runs, started.id, 60_000);
      assert.equal(done.status, RunStatus.SUCCEEDED, describeRun(done));
      return done;
    };

    const logs = async (runId: string, stepId: string, attempt = 0): Promise<LogLine[]> =>
      (await collect(artifacts.getTaskLogs({ runId, stepId, attempt }))).flatMap((m) => m.lines);

    it("stores a shell task's stdout and stderr as its attempt's log", { timeout: 90_000 }, async (t) => {
      if (!available(t)) return;
      const done = await run("artifacts-shell");
      const lines = await logs(done.id, "sh");
      assert.deepEqual(
        lines.filter((l) => l.stream !== "log").map((l) => [l.stream, l.text]),
        [
          ["stdout", "hello"],
          ["stderr", "oops"],
          ["stdout", "no newline"],
        ],
      );
      assert.ok(lines.every((l) => l.attempt === 1 && l.time !== undefined));

      const key = `runs/${done.id}/sh/attempt-1/logs.jsonl`;
      const listed = await artifacts.listArtifacts({ runId: done.id });
      assert.deepEqual(
        listed.artifacts.map((a) => a.key),
        [key],
      );
      // GetRun says where the attempt's log is, and the file is the same JSON Lines.
      const attempt = task(done, "sh").attempts[0];
      assert.equal(attempt?.logs?.key, key);
      assert.equal(attempt?.logs?.lines, BigInt(lines.length));
      const download = await collect(artifacts.getArtifact({ key }));
      const content = Buffer.concat(download.slice(1).map((m) => Buffer.from(m.chunk))).toString("utf8");
      assert.deepEqual(
        decodeLogLines(content, 1).map((l) => l.text),
        lines.map((l) => l.text),
      );
    });

    it(
      "keeps a handler's files and ctx.log lines, listed and downloadable",
      { timeout: 90_000 },
      async (t) => {
        if (!available(t)) return;
        const done = await run("artifacts-report", { rows: 100 });
        const output = valueToJson(task(done, "make").output) as {
          report: string;
          blob: { key: string; sha256: string };
        };
        const prefix = `runs/${done.id}/make/attempt-1/`;
        assert.equal(output.report, `${prefix}report.csv`);

        const lines = await logs(done.id, "make");
        assert.deepEqual(
          lines.map((l) => [l.level, l.text]),
          [
            ["info", 'making the report {"rows":100}'],
            ["warn", "report done"],
          ],
        );

        const listed = (await artifacts.listArtifacts({ runId: done.id, stepId: "make" })).artifacts;
        assert.deepEqual(
          listed.map((a) => a.name),
          ["data/blob.bin", "logs.jsonl", "report.csv"],
        );
        const csv = listed.find((a) => a.name === "report.csv");
        assert.equal(csv?.contentType, "text/csv");
        const blob = listed.find((a) => a.name === "data/blob.bin");
        assert.equal(blob?.size, 150_000n);
        assert.equal(blob?.sha256, output.blob.sha256);

        const streamed = await collect(artifacts.getArtifact({ key: output.blob.key }));
        assert.equal(streamed[0]?.artifact?.sha256, output.blob.sha256);
        assert.equal(
          sha256(Buffer.concat(streamed.slice(1).map((m) => Buffer.from(m.chunk)))),
          output.blob.sha256,
        );

        const presigned = await collect(artifacts.getArtifact({ key: output.report, presign: true }));
        if (backend === "s3") {
          assert.equal(presigned.length, 1, "a presigned URL instead of the content");
          assert.ok(presigned[0]?.urlExpireTime !== undefined);
          const response = await fetch(presigned[0]?.url ?? "", { signal: AbortSignal.timeout(10_000) });
          assert.equal(response.status, 200);
          assert.match(await response.text(), /^n,square\n0,0\n1,1\n/);
        } else {
          assert.equal(presigned[0]?.url, "");
          const text = Buffer.concat(presigned.slice(1).map((m) => Buffer.from(m.chunk))).toString("utf8");
          assert.match(text, /^n,square\n0,0\n1,1\n/);
        }
      },
    );

    it(
      "offloads a large output and passes it to the downstream step intact",
      { timeout: 90_000 },
      async (t) => {
        if (!available(t)) return;
        const done = await run("artifacts-offload");
        const big = task(done, "big");
        assert.equal(big.output, undefined, "the output itself was not reported");
        const ref = big.outputRef;
        assert.ok(ref, "a claim check instead");
        assert.equal(ref.key, `runs/${done.id}/big/attempt-1/output.json`);
        assert.equal(ref.size, BigInt(Buffer.byteLength(JSON.stringify({ items: BIG_ITEMS }))));

        assert.deepEqual(valueToJson(task(done, "digest").output), {
          count: BIG_ITEMS.length,
          sha256: sha256(JSON.stringify(BIG_ITEMS)),
        });
        assert.deepEqual(valueToJson(done.output), { count: 5000, last: "item-4999" });
        // A step that logged nothing stored no log object: GetTaskLogs answers no line (not
        // NOT_FOUND: its executor reported an empty log), and nothing is listed for it.
        assert.deepEqual(await logs(done.id, "digest"), []);
        const listed = (await artifacts.listArtifacts({ runId: done.id, stepId: "digest" })).artifacts;
        assert.deepEqual(
          listed.map((a) => a.name),
          [],
        );

        const stored = await collect(artifacts.getArtifact({ key: ref.key }));
        const json = Buffer.concat(stored.slice(1).map((m) => Buffer.from(m.chunk))).toString("utf8");
        assert.deepEqual(JSON.parse(json), { items: BIG_ITEMS });
      },
    );

    it("follows the log of a running task until it ends", { timeout: 90_000 }, async (t) => {
      if (!available(t)) return;
      const { run: started } = await runs.startRun({
        workflowName: "artifacts-follow",
        input: jsonToValue({}),
      });
      assert.ok(started);
      const seen: string[] = [];
      let arrived: () => void = () => {};
      const following = (async () => {
        // Started while the task may not even be leased yet: the follower waits for it.
        for await (const m of artifacts.getTaskLogs({ runId: started.id, stepId: "talk", follow: true })) {
          for (const l of m.lines) seen.push(l.text);
          arrived();
        }
      })();
      while (!seen.includes("before the gate")) await new Promise<void>((resolve) => (arrived = resolve));
      assert.deepEqual(seen, ["before the gate"], "the task is still running");
      releaseGate();
      await following; // ends by itself once the task has ended
      assert.deepEqual(seen, ["before the gate", "after the gate"]);
      await waitFor("the run to succeed", async () => {
        const { run: r } = await runs.getRun({ runId: started.id });
        return r?.status === RunStatus.SUCCEEDED ? true : undefined;
      });
    });
  });
}
