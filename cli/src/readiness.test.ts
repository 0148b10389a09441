/**
 * The dev stack's readiness checks against real processes and servers: a gateway-like `/healthz`
 * that answers 503 before 200, a gRPC server answering ListWorkflows with UNAVAILABLE before it
 * serves (and one refusing the token), an executor-like /metrics whose attached gauge turns 1; and
 * what `waitUntilReady` says when the child exits first or does not get ready in time.
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
import {
  executorReadiness,
  gatewayReadiness,
  sampleValue,
  schedulerReadiness,
  waitUntilReady,
} from "./readiness.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const T = { timeout: 30_000 };

describe("readiness checks of the dev stack", () => {
  let dir: string;
  const children: ManagedChild[] = [];

  /** A child running `code` (an ES module). */
  const start = async (name: string, code: string): Promise<ManagedChild> => {
    const entry = join(dir, `${name}.mjs`);
    await writeFile(entry, code);
    const child = new ManagedChild({ name, entry, cwd: ROOT, env: process.env }, () => undefined);
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

  it("waits for an executor's metrics to say that it has attached", T, async () => {
    let scrapes = 0;
    const server = http.createServer((req, res) => {
      scrapes++;
      if (req.url !== "/metrics" || scrapes === 1) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(
        "# HELP nexusflow_executor_attached 1 while the executor has a session with the scheduler, else 0.\n" +
          "# TYPE nexusflow_executor_attached gauge\n" +
          `nexusflow_executor_attached ${scrapes >= 3 ? 1 : 0}\n` +
          "nexusflow_executor_slots 16\n",
      );
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const child = await start("executor", idle);
      const url = `http://127.0.0.1:${port}/metrics`;
      await waitUntilReady(child, executorReadiness(url), 20_000, AbortSignal.timeout(20_000));
      assert.equal(scrapes, 3);
    } finally {
      server.close();
    }
  });

  it("reads one unlabelled sample of a Prometheus exposition", () => {
    const text = '# HELP a_total x\n# TYPE a_total counter\na_total{kind="x"} 3\na_total 7\nb 1e3\n';
    assert.equal(sampleValue(text, "a_total"), 7);
    assert.equal(sampleValue(text, "b"), 1000);
    assert.equal(sampleValue(text, "c"), undefined);
  });

  it("says so when the child exits first, or is not ready in time", T, async () => {
    const nobody = `http://127.0.0.1:${await freePort("127.0.0.1")}`;
    const exiting = await start("exiting", "process.exit(3);\n");
    const exited = await waitUntilReady(
      exiting,
      gatewayReadiness(nobody),
      20_000,
      AbortSignal.timeout(20_000),
    ).catch((e: unknown) => e);
    assert.ok(exited instanceof ChildExitedError, String(exited));
    assert.equal(exited.message, "exiting exited unexpectedly (exit code 3)");

    const silent = await start("silent", idle);
    const late = await waitUntilReady(
      silent,
      executorReadiness(`${nobody}/metrics`),
      300,
      AbortSignal.timeout(20_000),
    ).catch((e: unknown) => e);
    assert.ok(late instanceof ChildTimeoutError, String(late));
    assert.equal(
      late.message,
      `silent was not ready within 300 ms (waited for nexusflow_executor_attached 1 at ${nobody}/metrics)`,
    );

    const stop = new AbortController();
    const stopping = waitUntilReady(silent, gatewayReadiness(nobody), 20_000, stop.signal);
    stop.abort(new Error("stopped by SIGINT"));
    await assert.rejects(stopping, /stopped by SIGINT/);
  });
});
