/**
 * The gateway in front of two fake scheduler replicas running as their own processes (issue #22):
 * one SIGKILLed, or SIGSTOPped (its connections stay open, nothing answers), and the calls through
 * the gateway go on to the other one; a write that may have reached the stopped one ends with
 * UNAVAILABLE, never sent twice.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { RunStatus, WorkflowService } from "@nexusflow/gen";
import { type Gateway, createGateway } from "../src/server.js";
import { type Upstream, createUpstream } from "../src/upstream.js";

const T = { timeout: 60_000 };
const FAKE = fileURLToPath(new URL("./fixtures/fake-replica.ts", import.meta.url));

interface ReplicaProcess {
  child: ChildProcess;
  address: string;
  exited: Promise<unknown>;
}

async function startReplicaProcess(name: string, backlog?: number): Promise<ReplicaProcess> {
  const args = backlog === undefined ? [name] : [name, String(backlog)];
  const child = spawn(process.execPath, ["--import", "tsx", FAKE, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = once(child, "exit");
  const lines = createInterface({ input: child.stdout });
  const [line] = (await Promise.race([
    once(lines, "line"),
    exited.then(() => assert.fail(`fake replica ${name} exited before listening`)),
  ])) as [string];
  lines.close();
  const { port } = JSON.parse(line) as { port: number };
  return { child, address: `127.0.0.1:${port}`, exited };
}

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("gateway over two replica processes", () => {
  let a: ReplicaProcess;
  let b: ReplicaProcess;
  let upstream: Upstream;
  let gateway: Gateway;
  let sessionManager: Http2SessionManager;
  let client: ReturnType<typeof createClient<typeof WorkflowService>>;

  beforeEach(async () => {
    [a, b] = await Promise.all([startReplicaProcess("a"), startReplicaProcess("b")]);
    // Short PINGs, so that a stopped replica is noticed within a second.
    upstream = createUpstream({ addresses: [a.address, b.address], pingIntervalMs: 300, pingTimeoutMs: 300 });
    gateway = createGateway({ schedulerAddress: [a.address, b.address], transport: upstream, port: 0 });
    const { url } = await gateway.listen();
    sessionManager = new Http2SessionManager(url);
    client = createClient(WorkflowService, createGrpcTransport({ baseUrl: url, sessionManager }));
  });

  afterEach(async () => {
    sessionManager.abort();
    await gateway.close();
    upstream.close();
    for (const p of [a, b]) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill("SIGCONT");
        p.child.kill("SIGKILL");
      }
      await p.exited;
    }
  });

  it("goes on through the other replica when the one it calls is SIGKILLed", T, async () => {
    assert.equal((await client.getRun({ runId: "r1" })).run?.workflowName, "a");
    a.child.kill("SIGKILL");
    await a.exited;
    for (const runId of ["r2", "r3"]) assert.equal((await client.getRun({ runId })).run?.workflowName, "b");
    assert.equal((await client.startRun({ workflowName: "w" })).run?.workflowName, "b");
    const statuses: RunStatus[] = [];
    for await (const m of client.watchRun({ runId: "r4" })) {
      assert.equal(m.run?.workflowName, "b");
      statuses.push(m.run?.status ?? RunStatus.UNSPECIFIED);
    }
    assert.deepEqual(statuses, [RunStatus.PENDING, RunStatus.SUCCEEDED]);
  });

  it(
    "when the one it calls is SIGSTOPped, sends a read to the other, ends a write with UNAVAILABLE and calls the other from then on",
    T,
    async () => {
      assert.equal((await client.getRun({ runId: "r1" })).run?.workflowName, "a");
      a.child.kill("SIGSTOP");
      const [read, write] = await Promise.all([
        client.getRun({ runId: "r2" }),
        rejection(client.cancelRun({ runId: "r3" })),
      ]);
      assert.equal(read.run?.workflowName, "b");
      assert.equal(write.code, Code.Unavailable, write.rawMessage);
      assert.match(write.rawMessage, /may or may not have been applied/);
      assert.equal(upstream.preferred, b.address);
      assert.equal((await client.cancelRun({ runId: "r3" })).run?.workflowName, "b");
      assert.equal((await client.startRun({ workflowName: "w" })).run?.workflowName, "b");
    },
  );
});

describe("gateway over a replica whose connections cannot be made", () => {
  it("gives the connection up after connectTimeoutMs and goes to the other replica", T, async () => {
    // A stopped process whose accept queue (backlog 1) is full: the kernel drops further SYNs, so
    // a connection attempt waits as it would for a host gone from the network.
    const [a, b] = await Promise.all([startReplicaProcess("a", 1), startReplicaProcess("b")]);
    a.child.kill("SIGSTOP");
    const [host, port] = [a.address.split(":")[0] as string, Number(a.address.split(":")[1])];
    const fillers: net.Socket[] = [];
    const upstream = createUpstream({ addresses: [a.address, b.address], connectTimeoutMs: 300 });
    try {
      for (let i = 0; i < 2; i++) {
        const socket = net.connect(port, host);
        fillers.push(socket);
        await once(socket, "connect");
      }
      const client = createClient(WorkflowService, upstream);
      const { run } = await client.startRun({ workflowName: "w" }, { timeoutMs: 20_000 });
      assert.equal(run?.workflowName, "b");
      assert.equal(upstream.preferred, b.address);
    } finally {
      upstream.close();
      for (const socket of fillers) socket.destroy();
      for (const p of [a, b]) {
        p.child.kill("SIGCONT");
        p.child.kill("SIGKILL");
        await p.exited;
      }
    }
  });
});
