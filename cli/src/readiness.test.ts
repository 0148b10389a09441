/**
 * The dev stack's readiness checks against real processes and servers: a gateway-like `/healthz`
 * that answers 503 before 200, a gRPC server answering ListWorkflows with UNAVAILABLE before it
 * serves (and one refusing the token), a child that says it is ready over IPC; and what
 * `waitUntilReady` says when the child exits first or does not get ready in time.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { freePort } from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";
import { ChildExitedError, ChildNotReadyError, ChildTimeoutError, ManagedChild } from "./child.js";
import { attachedReadiness, gatewayReadiness, schedulerReadiness, waitUntilReady } from "./readiness.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const T = { timeout: 30_000 };

describe("readiness checks of the dev stack", () => {
  let dir: string;
  const children: ManagedChild[] = [];

  /** A child running `code` (an ES module), with an IPC channel when asked. */
  const start = async (name: string, code: string, ipc = false): Promise<ManagedChild> => {
    const entry = join(dir, `${name}.mjs`);
    await writeFile(entry, code);
    const child = new ManagedChild({ name, entry, cwd: ROOT, env: process.env, ipc }, () => undefined);
    children.push(child);
    return child;
  };
  const idle = "setInterval(() => undefined, 1000);\n";

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-readiness-"));
  });

  after(async () => {
    await Promise.all(children.map((c) => c.stop(2_000)));
    await rm(dir, { recursive: true, force: true });
  });

  it("waits for GET /healthz to answer 200", T, async () => {
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      res.writeHead(req.url === "/healthz" && requests >= 3 ? 200 : 503).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const child = await start("gateway", idle);
      await waitUntilReady(
        child,
        gatewayReadiness(`http://127.0.0.1:${port}`),
        20_000,
        AbortSignal.timeout(20_000),
      );
      assert.equal(requests, 3);
    } finally {
      server.close();
    }
  });

  it(
    "waits for the scheduler to answer ListWorkflows, and fails at once when it refuses the token",
    T,
    async () => {
      let calls = 0;
      const tokens: (string | null)[] = [];
      const server = http2.createServer(
        connectNodeAdapter({
          routes: (router) =>
            router.service(WorkflowService, {
              listWorkflows: (_req, ctx) => {
                calls++;
                tokens.push(ctx.requestHeader.get("authorization"));
                if (ctx.requestHeader.get("authorization") !== "Bearer good")
                  throw new ConnectError("bad token", Code.Unauthenticated);
                if (calls < 3) throw new ConnectError("database starting", Code.Unavailable);
                return {};
              },
            }),
        }),
      );
      // Nobody listens there at first: connection refused is "not yet" too.
      const port = await freePort("127.0.0.1");
      const child = await start("scheduler", idle);
      const waiting = waitUntilReady(
        child,
        schedulerReadiness(`127.0.0.1:${port}`, "good"),
        20_000,
        AbortSignal.timeout(20_000),
      );
      setTimeout(() => server.listen(port, "127.0.0.1"), 300);
      try {
        await waiting;
        assert.equal(calls, 3);
        assert.deepEqual(new Set(tokens), new Set(["Bearer good"]));

        const refused = await waitUntilReady(
          child,
          schedulerReadiness(`127.0.0.1:${port}`, "bad"),
          20_000,
          AbortSignal.timeout(20_000),
        ).catch((e: unknown) => e);
        assert.ok(refused instanceof ChildNotReadyError, String(refused));
        assert.equal(refused.message, "scheduler is not ready: UNAUTHENTICATED: bad token");
      } finally {
        server.close();
      }
    },
  );

  it("takes an executor's word, sent over IPC, that it is ready", T, async () => {
    const child = await start(
      "executor",
      `setTimeout(() => process.send({ nexusflow: "ready" }, undefined, {}, () => process.disconnect()), 200);\n${idle}`,
      true,
    );
    await waitUntilReady(child, attachedReadiness(child), 20_000, AbortSignal.timeout(20_000));
    // A message already received counts for whoever asks later.
    await waitUntilReady(child, attachedReadiness(child), 1_000, AbortSignal.timeout(20_000));
  });

  it("says so when the child exits first, or is not ready in time", T, async () => {
    const exiting = await start("exiting", "process.exit(3);\n", true);
    const exited = await waitUntilReady(
      exiting,
      attachedReadiness(exiting),
      20_000,
      AbortSignal.timeout(20_000),
    ).catch((e: unknown) => e);
    assert.ok(exited instanceof ChildExitedError, String(exited));
    assert.equal(exited.message, "exiting exited unexpectedly (exit code 3)");

    const silent = await start("silent", idle, true);
    const late = await waitUntilReady(
      silent,
      attachedReadiness(silent),
      300,
      AbortSignal.timeout(20_000),
    ).catch((e: unknown) => e);
    assert.ok(late instanceof ChildTimeoutError, String(late));
    assert.match(
      late.message,
      /^silent was not ready within 300 ms \(waited for its message that it attached/,
    );

    const stop = new AbortController();
    const stopping = waitUntilReady(silent, attachedReadiness(silent), 20_000, stop.signal);
    stop.abort(new Error("stopped by SIGINT"));
    await assert.rejects(stopping, /stopped by SIGINT/);
  });
});
