/**
 * `nexusflow runs watch` against a gateway whose run never ends (a real HTTP/2 gRPC server in this
 * process sending a run update every 20 ms): a reader that goes away (`| head -1`: EPIPE on the
 * CLI's standard output) and Ctrl-C (SIGINT) both end the command quietly, with no stack trace,
 * with exit code 141 and 130, and the watch stream is closed on the server.
 */
import assert from "node:assert/strict";
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { once } from "node:events";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { RunSchema, RunStatus, WorkflowService } from "@nexusflow/gen";
import { cleanEnv } from "./clean-env.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "cli", "src", "bin.mjs");
const RUN_ID = "0b84a41e-fbf6-4b3d-95f9-8c5f8ed1763d";

describe("runs watch stopped by its reader or by Ctrl-C", { timeout: 60_000 }, () => {
  let server: http2.Http2Server;
  let address = "";
  /** Watch streams open now, and a waiter for the count to reach zero. */
  let open = 0;
  let onClosed: (() => void) | undefined;

  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        async *watchRun(req, context) {
          open++;
          try {
            for (let i = 0; !context.signal.aborted; i++) {
              yield {
                run: create(RunSchema, {
                  id: req.runId,
                  workflowName: "forever",
                  workflowVersion: 1,
                  status: RunStatus.RUNNING,
                  labels: { update: String(i) },
                }),
              };
              await new Promise<void>((resolve) => {
                const timer = setTimeout(resolve, 20);
                context.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), {
                  once: true,
                });
              });
            }
          } finally {
            open--;
            if (open === 0) onClosed?.();
          }
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

  function watch(): {
    child: ChildProcessByStdio<null, Readable, Readable>;
    firstLine: Promise<string>;
    stderr: () => string;
  } {
    const child = spawn(
      process.execPath,
      [BIN, "runs", "watch", RUN_ID, "--output", "json", "--address", address, "--token", "t"],
      { cwd: ROOT, env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] },
    );
    let err = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
    const firstLine = new Promise<string>((resolve, reject) => {
      let out = "";
      const onData = (c: Buffer): void => {
        out += c.toString("utf8");
        const nl = out.indexOf("\n");
        if (nl < 0) return;
        child.stdout.off("data", onData);
        resolve(out.slice(0, nl));
      };
      child.stdout.on("data", onData);
      child.once("exit", (code) => reject(new Error(`exited with ${code} before a line: ${err}`)));
    });
    return { child, firstLine, stderr: () => err };
  }

  /** Resolves once every watch stream the server served has ended. */
  function allClosed(): Promise<void> {
    return open === 0 ? Promise.resolve() : new Promise((resolve) => (onClosed = resolve));
  }

  it("ends with 141 and nothing on stderr when standard output is closed (| head -1)", async () => {
    const { child, firstLine, stderr } = watch();
    assert.match(await firstLine, /"workflowName":"forever"/);
    // The reader goes away, as head does after its line: the next writes fail with EPIPE.
    child.stdout.destroy();
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(stderr(), "", "no stack trace, no message");
    assert.equal(code, 141);
    await allClosed();
  });

  it("ends with 130 and nothing on stderr on Ctrl-C", async () => {
    const { child, firstLine, stderr } = watch();
    await firstLine;
    child.stdout.resume();
    child.kill("SIGINT");
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(stderr(), "");
    assert.equal(code, 130);
    await allClosed();
  });
});
