/**
 * The router's clients to other replicas take answers of any size, as a replica sends them: a run
 * over 16 MiB (its input and its tasks' inputs together) held at another replica used to fail a
 * forwarded CancelRun with RESOURCE_EXHAUSTED although the owner had cancelled it, and a WatchRun
 * followed through the router could not receive its snapshots. The owner here is a fake gRPC server
 * answering such a run; the owners' table is a fake pool naming it for every partition.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createLogger, jsonToValue, serviceDefinition } from "@nexusflow/common";
import {
  CancelRunResponseSchema,
  type Run,
  RunSchema,
  RunStatus,
  WatchRunRequestSchema,
  WatchRunResponseSchema,
  WorkflowService,
} from "@nexusflow/gen";
import type pg from "pg";
import { ReplicaRouter, type RouterLeases } from "./replica-router.js";

const RUN_ID = "0194b3c2-6a8e-7b3c-9d4e-5f6a7b8c9d0e";
/** Above the 16 MiB the router's clients used to take. */
const BLOB = "x".repeat(17 * 1024 * 1024);

const bigRun = (status: RunStatus): Run =>
  create(RunSchema, { id: RUN_ID, status, input: jsonToValue({ blob: BLOB }) });

describe("ReplicaRouter clients", () => {
  let owner: grpc.Server;
  let router: ReplicaRouter;

  before(async () => {
    owner = new grpc.Server();
    owner.addService(serviceDefinition(WorkflowService), {
      cancelRun: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
        callback(null, create(CancelRunResponseSchema, { run: bigRun(RunStatus.CANCELLED) })),
      watchRun: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        call.write(create(WatchRunResponseSchema, { run: bigRun(RunStatus.RUNNING) }));
        call.end();
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      owner.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e === null ? resolve(p) : reject(e),
      ),
    );
    const leases: RouterLeases = {
      replicaId: "here",
      leaseMs: 1000,
      partitionCount: 16,
      epochOf: () => undefined,
      held: () => [],
      listen: () => {},
    };
    const rows = Array.from({ length: 16 }, (_, partition) => ({
      partition,
      id: "owner",
      address: `127.0.0.1:${port}`,
    }));
    const pool = { query: () => Promise.resolve({ rows }) } as unknown as Pick<pg.Pool, "query">;
    router = new ReplicaRouter({ pool, leases, log: createLogger("test", "silent") });
    router.start();
  });
  after(async () => {
    router?.stop();
    await new Promise<void>((resolve) => (owner ? owner.tryShutdown(() => resolve()) : resolve()));
  });

  it("take a forwarded CancelRun's answer over 16 MiB", { timeout: 20_000 }, async () => {
    const res = await router.cancelRun(RUN_ID, "too big to answer");
    assert.equal(res?.run?.status, RunStatus.CANCELLED);
    assert.equal(res?.run?.input?.kind.case, "structValue");
  });

  it("take a followed WatchRun's snapshot over 16 MiB", { timeout: 20_000 }, async () => {
    const owned = await router.ownerOfRun(RUN_ID);
    assert.ok(owned !== undefined);
    const stream = router.openStream("watchRun", owned, create(WatchRunRequestSchema, { runId: RUN_ID }));
    const received = await new Promise<unknown[]>((resolve, reject) => {
      const messages: unknown[] = [];
      stream.on("data", (m: unknown) => messages.push(m));
      stream.on("error", reject);
      stream.on("end", () => resolve(messages));
    });
    assert.equal(received.length, 1);
    assert.equal((received[0] as { run?: Run }).run?.status, RunStatus.RUNNING);
  });
});
