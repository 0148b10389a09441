/**
 * gRPC server reflection on the gateway (v1 and v1alpha, no token needed), proved with the real
 * clients: `buf curl` lists services and calls a method it only knows through reflection, and
 * `grpcurl` lists, describes and invokes, and decodes the google.rpc details of an error. The
 * upstream is an in-process fake.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type DescService, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  Code,
  type ConnectRouter,
  ConnectError,
  createClient,
  createRouterTransport,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { ServerReflection as ServerReflectionV1 } from "../src/gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { BUF, grpcurl, missingGrpcurl, tool } from "./tools.js";

function fakeUpstream(router: ConnectRouter): void {
  router.service(WorkflowService, {
    listWorkflows: () => ({ workflows: [{ name: "from-the-fake", version: 7 }] }),
    getWorkflow: () => {
      throw new ConnectError("version must not be negative", Code.InvalidArgument, undefined, [
        {
          desc: BadRequestSchema,
          value: { fieldViolations: [{ field: "version", description: "must not be negative" }] },
        },
      ]);
    },
  });
}

/** The error detail types the services send, which reflection must describe. */
const DETAIL_TYPES = ["google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.ResourceInfo"];

/** Asks `url`'s reflection (one version) for the file containing `symbol`; the decoded files. */
async function fileContainingSymbol(url: string, service: DescService, symbol: string) {
  const client = createClient(service as typeof ServerReflectionV1, createGrpcTransport({ baseUrl: url }));
  const requests = createAsyncIterable([
    { messageRequest: { case: "fileContainingSymbol" as const, value: symbol } },
  ]);
  for await (const res of client.serverReflectionInfo(requests)) {
    const r = res.messageResponse;
    if (r.case !== "fileDescriptorResponse")
      throw new Error(`${symbol}: ${r.case === "errorResponse" ? r.value.errorMessage : String(r.case)}`);
    return r.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
  }
  throw new Error(`${symbol}: no answer`);
}

// The gateway also serves grpc.health.v1.Health (health.ts), which reflection lists for grpcurl.
const SERVICES = [
  "grpc.health.v1.Health",
  "nexusflow.v1.ArtifactService",
  "nexusflow.v1.ClusterService",
  "nexusflow.v1.EventService",
  "nexusflow.v1.RateLimitService",
  "nexusflow.v1.ReplicaService",
  "nexusflow.v1.ScheduleService",
  "nexusflow.v1.WorkflowService",
];

