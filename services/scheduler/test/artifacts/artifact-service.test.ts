/**
 * ArtifactService over a real gRPC server and a filesystem store, with the database replaced by an
 * in-memory TaskIndex so each test sets task and attempt states exactly: listing, downloads
 * (chunked, integrity-checked), and task logs read whole or followed while chunks appear.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { serviceDefinition } from "@nexusflow/common";
import {
  type ArtifactStore,
  FilesystemArtifactStore,
  type TaskKindName,
  encodeLogLine,
  logChunkKey,
} from "@nexusflow/common/artifacts";
import { ArtifactService } from "@nexusflow/gen";
import { type TaskIndex, type TaskInfo, artifactService } from "../../src/api/artifact-service.js";

/** An in-memory TaskIndex the tests drive. */
class FakeTasks implements TaskIndex {
  readonly runs = new Set<string>();
  readonly tasks = new Map<string, { status: string; attempts: { number: number; status: string }[] }>();
  readonly reported = new Map<string, string[]>();
  /** Calls of task(), to wait for a follower's polls. */
  polls = 0;

  set(runId: string, stepId: string, info: TaskInfo, kind: TaskKindName = "STEP"): void {
    this.runs.add(runId);
    this.tasks.set(`${runId}/${stepId}/${kind}`, {
      status: info.status,
      attempts: info.attempts.map((a) => ({ ...a })),
    });
  }

  runExists(runId: string): Promise<boolean> {
    return Promise.resolve(this.runs.has(runId));
  }

  task(runId: string, stepId: string, kind: TaskKindName): Promise<TaskInfo | undefined> {
    this.polls++;
    const t = this.tasks.get(`${runId}/${stepId}/${kind}`);
    return Promise.resolve(t === undefined ? undefined : { status: t.status, attempts: [...t.attempts] });
  }

  reportedKeys(runId: string): Promise<string[]> {
    return Promise.resolve(this.reported.get(runId) ?? []);
  }
}

function jsonl(attempt: number, ...texts: string[]): string {
  return texts
    .map((text) => encodeLogLine({ time: new Date(), stream: "stdout", level: "", text, attempt }))
    .join("");
}

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

function isCode(code: Code) {
  return (e: unknown): boolean => e instanceof ConnectError && e.code === code;
}

