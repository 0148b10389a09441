import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { afterEach, beforeEach, describe, it } from "node:test";
import { toJson } from "@bufbuild/protobuf";
import {
  type ArtifactStore,
  ArtifactError,
  FilesystemArtifactStore,
  decodeLogLines,
  readAll,
} from "@nexusflow/common/artifacts";
import { LogLineSchema } from "@nexusflow/gen";
import { ArtifactLogSink } from "./artifact-log-sink.js";
import type { LogRecord } from "./log-sink.js";
import { createTaskLog } from "./task-log.js";

const RUN = "0b4f5a4e-6a43-4a4c-9b53-0a3c1d2e3f40";
const identity = { runId: RUN, stepId: "build", taskRunId: "t-1", attempt: 1, taskType: "shell" };
const prefix = `runs/${RUN}/build/attempt-1/`;

function line(text: string, extra: Partial<LogRecord> = {}): LogRecord {
  return {
    time: new Date("2026-11-26T10:00:00.000Z"),
    stream: "stdout",
    level: "",
    text,
    attempt: 1,
    ...extra,
  };
}

async function text(store: ArtifactStore, key: string): Promise<string> {
  return (await readAll(await store.get(key))).toString("utf8");
}

async function keys(store: ArtifactStore): Promise<string[]> {
  return (await store.list(prefix, { metadata: false })).map((r) => r.key.slice(prefix.length));
}

/** Polls an async condition until it holds; fails after `timeoutMs`. */
async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** A store whose puts fail while `failing` is set. */
function flaky(inner: ArtifactStore): ArtifactStore & { failing: boolean; puts: number } {
  const wrapper = {
    failing: false,
    puts: 0,
    kind: inner.kind,
    ensureReady: () => inner.ensureReady(),
    put: (...args: Parameters<ArtifactStore["put"]>) => {
      wrapper.puts++;
      if (wrapper.failing) return Promise.reject(new ArtifactError("UNAVAILABLE", "store down"));
      return inner.put(...args);
    },
    get: (key: string) => inner.get(key),
    stat: (key: string) => inner.stat(key),
    list: (...args: Parameters<ArtifactStore["list"]>) => inner.list(...args),
    presign: (key: string, ttl: number) => inner.presign(key, ttl),
    delete: (p?: string) => inner.delete(p),
    close: () => inner.close(),
  };
  return wrapper;
}

