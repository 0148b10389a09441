/**
 * `nexusflow artifacts list|get` and `nexusflow logs` for the elements of a map step, whose files
 * are in folders of their own (`runs/{run}/{step}/element-{i}/attempt-{n}/`) and which the API
 * names `{step}[{i}]`: the commands run in this process against the scheduler's ArtifactService
 * over gRPC, on a filesystem store, with the database replaced by an in-memory TaskIndex.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { serviceDefinition } from "@nexusflow/common";
import { FilesystemArtifactStore, type TaskKindName, encodeLogLine } from "@nexusflow/common/artifacts";
import { ArtifactService } from "@nexusflow/gen";
import {
  type TaskIndex,
  type TaskInfo,
  artifactService,
} from "../../services/scheduler/src/api/artifact-service.js";
import { artifactsCommand } from "./artifacts-command.js";
import { logsCommand } from "./logs-command.js";

/** The tasks of one run, by step id as stored (`each[3]`). */
class Tasks implements TaskIndex {
  readonly runs = new Set<string>();
  readonly tasks = new Map<string, TaskInfo>();

  set(runId: string, stepId: string, info: TaskInfo): void {
    this.runs.add(runId);
    this.tasks.set(`${runId}/${stepId}/STEP`, info);
  }

  runExists(runId: string): Promise<boolean> {
    return Promise.resolve(this.runs.has(runId));
  }

  task(runId: string, stepId: string, kind: TaskKindName): Promise<TaskInfo | undefined> {
    return Promise.resolve(this.tasks.get(`${runId}/${stepId}/${kind}`));
  }

  reportedKeys(): Promise<string[]> {
    return Promise.resolve([]);
  }
}

/** What one command printed and its exit status. */
interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  bytes: Buffer;
}

