/**
 * `nexusflow runs watch` and `runs start --watch` of a run too large for WatchRun's messages to
 * carry its values (values_omitted): the final summary still prints the run's output, read once
 * with GetRun when the run has ended, and `--output json` ends with the whole run. Against a
 * gateway in this process (a real HTTP/2 server) whose WatchRun sends such a run, as the
 * scheduler does for a run over 3 MiB: its states, without its input or output. Before, the
 * summary printed no output (the CLI took the last message's run as the run).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { RunSchema, RunStatus, TaskRunSchema, TaskStatus, WorkflowService, type Run } from "@nexusflow/gen";
import { cleanEnv } from "./clean-env.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "cli", "src", "bin.mjs");
const RUN_ID = "5d0f2c1e-8a47-4f0e-9b1d-2c6a7e3f4b5a";
const OUTPUT = { report: "the large run's output" };

/** The run at `status`, its one task at `task`; `whole` with its input and output. */
function runAt(status: RunStatus, task: TaskStatus, whole: boolean): Run {
  const value = (json: unknown) => (whole ? fromJson(ValueSchema, json as never) : undefined);
  return create(RunSchema, {
    id: RUN_ID,
    workflowName: "large",
    workflowVersion: 1,
    status,
    input: value({ blob: "x".repeat(64) }),
    output: status === RunStatus.SUCCEEDED ? value(OUTPUT) : undefined,
    tasks: [
      create(TaskRunSchema, {
        id: "t1",
        stepId: "only",
        type: "big",
        status: task,
        input: value({ blob: "x".repeat(64) }),
        output: task === TaskStatus.SUCCEEDED ? value(OUTPUT) : undefined,
      }),
    ],
  });
}

describe("watching a run sent without its values", { timeout: 60_000 }, () => {
  let server: http2.Http2Server;
  let address = "";
  /** The calls the gateway answered, by method. */
  const calls: string[] = [];

  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        startRun() {
          calls.push("StartRun");
          return { run: runAt(RunStatus.RUNNING, TaskStatus.QUEUED, false), created: true };
        },
        async *watchRun() {
          calls.push("WatchRun");
          yield { run: runAt(RunStatus.RUNNING, TaskStatus.RUNNING, false), valuesOmitted: true };
          // The run ends later (a separate write on the stream).
          await new Promise<void>((resolve) => setImmediate(resolve));
          yield {
            run: runAt(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED, false),
            changedTaskIds: ["t1"],
            valuesOmitted: true,
          };
        },
        getRun() {
          calls.push("GetRun");
          return { run: runAt(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED, true) };
        },
      });
    };
    server = http2.createServer({}, connectNodeAdapter({ routes }));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Runs the CLI with `args` against the gateway: its exit code and output. */
  async function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [BIN, ...args, "--address", address, "--token", "t"], {
      cwd: ROOT,
      env: { ...cleanEnv(), NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
    return { code, stdout, stderr };
  }

  it("runs watch prints the run's output in its final summary, read once with GetRun", async () => {
    calls.length = 0;
    const { code, stdout, stderr } = await cli(["runs", "watch", RUN_ID]);
    assert.equal(stderr, "");
    assert.equal(code, 0, stdout);
    assert.match(stdout, /SUCCEEDED/);
    assert.match(stdout, /output:\n\s+\{\n\s+"report": "the large run's output"\n\s+\}/);
    assert.deepEqual(calls, ["WatchRun", "GetRun"]);
  });

  it("runs start --watch prints it too", async () => {
    calls.length = 0;
    const { code, stdout, stderr } = await cli(["runs", "start", "large", "--watch"]);
    assert.equal(stderr, "");
    assert.equal(code, 0, stdout);
    assert.match(stdout, /"report": "the large run's output"/);
    assert.deepEqual(calls, ["StartRun", "WatchRun", "GetRun"]);
  });

  it("runs watch --output json ends with the whole run as it ended", async () => {
    const { code, stdout } = await cli(["runs", "watch", RUN_ID, "--output", "json"]);
    assert.equal(code, 0, stdout);
    const lines = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { run: { status: string; output?: unknown }; valuesOmitted?: boolean });
    assert.equal(lines.length, 2);
    assert.equal(lines[0]?.valuesOmitted, true, "a message as it came");
    assert.equal(lines[1]?.run.status, "RUN_STATUS_SUCCEEDED");
    assert.deepEqual(lines[1]?.run.output, OUTPUT);
    assert.equal(lines[1]?.valuesOmitted, undefined, "the whole run");
  });
});