describe("ArtifactLogSink", () => {
  let root: string;
  let store: FilesystemArtifactStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "nf-logsink-"));
    store = new FilesystemArtifactStore({ root });
    await store.ensureReady();
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("writes a short attempt's log as one logs.jsonl of LogLine JSON, and returns its LogRef", async () => {
    const sink = new ArtifactLogSink({ store, flushIntervalMs: 60_000 });
    const log = sink.open(identity);
    log.append(line("hello"));
    log.append(line("oops", { stream: "stderr" }));
    log.append(line("charged", { stream: "log", level: "info", fields: { amount: 12 } }));
    const ref = await log.close();
    assert.ok(ref);
    assert.equal(ref.key, `${prefix}logs.jsonl`);
    assert.equal(ref.lines, 3n);
    const content = await text(store, ref.key);
    assert.equal(ref.size, BigInt(Buffer.byteLength(content)));
    assert.deepEqual(await keys(store), ["logs.jsonl"], "no chunks for an attempt that ended before a flush");
    const first = JSON.parse(content.split("\n")[0] ?? "") as unknown;
    assert.deepEqual(first, {
      time: "2026-11-26T10:00:00.000Z",
      stream: "stdout",
      level: "",
      text: "hello",
      attempt: 1,
    });
    const decoded = decodeLogLines(content, 1).map((l) => toJson(LogLineSchema, l));
    assert.deepEqual(decoded, [
      { time: "2026-11-26T10:00:00Z", stream: "stdout", text: "hello", attempt: 1 },
      { time: "2026-11-26T10:00:00Z", stream: "stderr", text: "oops", attempt: 1 },
      {
        time: "2026-11-26T10:00:00Z",
        stream: "log",
        level: "info",
        text: 'charged {"amount":12}',
        attempt: 1,
      },
    ]);
  });

  it("an attempt without lines stores nothing, and its LogRef says 0 lines", async () => {
    const ref = await new ArtifactLogSink({ store }).open(identity).close();
    assert.equal(ref?.key, `${prefix}logs.jsonl`);
    assert.equal(ref?.lines, 0n);
    assert.equal(ref?.size, 0n);
    assert.equal(await store.stat(`${prefix}logs.jsonl`), undefined);
    assert.deepEqual(await store.list(prefix), []);
  });

  it("flushes numbered chunks while the attempt runs, then joins them into logs.jsonl", async () => {
    const sink = new ArtifactLogSink({ store, flushIntervalMs: 20 });
    const log = sink.open(identity);
    log.append(line("one"));
    log.append(line("two"));
    await waitFor(async () => (await keys(store)).includes("logs/00001.jsonl"), "the first chunk");
    assert.deepEqual(
      decodeLogLines(await text(store, `${prefix}logs/00001.jsonl`), 1).map((l) => l.text),
      ["one", "two"],
    );
    log.append(line("three"));
    await waitFor(async () => (await keys(store)).includes("logs/00002.jsonl"), "the second chunk");
    log.append(line("four"));
    const ref = await log.close();
    assert.equal(ref?.lines, 4n);
    assert.deepEqual(await keys(store), ["logs.jsonl"], "chunks are deleted once logs.jsonl exists");
    assert.deepEqual(
      decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1).map((l) => l.text),
      ["one", "two", "three", "four"],
    );
  });

  it("writes a chunk at once when flushBytes are waiting", async () => {
    const sink = new ArtifactLogSink({ store, flushIntervalMs: 60_000, flushBytes: 1024 });
    const log = sink.open(identity);
    for (let i = 0; i < 30; i++) log.append(line(`line ${i} ${"x".repeat(50)}`));
    await waitFor(
      async () => (await keys(store)).includes("logs/00001.jsonl"),
      "a chunk without waiting for the timer",
    );
    const ref = await log.close();
    assert.equal(ref?.lines, 30n);
    assert.deepEqual(
      decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1).map((l) => l.text),
      Array.from({ length: 30 }, (_, i) => `line ${i} ${"x".repeat(50)}`),
    );
  });

  it("reads the chunks back from the store when they are too large to keep in memory", async () => {
    const sink = new ArtifactLogSink({
      store,
      flushIntervalMs: 60_000,
      flushBytes: 100,
      maxCachedBytes: 100,
    });
    const log = sink.open(identity);
    const texts = Array.from({ length: 20 }, (_, i) => `${i}:${"y".repeat(80)}`);
    for (const t of texts) log.append(line(t));
    const ref = await log.close();
    assert.equal(ref?.lines, 20n);
    assert.deepEqual(
      decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1).map((l) => l.text),
      texts,
    );
  });

  it("keeps lines while the store is down and writes them once it is back", async () => {
    const down = flaky(store);
    down.failing = true;
    const sink = new ArtifactLogSink({ store: down, flushIntervalMs: 10 });
    const log = sink.open(identity);
    log.append(line("a"));
    await waitFor(() => down.puts >= 2, "retried writes");
    log.append(line("b"));
    down.failing = false;
    await waitFor(async () => (await keys(store)).length > 0, "a chunk after the store recovered");
    log.append(line("c"));
    const ref = await log.close();
    assert.equal(ref?.lines, 3n);
    assert.deepEqual(
      decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1).map((l) => l.text),
      ["a", "b", "c"],
    );
  });

  it("drops lines past maxBufferedBytes and says how many in a last line", async () => {
    const down = flaky(store);
    down.failing = true;
    const sink = new ArtifactLogSink({ store: down, flushIntervalMs: 60_000, maxBufferedBytes: 400 });
    const log = sink.open(identity);
    for (let i = 0; i < 20; i++) log.append(line(`line ${i}`));
    down.failing = false;
    const ref = await log.close();
    const lines = decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1);
    const last = lines.at(-1);
    assert.equal(last?.level, "warn");
    assert.match(last?.text ?? "", /^\d+ log lines were dropped/);
    const kept = lines.length - 1;
    assert.ok(kept > 0 && kept < 20, `kept ${kept}`);
    assert.equal(last?.text.startsWith(`${20 - kept} `), true);
    assert.equal(ref?.lines, BigInt(lines.length));
  });

  it("close rejects when the log cannot be stored (the attempt is then reported without logs)", async () => {
    const down = flaky(store);
    down.failing = true;
    const log = new ArtifactLogSink({ store: down, closeRetries: 2 }).open(identity);
    log.append(line("lost"));
    await assert.rejects(log.close(), (e: unknown) => e instanceof ArtifactError && e.code === "UNAVAILABLE");
  });

  it("puts a compensation's log in the step's .compensation folder", async () => {
    const ref = await new ArtifactLogSink({ store })
      .open({ ...identity, kind: "COMPENSATION", attempt: 2 })
      .close();
    assert.equal(ref?.key, `runs/${RUN}/build.compensation/attempt-2/logs.jsonl`);
  });

  it("stores what ctx.log receives: stdout split into lines, and log lines with fields", async () => {
    const log = new ArtifactLogSink({ store }).open(identity);
    const taskLog = createTaskLog(log, 1);
    taskLog.write("stdout", "first\nsec");
    taskLog.write("stdout", "ond\n");
    taskLog.write("stderr", "warning: x");
    taskLog.info("done", { files: 2 });
    taskLog.end();
    await log.close();
    const lines = decodeLogLines(await text(store, `${prefix}logs.jsonl`), 1);
    assert.deepEqual(
      lines.map((l) => [l.stream, l.level, l.text]),
      [
        ["stdout", "", "first"],
        ["stdout", "", "second"],
        ["log", "info", 'done {"files":2}'],
        ["stderr", "", "warning: x"],
      ],
    );
    assert.deepEqual(await readdir(join(root, ".tmp")), []);
  });
});