describe("artifacts and logs of a map step's elements", () => {
  const run = randomUUID();
  let dir: string;
  let server: grpc.Server;
  let address: string;

  const nexusflow = async (
    command: (args: string[], io: Parameters<typeof artifactsCommand>[1]) => Promise<number>,
    args: string[],
  ): Promise<Ran> => {
    let stdout = "";
    let stderr = "";
    const bytes: Buffer[] = [];
    const binaryStdout = new PassThrough();
    binaryStdout.on("data", (c: Buffer) => bytes.push(c));
    const code = await command([...args, "--address", address, "--token", "t"], {
      env: {},
      signal: new AbortController().signal,
      stdout: (text) => (stdout += text),
      stderr: (text) => (stderr += text),
      color: false,
      root: dir,
      cwd: dir,
      binaryStdout,
    });
    return { code, stdout, stderr, bytes: Buffer.concat(bytes) };
  };
  const artifacts = (...args: string[]) => nexusflow(artifactsCommand, args);
  const logs = (...args: string[]) => nexusflow(logsCommand, args);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-cli-elements-"));
    const store = new FilesystemArtifactStore({ root: join(dir, "store") });
    await store.ensureReady();
    const tasks = new Tasks();
    const line = (text: string, attempt: number): string =>
      encodeLogLine({ time: new Date(), stream: "stdout", level: "", text, attempt });
    // A map step over 12 items (element 1's folder and element 10's both there); element 3 ran
    // twice. The map step's own task runs nothing.
    tasks.set(run, "build", { status: "SUCCEEDED", attempts: [{ number: 1, status: "SUCCEEDED" }] });
    await store.put(`runs/${run}/build/attempt-1/note.txt`, "note of build");
    tasks.set(run, "each", { status: "SUCCEEDED", attempts: [] });
    for (let i = 0; i < 12; i++) {
      const attempts = i === 3 ? [1, 2] : [1];
      tasks.set(run, `each[${i}]`, {
        status: "SUCCEEDED",
        attempts: attempts.map((number) => ({
          number,
          status: number === 2 || i !== 3 ? "SUCCEEDED" : "FAILED",
        })),
      });
      for (const n of attempts) {
        const folder = `runs/${run}/each/element-${i}/attempt-${n}/`;
        await store.put(`${folder}note.txt`, `note of element ${i} attempt ${n}`, {
          contentType: "text/plain",
        });
        await store.put(`${folder}logs.jsonl`, line(`element ${i} attempt ${n} here`, n));
      }
    }
    server = new grpc.Server();
    server.addService(serviceDefinition(ArtifactService), artifactService({ store, tasks }));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    address = `127.0.0.1:${port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it("lists an element's files as step {step}[{i}] with their attempt, elements in number order", async () => {
    const all = await artifacts("list", run);
    assert.equal(all.code, 0, all.stderr);
    const rows = all.stdout
      .trim()
      .split("\n")
      .slice(1)
      .map((row) => row.split(/\s+/).slice(0, 3));
    assert.deepEqual(rows.slice(0, 6), [
      ["build", "1", "note.txt"],
      ["each[0]", "1", "logs.jsonl"],
      ["each[0]", "1", "note.txt"],
      ["each[1]", "1", "logs.jsonl"],
      ["each[1]", "1", "note.txt"],
      ["each[2]", "1", "logs.jsonl"],
    ]);
    assert.equal(rows.length, 1 + 2 * 12 + 2, "build's file, two of each element, two more of element 3");
    assert.deepEqual(
      rows.map((r) => r[0]).filter((s, i, all) => all.indexOf(s) === i),
      ["build", ...Array.from({ length: 12 }, (_, i) => `each[${i}]`)],
    );
    assert.ok(!all.stdout.includes(" - "), all.stdout);

    const one = await artifacts("list", run, "each[3]");
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(
      one.stdout
        .trim()
        .split("\n")
        .slice(1)
        .map((row) => row.split(/\s+/).slice(0, 3)),
      [
        ["each[3]", "1", "logs.jsonl"],
        ["each[3]", "1", "note.txt"],
        ["each[3]", "2", "logs.jsonl"],
        ["each[3]", "2", "note.txt"],
      ],
    );
  });

  it("gets an element's file, its latest attempt's or the one --attempt names", async () => {
    const latest = await artifacts("get", run, "each[3]", "note.txt");
    assert.equal(latest.code, 0, latest.stderr);
    assert.equal(latest.bytes.toString("utf8"), "note of element 3 attempt 2");
    const first = await artifacts("get", run, "each[3]", "note.txt", "--attempt", "1");
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.bytes.toString("utf8"), "note of element 3 attempt 1");
    const tenth = await artifacts("get", run, "each[10]", "note.txt", "--attempt", "1", "-o", "ten.txt");
    assert.equal(tenth.code, 0, tenth.stderr);
    assert.match(tenth.stderr, new RegExp(`wrote runs/${run}/each/element-10/attempt-1/note\\.txt `));
    assert.equal(await readFile(join(dir, "ten.txt"), "utf8"), "note of element 10 attempt 1");
    const step = await artifacts("get", run, "build", "note.txt", "--attempt", "1");
    assert.equal(step.bytes.toString("utf8"), "note of build");

    const missing = await artifacts("get", run, "each[3]", "note.txt", "--attempt", "3");
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /no artifact "note.txt" of step each\[3\] attempt 3 in run .* \(attempt 1, 2 has it\)/,
    );
  });

  it("tells who gets a file of the map step itself to name an element", async () => {
    for (const args of [[], ["--attempt", "1"]]) {
      const res = await artifacts("get", run, "each", "note.txt", ...args);
      assert.equal(res.code, 1);
      assert.equal(res.bytes.length, 0);
      assert.match(
        res.stderr,
        /no artifact "note.txt" of step each( attempt 1)? in run \S+ \(each\[0\], each\[1\], each\[2\], each\[3\], each\[4\] and 7 more have it: name an element of the map step, e\.g\. each\[0\]\)/,
      );
    }
    const other = await artifacts("get", run, "each", "nothing.txt");
    assert.match(other.stderr, /\(its elements have logs\.jsonl, note\.txt\)/);
  });

  it("reads an element's log, and says to name an element for the map step's", async () => {
    const element = await logs(run, "each[3]");
    assert.equal(element.code, 0, element.stderr);
    assert.deepEqual(
      element.stdout
        .trim()
        .split("\n")
        .map((l) => l.slice(l.indexOf("  #") + 2)),
      ["#1 stdout element 3 attempt 1 here", "#2 stdout element 3 attempt 2 here"],
    );
    const second = await logs(run, "each[3]", "--attempt", "2");
    assert.match(second.stdout, /^[\d-]+ [\d:]+ {2}#2 stdout element 3 attempt 2 here\n$/);

    const step = await logs(run, "each");
    assert.equal(step.code, 1);
    assert.match(
      step.stderr,
      /^nexusflow: logs: NOT_FOUND: step each of run \S+ is a map step: .*name one \(each\[0\], each\[1\], \.\.\.\); asked the gateway at http:\/\/127\.0\.0\.1:\d+\n$/,
    );
  });
});