describe("ArtifactService", () => {
  let dir: string;
  let store: FilesystemArtifactStore;
  let fake: FakeTasks;
  /** SHA-256 the served store claims for a key, overriding the real one. */
  const claimedSha = new Map<string, string>();
  let server: grpc.Server;
  let client: Client<typeof ArtifactService>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-artifact-service-"));
    store = new FilesystemArtifactStore({ root: dir });
    await store.ensureReady();
    fake = new FakeTasks();
    server = new grpc.Server();
    const served: ArtifactStore = {
      kind: store.kind,
      ensureReady: () => store.ensureReady(),
      put: (...args) => store.put(...args),
      get: (key) => store.get(key),
      stat: async (key) => {
        const ref = await store.stat(key);
        const sha = claimedSha.get(key);
        return ref === undefined || sha === undefined ? ref : { ...ref, sha256: sha };
      },
      list: (...args) => store.list(...args),
      presign: (key, ttl) => store.presign(key, ttl),
      delete: (prefix) => store.delete(prefix),
      close: () => store.close(),
    };
    server.addService(
      serviceDefinition(ArtifactService),
      artifactService({ store: served, tasks: fake, pollIntervalMs: 20, chunkBytes: 64 * 1024 }),
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    client = createClient(ArtifactService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
  });

  after(async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it("lists a run's artifacts, by step and by compensation, without log chunks", async () => {
    const run = randomUUID();
    fake.set(run, "build", { status: "SUCCEEDED", attempts: [{ number: 1, status: "SUCCEEDED" }] });
    await store.put(`runs/${run}/build/attempt-1/logs.jsonl`, jsonl(1, "x"));
    await store.put(`runs/${run}/build/attempt-1/report.txt`, "report", { contentType: "text/plain" });
    await store.put(logChunkKey(`runs/${run}/deploy/attempt-1/`, 1), jsonl(1, "running"));
    await store.put(`runs/${run}/build.compensation/attempt-1/logs.jsonl`, jsonl(1, "undo"));
    await store.put(`runs/${randomUUID()}/build/attempt-1/logs.jsonl`, "other run");

    const all = await client.listArtifacts({ runId: run });
    assert.deepEqual(
      all.artifacts.map((a) => a.key),
      [
        `runs/${run}/build.compensation/attempt-1/logs.jsonl`,
        `runs/${run}/build/attempt-1/logs.jsonl`,
        `runs/${run}/build/attempt-1/report.txt`,
      ],
    );
    const report = all.artifacts[2];
    assert.equal(report?.name, "report.txt");
    assert.equal(report?.size, 6n);
    assert.equal(report?.contentType, "text/plain");
    assert.equal(report?.sha256.length, 64);

    const build = await client.listArtifacts({ runId: run, stepId: "build" });
    assert.deepEqual(
      build.artifacts.map((a) => a.name),
      ["logs.jsonl", "report.txt"],
    );
    const undo = await client.listArtifacts({ runId: run, stepId: "build.compensation" });
    assert.deepEqual(
      undo.artifacts.map((a) => a.key),
      [`runs/${run}/build.compensation/attempt-1/logs.jsonl`],
    );

    await assert.rejects(client.listArtifacts({ runId: randomUUID() }), isCode(Code.NotFound));
    await assert.rejects(client.listArtifacts({ runId: "not-a-uuid" }), isCode(Code.InvalidArgument));
    await assert.rejects(client.listArtifacts({ runId: run, stepId: "../x" }), isCode(Code.InvalidArgument));
  });

  it("streams an artifact in 64 KiB chunks after its metadata; presign falls back to streaming here", async () => {
    const run = randomUUID();
    const data = randomBytes(200_000);
    const key = `runs/${run}/build/attempt-1/blob.bin`;
    await store.put(key, data);
    for (const presign of [false, true]) {
      const messages = await collect(client.getArtifact({ key, presign }));
      assert.equal(messages[0]?.artifact?.key, key);
      assert.equal(messages[0]?.artifact?.size, BigInt(data.length));
      assert.equal(messages[0]?.url, "", "no presigned URL from the filesystem store");
      const chunks = messages.slice(1).map((m) => Buffer.from(m.chunk));
      assert.ok(chunks.every((c) => c.length <= 64 * 1024 && c.length > 0));
      assert.deepEqual(Buffer.concat(chunks), data);
    }
  });

  it("refuses bad keys, reports missing artifacts and content that no longer matches its hash", async () => {
    const run = randomUUID();
    await assert.rejects(collect(client.getArtifact({ key: "" })), isCode(Code.InvalidArgument));
    await assert.rejects(
      collect(client.getArtifact({ key: "runs/../../etc/passwd" })),
      isCode(Code.InvalidArgument),
    );
    await assert.rejects(collect(client.getArtifact({ key: "elsewhere/x" })), isCode(Code.InvalidArgument));
    await assert.rejects(collect(client.getArtifact({ key: `runs/${run}/nothing` })), isCode(Code.NotFound));

    // The store vouches for one hash, the bytes it serves have another (bit rot, a botched copy).
    const key = `runs/${run}/build/attempt-1/rotten.txt`;
    await store.put(key, "original content");
    claimedSha.set(key, "0".repeat(64));
    await assert.rejects(collect(client.getArtifact({ key })), isCode(Code.DataLoss));
  });

  it("returns the logs of every attempt in order, or of one, from logs.jsonl and from chunks", async () => {
    const run = randomUUID();
    fake.set(run, "build", {
      status: "RUNNING",
      attempts: [
        { number: 1, status: "FAILED" },
        { number: 2, status: "RUNNING" },
      ],
    });
    await store.put(`runs/${run}/build/attempt-1/logs.jsonl`, jsonl(1, "a1", "a2"));
    await store.put(logChunkKey(`runs/${run}/build/attempt-2/`, 1), jsonl(2, "b1"));
    await store.put(logChunkKey(`runs/${run}/build/attempt-2/`, 2), jsonl(2, "b2", "b3"));

    const all = (await collect(client.getTaskLogs({ runId: run, stepId: "build" }))).flatMap((m) => m.lines);
    assert.deepEqual(
      all.map((l) => [l.attempt, l.text]),
      [
        [1, "a1"],
        [1, "a2"],
        [2, "b1"],
        [2, "b2"],
        [2, "b3"],
      ],
    );
    assert.ok(all.every((l) => l.stream === "stdout" && l.time !== undefined));
    const second = (await collect(client.getTaskLogs({ runId: run, stepId: "build", attempt: 2 }))).flatMap(
      (m) => m.lines,
    );
    assert.deepEqual(
      second.map((l) => l.text),
      ["b1", "b2", "b3"],
    );
    await assert.rejects(
      collect(client.getTaskLogs({ runId: run, stepId: "build", attempt: 3 })),
      isCode(Code.NotFound),
    );
    await assert.rejects(collect(client.getTaskLogs({ runId: run, stepId: "nope" })), isCode(Code.NotFound));
    await assert.rejects(
      collect(client.getTaskLogs({ runId: randomUUID(), stepId: "build" })),
      isCode(Code.NotFound),
    );
  });

  it("answers no line for an attempt reported with an empty log (nothing stored), NOT_FOUND for a lost one", async () => {
    const run = randomUUID();
    const key = (n: number): string => `runs/${run}/quiet/attempt-${n}/logs.jsonl`;
    // Attempt 1 logged nothing: its executor stored no object and reported the key with 0 lines
    // (proto3 JSON leaves the zero out).
    fake.set(run, "quiet", {
      status: "SUCCEEDED",
      attempts: [{ number: 1, status: "SUCCEEDED", logKey: key(1) }],
    });
    assert.deepEqual(await collect(client.getTaskLogs({ runId: run, stepId: "quiet" })), []);
    fake.set(run, "quiet", {
      status: "SUCCEEDED",
      attempts: [{ number: 1, status: "SUCCEEDED", logKey: key(1), logLines: "0" }],
    });
    assert.deepEqual(await collect(client.getTaskLogs({ runId: run, stepId: "quiet", follow: true })), []);
    // Reported with lines, and not in the store: lost, and said so.
    fake.set(run, "lost", {
      status: "SUCCEEDED",
      attempts: [
        { number: 1, status: "SUCCEEDED", logKey: `runs/${run}/lost/attempt-1/logs.jsonl`, logLines: "3" },
      ],
    });
    await assert.rejects(collect(client.getTaskLogs({ runId: run, stepId: "lost" })), isCode(Code.NotFound));
  });

  it("follows a running task across chunks, a retry and the final logs.jsonl, each line once", async () => {
    const run = randomUUID();
    const a1 = `runs/${run}/build/attempt-1/`;
    const a2 = `runs/${run}/build/attempt-2/`;
    fake.set(run, "build", { status: "RUNNING", attempts: [{ number: 1, status: "RUNNING" }] });
    await store.put(logChunkKey(a1, 1), jsonl(1, "one"));

    const seen: string[] = [];
    let notify: (() => void) | undefined;
    const until = async (n: number): Promise<void> => {
      while (seen.length < n) await new Promise<void>((resolve) => (notify = resolve));
    };
    const following = (async () => {
      for await (const m of client.getTaskLogs({ runId: run, stepId: "build", follow: true })) {
        for (const l of m.lines) seen.push(`${l.attempt}:${l.text}`);
        notify?.();
      }
    })();

    await until(1);
    await store.put(logChunkKey(a1, 2), jsonl(1, "two", "three"));
    await until(3);
    // Attempt 1 fails: its executor joins the chunks (plus a last line) into logs.jsonl and deletes them.
    await store.put(`${a1}logs.jsonl`, jsonl(1, "one", "two", "three", "failed"));
    await store.delete(`${a1}logs/`);
    fake.set(run, "build", { status: "RETRY_WAIT", attempts: [{ number: 1, status: "FAILED" }] });
    await until(4);
    fake.set(run, "build", {
      status: "RUNNING",
      attempts: [
        { number: 1, status: "FAILED" },
        { number: 2, status: "RUNNING" },
      ],
    });
    await store.put(logChunkKey(a2, 1), jsonl(2, "retry"));
    await until(5);
    await store.put(`${a2}logs.jsonl`, jsonl(2, "retry", "ok"));
    await store.delete(`${a2}logs/`);
    fake.set(run, "build", {
      status: "SUCCEEDED",
      attempts: [
        { number: 1, status: "FAILED" },
        { number: 2, status: "SUCCEEDED" },
      ],
    });
    await following; // the stream ends by itself once the task has ended
    assert.deepEqual(seen, ["1:one", "1:two", "1:three", "1:failed", "2:retry", "2:ok"]);
  });

  it("a follower waits for the attempt it asked for, and stops when the client cancels", async () => {
    const run = randomUUID();
    fake.set(run, "wait", { status: "QUEUED", attempts: [] });
    const abort = new AbortController();
    const seen: string[] = [];
    const following = (async () => {
      for await (const m of client.getTaskLogs(
        { runId: run, stepId: "wait", attempt: 1, follow: true },
        { signal: abort.signal },
      )) {
        for (const l of m.lines) seen.push(l.text);
        if (seen.length > 0) abort.abort();
      }
    })();
    const polled = fake.polls;
    while (fake.polls < polled + 3) await new Promise((r) => setImmediate(r));
    fake.set(run, "wait", { status: "RUNNING", attempts: [{ number: 1, status: "RUNNING" }] });
    await store.put(logChunkKey(`runs/${run}/wait/attempt-1/`, 1), jsonl(1, "started"));
    await assert.rejects(following, isCode(Code.Canceled));
    assert.deepEqual(seen, ["started"]);
  });

  it("tells who asks for the log of a map step itself to name one of its elements", async () => {
    const run = randomUUID();
    // A map step's own task runs nothing; its elements are tasks of their own, `{step}[{i}]`.
    fake.set(run, "each", { status: "SUCCEEDED", attempts: [] });
    fake.set(run, "each[0]", { status: "SUCCEEDED", attempts: [{ number: 1, status: "SUCCEEDED" }] });
    fake.set(run, "each[1]", { status: "SUCCEEDED", attempts: [{ number: 1, status: "SUCCEEDED" }] });
    fake.set(run, "busy", { status: "WAITING", attempts: [] });
    fake.set(run, "busy[0]", { status: "RUNNING", attempts: [{ number: 1, status: "RUNNING" }] });
    fake.set(run, "skipped", { status: "SKIPPED", attempts: [] });
    await store.put(`runs/${run}/each/element-0/attempt-1/logs.jsonl`, jsonl(1, "element 0"));
    await store.put(`runs/${run}/each/element-1/attempt-1/logs.jsonl`, jsonl(1, "element 1"));
    const refusal = async (stepId: string, follow = false, attempt = 0): Promise<string> => {
      try {
        await collect(client.getTaskLogs({ runId: run, stepId, follow, attempt }));
      } catch (e) {
        assert.ok(e instanceof ConnectError && e.code === Code.NotFound, String(e));
        return e.rawMessage;
      }
      return assert.fail(`GetTaskLogs of ${stepId} answered`);
    };
    for (const [stepId, follow, attempt] of [
      ["each", false, 0],
      ["each", true, 0],
      ["each", false, 1],
      ["busy", false, 0],
    ] as const)
      assert.match(
        await refusal(stepId, follow, attempt),
        new RegExp(
          `^step ${stepId} of run ${run} is a map step: .*name one \\(${stepId}\\[0\\], ${stepId}\\[1\\], \\.\\.\\.\\)$`,
        ),
      );
    assert.match(
      await refusal("skipped"),
      /^step skipped of run .* never ran \(SKIPPED\), so it has no log$/,
    );
    assert.match(await refusal("each.compensation"), /has no step each\.compensation$/);
    const lines = (await collect(client.getTaskLogs({ runId: run, stepId: "each[1]" }))).flatMap(
      (m) => m.lines,
    );
    assert.deepEqual(
      lines.map((l) => l.text),
      ["element 1"],
    );
  });
});
