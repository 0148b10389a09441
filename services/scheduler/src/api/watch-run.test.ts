/**
 * A WatchRun followed through the run's owner ends with the owner's RESOURCE_EXHAUSTED: a snapshot
 * larger than this replica's client takes is as large at the next try, and the watch used to open
 * the owner's stream again and again, silently, forever. The owner is a fake gRPC server whose
 * snapshot is larger than the router's client is set to take here; the owners' table is a fake
 * pool naming it for every partition.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ApiError, Code, createLogger, jsonToValue, serviceDefinition } from "@nexusflow/common";
import { waitFor } from "@nexusflow/common/testing";
import {
  RunSchema,
  RunStatus,
  WatchRunRequestSchema,
  type WatchRunResponse,
  WatchRunResponseSchema,
  WorkflowService,
} from "@nexusflow/gen";
import type pg from "pg";
import { ReplicaRouter, type RouterLeases } from "../cluster/replica-router.js";
import { type WatchDeps, watchRun } from "./watch-run.js";

const RUN_ID = "0194b3c2-6a8e-7b3c-9d4e-5f6a7b8c9d0e";
/** What the router's client takes here; the owner's snapshot is larger. */
const CLIENT_LIMIT = 1024;

describe("watchRun through the run's owner", () => {
  let owner: grpc.Server;
  let router: ReplicaRouter;
  /** WatchRun streams the owner was asked for. */
  let opened = 0;

  before(async () => {
    owner = new grpc.Server();
    owner.addService(serviceDefinition(WorkflowService), {
      watchRun: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        opened++;
        const input = jsonToValue({ blob: "x".repeat(4 * CLIENT_LIMIT) });
        call.write(
          create(WatchRunResponseSchema, {
            run: create(RunSchema, { id: RUN_ID, status: RunStatus.RUNNING, input }),
          }),
        );
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
    router = new ReplicaRouter({
      pool,
      leases,
      log: createLogger("test", "silent"),
      channelOptions: { "grpc.max_receive_message_length": CLIENT_LIMIT },
    });
    router.start();
  });
  after(async () => {
    router?.stop();
    await new Promise<void>((resolve) => (owner ? owner.tryShutdown(() => resolve()) : resolve()));
  });

  it(
    "ends with the owner's RESOURCE_EXHAUSTED instead of opening its stream again",
    { timeout: 20_000 },
    async () => {
      const deps: WatchDeps = {
        engine: { watch: () => () => {} },
        runs: { get: () => Promise.reject(new Error("the run is not held here")) },
        router,
        reasonsOf: () => Promise.reject(new Error("the run is not held here")),
      };
      const call = {
        metadata: new grpc.Metadata(),
        getDeadline: () => Infinity,
      } as unknown as grpc.ServerWritableStream<never, WatchRunResponse>;
      const sent: WatchRunResponse[] = [];
      const abort = new AbortController();
      let outcome: { error: unknown } | undefined;
      const watching = watchRun(
        deps,
        create(WatchRunRequestSchema, { runId: RUN_ID }),
        (m) => {
          sent.push(m);
          return Promise.resolve();
        },
        abort.signal,
        call,
      ).then(
        () => (outcome = { error: undefined }),
        (e: unknown) => (outcome = { error: e }),
      );
      try {
        await waitFor("the watch to end or to open the owner's stream again", () => outcome ?? opened > 1);
      } finally {
        abort.abort();
        await watching;
      }
      assert.equal(opened, 1, "the owner's stream was opened once");
      assert.ok(outcome?.error instanceof ApiError, String(outcome?.error));
      assert.equal(outcome.error.code, Code.RESOURCE_EXHAUSTED);
      assert.match(outcome.error.message, /larger than max/);
      assert.deepEqual(sent, []);
    },
  );
});
