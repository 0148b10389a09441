/**
 * A request over the scheduler's 16 MiB receive limit (grpc.max_receive_message_length) is answered
 * RESOURCE_EXHAUSTED for that call alone: grpc-js reads the message's length prefix and answers at
 * once, and the connection carries the client's other calls. This holds for a grpc-js client, and
 * for a Connect (Node http2) client whose session may hold such a body (maxSessionMemory above it).
 * A Node client left with http2's default maxSessionMemory (10 MB; @connectrpc/connect-node leaves
 * it, @nexusflow/client sets 64 MB) still holds most of the body in its own outgoing queue when that early
 * answer arrives, so it refuses the answer itself (RST_STREAM NGHTTP2_ENHANCE_YOUR_CALM: the call
 * fails INTERNAL) and every answer after it on that session, which stays unusable. The server
 * cannot prevent that with grpc-js' options: it would have to read the whole body before answering.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, jsonToValue } from "@nexusflow/common";
import {
  GetWorkflowRequestSchema,
  StartRunRequestSchema,
  WorkflowService,
  type GetWorkflowRequest,
  type StartRunRequest,
} from "@nexusflow/gen";
import { NexusflowClient } from "@nexusflow/client";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler } from "../support.js";

/** A request of 17 MiB, over the limit. */
const tooLarge = (): StartRunRequest =>
  create(StartRunRequestSchema, { workflowName: "w", input: jsonToValue("x".repeat(17 * 1024 * 1024)) });

describe("a request over the receive limit", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;

  before(async () => {
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url);
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
  });

  it("is answered RESOURCE_EXHAUSTED, and a grpc-js client's connection goes on", async () => {
    const Client = clientConstructor(WorkflowService);
    const client = new Client(scheduler.address, grpc.credentials.createInsecure(), {
      "grpc.max_send_message_length": -1,
    }) as unknown as {
      startRun(req: StartRunRequest, cb: (e: grpc.ServiceError | null) => void): void;
      getWorkflow(req: GetWorkflowRequest, cb: (e: grpc.ServiceError | null) => void): void;
      close(): void;
    };
    try {
      const call = <Req>(method: "startRun" | "getWorkflow", req: Req): Promise<grpc.ServiceError | null> =>
        new Promise((resolve) =>
          (client[method] as (r: Req, cb: (e: grpc.ServiceError | null) => void) => void)(req, resolve),
        );
      const other = call("getWorkflow", create(GetWorkflowRequestSchema, { name: "missing" }));
      const refused = await call("startRun", tooLarge());
      assert.equal(refused?.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(refused.details, /larger than max \(\d+ vs 16777216\)/);
      // The call under way meanwhile and the next one are answered on the same connection.
      assert.equal((await other)?.code, grpc.status.NOT_FOUND);
      assert.equal(
        (await call("getWorkflow", create(GetWorkflowRequestSchema, { name: "missing" })))?.code,
        grpc.status.NOT_FOUND,
      );
    } finally {
      client.close();
    }
  });

  it("is answered RESOURCE_EXHAUSTED to a Connect client whose http2 session may hold it, which goes on", async () => {
    const client = createClient(
      WorkflowService,
      createGrpcTransport({
        baseUrl: `http://${scheduler.address}`,
        nodeOptions: { maxSessionMemory: 64 },
      }),
    );
    const code = (p: Promise<unknown>): Promise<Code | "ok"> =>
      p.then(
        () => "ok" as const,
        (e: unknown) => ConnectError.from(e).code,
      );
    assert.equal(await code(client.startRun(tooLarge())), Code.ResourceExhausted);
    assert.equal(await code(client.getWorkflow({ name: "missing" })), Code.NotFound);
  });

  it("is answered RESOURCE_EXHAUSTED to @nexusflow/client, whose session goes on", async () => {
    for (const protocol of ["grpc", "connect"] as const) {
      const client = new NexusflowClient({
        baseUrl: `http://${scheduler.address}`,
        protocol,
        httpVersion: "2",
      });
      const code = (p: Promise<unknown>): Promise<Code | "ok"> =>
        p.then(
          () => "ok" as const,
          (e: unknown) => ConnectError.from(e).code,
        );
      try {
        const input = { x: "x".repeat(17 * 1024 * 1024) };
        // gRPC: the scheduler's receive limit; Connect: the scheduler speaks gRPC only and answers
        // at once (HTTP 415). Either way an answer before the whole body was read.
        assert.notEqual(await code(client.startRun({ workflowName: "w", input })), "ok", protocol);
        assert.equal(
          await code(client.workflows.getWorkflow({ name: "missing" })),
          protocol === "grpc" ? Code.NotFound : Code.Unknown,
          protocol,
        );
      } finally {
        client.close();
      }
    }
  });
});
