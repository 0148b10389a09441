/**
 * gRPC server reflection on the gateway (v1 and v1alpha, no token needed), proved with the real
 * clients: `buf curl` lists services and calls a method it only knows through reflection, and
 * `grpcurl` lists, describes and invokes. The upstream is an in-process fake.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ConnectRouter, createRouterTransport } from "@connectrpc/connect";
import { createTokenVerifier } from "@nexusflow/common";
import { WorkflowService } from "@nexusflow/gen";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { BUF, grpcurl, missingGrpcurl, tool } from "./tools.js";

function fakeUpstream(router: ConnectRouter): void {
  router.service(WorkflowService, {
    listWorkflows: () => ({ workflows: [{ name: "from-the-fake", version: 7 }] }),
  });
}

const SERVICES = ["nexusflow.v1.ArtifactService", "nexusflow.v1.WorkflowService"];

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
  });
});