describe("gateway reflection with real clients", () => {
  let keys: TestKeys;
  let gateway: Gateway;
  let url: string;
  let hostPort: string;
  let token: string;

  before(async () => {
    keys = await createTestKeys();
    gateway = createGateway({
      schedulerAddress: "127.0.0.1:1",
      transport: createRouterTransport(fakeUpstream),
      port: 0,
      verifier: await createTokenVerifier({
        publicKeyFiles: [keys.keys.ES256.jwkFile],
        issuer: ISSUER,
        audience: AUDIENCE,
      }),
    });
    const address = await gateway.listen();
    url = address.url;
    hostPort = `127.0.0.1:${address.port}`;
    token = await keys.sign(keys.keys.ES256, { scope: "workflows:read" });
  });

  after(async () => {
    await gateway?.close();
    await keys?.close();
  });

  it(
    "buf curl lists the services over grpc.reflection.v1 and v1alpha, without a token",
    { timeout: 120_000 },
    async () => {
      // Reflection over each of the gateway's protocols (buf curl's default is Connect) and versions.
      for (const protocol of ["connect", "grpc", "grpcweb"]) {
        for (const version of ["grpc-v1", "grpc-v1alpha"]) {
          const out = await tool(BUF, [
            "curl",
            "--http2-prior-knowledge",
            "--protocol",
            protocol,
            "--reflect-protocol",
            version,
            "--list-services",
            url,
          ]);
          assert.deepEqual(out.trim().split("\n").sort(), SERVICES, `${protocol} ${version}`);
        }
      }
      const methods = await tool(BUF, ["curl", "--http2-prior-knowledge", "--list-methods", url]);
      assert.ok(methods.includes("nexusflow.v1.WorkflowService/WatchRun"));
      assert.ok(methods.includes("nexusflow.v1.ArtifactService/GetTaskLogs"));
    },
  );

  it("describes the error detail types (google.rpc) over v1 and v1alpha", async () => {
    for (const service of [ServerReflectionV1, ServerReflectionV1Alpha]) {
      for (const symbol of [...DETAIL_TYPES, "google.rpc.Status"]) {
        const files = await fileContainingSymbol(url, service, symbol);
        const [pkg, name] = symbol.split(".rpc.");
        const file = files.find((f) =>
          f.messageType.some((m) => `${f.package}.${m.name}` === `${pkg}.rpc.${name}`),
        );
        assert.ok(file, `${service.typeName} ${symbol}: ${files.map((f) => f.name).join(", ")}`);
        // Every import comes along (Duration for RetryInfo, Any for Status), so the file can be linked.
        const names = new Set(files.map((f) => f.name));
        for (const dep of file.dependency) assert.ok(names.has(dep), `${symbol}: missing ${dep}`);
      }
    }
    const [badRequest] = (
      await fileContainingSymbol(url, ServerReflectionV1, "google.rpc.BadRequest")
    ).filter((f) => f.name === "google/rpc/error_details.proto");
    const fieldViolation = badRequest?.messageType
      .find((m) => m.name === "BadRequest")
      ?.nestedType.find((m) => m.name === "FieldViolation");
    assert.deepEqual(
      fieldViolation?.field.slice(0, 2).map((f) => f.name),
      ["field", "description"],
    );
  });

  it(
    "buf curl calls a method it learned through reflection, with a token",
    { timeout: 120_000 },
    async () => {
      const out = await tool(BUF, [
        "curl",
        "--http2-prior-knowledge",
        "--protocol",
        "grpc",
        "-H",
        `authorization: Bearer ${token}`,
        "--data",
        "{}",
        `${url}/nexusflow.v1.WorkflowService/ListWorkflows`,
      ]);
      assert.deepEqual(JSON.parse(out), { workflows: [{ name: "from-the-fake", version: 7 }] });
    },
  );

  it("grpcurl lists, describes and invokes", { timeout: 900_000 }, async (t) => {
    const bin = await grpcurl();
    const missing = missingGrpcurl(bin);
    if (missing !== undefined || bin === undefined) {
      t.skip(missing);
      return;
    }
    const list = await tool(bin, ["-plaintext", hostPort, "list"]);
    assert.deepEqual(list.trim().split("\n").sort(), SERVICES);
    const described = await tool(bin, [
      "-plaintext",
      hostPort,
      "describe",
      "nexusflow.v1.WorkflowService.StartRun",
    ]);
    assert.match(
      described,
      /rpc StartRun \( \.nexusflow\.v1\.StartRunRequest \) returns \( \.nexusflow\.v1\.StartRunResponse \)/,
    );
    const message = await tool(bin, ["-plaintext", hostPort, "describe", "nexusflow.v1.ListRunsRequest"]);
    assert.match(message, /google\.protobuf\.Timestamp created_after = 4;/);
    const called = await tool(bin, [
      "-plaintext",
      "-H",
      `authorization: Bearer ${token}`,
      "-d",
      "{}",
      hostPort,
      "nexusflow.v1.WorkflowService/ListWorkflows",
    ]);
    assert.deepEqual(JSON.parse(called), { workflows: [{ name: "from-the-fake", version: 7 }] });
    await assert.rejects(
      tool(bin, ["-plaintext", "-d", "{}", hostPort, "nexusflow.v1.WorkflowService/ListWorkflows"]),
      /Unauthenticated|missing bearer token/,
    );
    for (const type of DETAIL_TYPES) {
      const detail = await tool(bin, ["-plaintext", hostPort, "describe", type]);
      assert.match(detail, new RegExp(`${type.replaceAll(".", "\\.")} is a message`), type);
    }
    // An error with a BadRequest detail: grpcurl looks the detail's type up and prints it decoded.
    const failed = await tool(bin, [
      "-plaintext",
      "-H",
      `authorization: Bearer ${token}`,
      "-d",
      '{"name": "x", "version": -1}',
      hostPort,
      "nexusflow.v1.WorkflowService/GetWorkflow",
    ]).then(
      (out) => assert.fail(`GetWorkflow succeeded: ${out}`),
      (e: unknown) => String(e),
    );
    assert.match(failed, /Code: InvalidArgument/);
    assert.match(failed, /"@type": "type\.googleapis\.com\/google\.rpc\.BadRequest"/);
    assert.match(failed, /"field": "version",\s*"description": "must not be negative"/);
  });
});
