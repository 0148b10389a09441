/**
 * REST routes compiled from the real Nexusflow services, and the request messages built from path,
 * query and body: every annotated RPC gets a route, and precedence, binding and proto3 JSON rules hold.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DescMessage, type MessageShape, create, hasOption } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ArtifactService, RunStatus, WorkflowService } from "@nexusflow/gen";
import { http } from "@nexusflow/gen/google/api/annotations_pb";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { buildRequest } from "./request.js";
import { type RestRoute, compileRoutes, matchRoute } from "./routes.js";
import { httpStatusOf, statusJson } from "./status.js";

const routes = compileRoutes([WorkflowService, ArtifactService]);

function request(
  method: string,
  url: string,
  body?: unknown,
): { rpc: string; message: MessageShape<DescMessage> } {
  const u = new URL(url, "http://x");
  const found = matchRoute(routes, method, u.pathname);
  assert.equal(found.kind, "match", `${method} ${url}`);
  const { route, params } = found as { route: RestRoute; params: ReadonlyMap<string, string> };
  return {
    rpc: `${route.service.typeName}/${route.method.name}`,
    message: buildRequest(route, params, u.searchParams, body as never),
  };
}

function rejected(method: string, url: string, body?: unknown): ConnectError {
  try {
    request(method, url, body);
  } catch (e) {
    assert.ok(e instanceof ConnectError);
    return e;
  }
  assert.fail(`${method} ${url} was accepted`);
}

describe("REST routes", () => {
  it("has a route for every annotated RPC, and one per additional binding", () => {
    for (const service of [WorkflowService, ArtifactService]) {
      for (const method of service.methods) {
        if (!hasOption(method, http)) continue;
        assert.ok(
          routes.some((r) => r.method === method),
          `${service.typeName}.${method.name}`,
        );
      }
    }
    assert.equal(routes.filter((r) => r.method.name === "GetWorkflow").length, 2);
  });

  it("chooses the most specific template and honours custom verbs", () => {
    assert.equal(request("GET", "/v1/runs/r1").rpc, "nexusflow.v1.WorkflowService/GetRun");
    assert.equal(request("GET", "/v1/runs/r1:watch").rpc, "nexusflow.v1.WorkflowService/WatchRun");
    assert.equal(request("POST", "/v1/runs/r1:cancel").rpc, "nexusflow.v1.WorkflowService/CancelRun");
    assert.equal(request("GET", "/v1/runs/r1/artifacts").rpc, "nexusflow.v1.ArtifactService/ListArtifacts");
    const explain = request("GET", "/v1/runs/r1/steps/charge:explain?compensation=true");
    assert.equal(explain.rpc, "nexusflow.v1.WorkflowService/ExplainPending");
    assert.deepEqual(
      { ...explain.message, $typeName: undefined },
      { $typeName: undefined, runId: "r1", stepId: "charge", compensation: true },
    );
    assert.deepEqual(matchRoute(routes, "GET", "/v1/runs/r1:cancel"), {
      kind: "method-not-allowed",
      allowed: ["POST"],
    });
    assert.deepEqual(matchRoute(routes, "DELETE", "/v1/workflows"), {
      kind: "method-not-allowed",
      allowed: ["GET", "POST"],
    });
    assert.deepEqual(matchRoute(routes, "GET", "/v2/runs"), { kind: "none" });
    assert.deepEqual(matchRoute(routes, "GET", "/nexusflow.v1.WorkflowService/GetRun"), { kind: "none" });
  });

  it("binds path variables, including {key=**} and additional bindings", () => {
    assert.deepEqual(
      request("GET", "/v1/workflows/orders/versions/3").message,
      create(WorkflowService.method.getWorkflow.input, { name: "orders", version: 3 }),
    );
    assert.deepEqual(
      request("GET", "/v1/artifacts/runs/r1/fetch/out%20put.json?presign=true").message,
      create(ArtifactService.method.getArtifact.input, { key: "runs/r1/fetch/out put.json", presign: true }),
    );
    assert.deepEqual(
      request("GET", "/v1/runs/r1/steps/fetch/logs?attempt=2&follow=true").message,
      create(ArtifactService.method.getTaskLogs.input, {
        runId: "r1",
        stepId: "fetch",
        attempt: 2,
        follow: true,
      }),
    );
  });

  it("reads query parameters: repeated, enums by name or number, timestamps, maps, proto or JSON names", () => {
    const { message } = request(
      "GET",
      "/v1/runs?workflow_name=orders&statuses=RUNNING&statuses=RUN_STATUS_FAILED&statuses=3" +
        "&createdAfter=2025-01-02T03:04:05Z&labels[env]=prod&labels[team]=a%20b&page_size=5",
    );
    assert.deepEqual(
      message,
      create(WorkflowService.method.listRuns.input, {
        workflowName: "orders",
        statuses: [RunStatus.RUNNING, RunStatus.FAILED, RunStatus.SUCCEEDED],
        createdAfter: timestampFromMs(Date.UTC(2025, 0, 2, 3, 4, 5)),
        labels: { env: "prod", team: "a b" },
        pageSize: 5,
      }),
    );
  });

  it("reads a map key such as __proto__ as an entry like any other (the filter is not dropped)", () => {
    const { message } = request("GET", "/v1/runs?labels[__proto__]=x&labels[constructor]=y");
    assert.deepEqual(
      { ...(message as unknown as { labels: Record<string, string> }).labels },
      {
        ["__proto__"]: "x",
        constructor: "y",
      },
    );
  });

  it("reads nested fields from dotted query parameters (proto or JSON names)", () => {
    // No annotated GET of the API has a nested message, so bind RegisterWorkflow to a GET here.
    const route: RestRoute = {
      ...(routes.find((r) => r.method.name === "RegisterWorkflow") as RestRoute),
      httpMethod: "GET",
      body: "",
    };
    const message = buildRequest(
      route,
      new Map(),
      new URLSearchParams("spec.name=orders&spec.version=2&spec.defaults.timeouts.startToClose=5s"),
      undefined,
    );
    assert.deepEqual(
      message,
      create(WorkflowService.method.registerWorkflow.input, {
        definition: {
          case: "spec",
          value: { name: "orders", version: 2, defaults: { timeouts: { startToClose: "5s" } } },
        },
      }),
    );
  });

  it('takes the whole body with body: "*", path variables winning over body fields', () => {
    const { message } = request("POST", "/v1/workflows/orders/runs", {
      workflow_name: "ignored",
      input: { amount: 3 },
      labels: { a: "b" },
      idempotencyKey: "k1",
    });
    assert.deepEqual(
      message,
      create(WorkflowService.method.startRun.input, {
        workflowName: "orders",
        input: {
          kind: {
            case: "structValue",
            value: { fields: { amount: { kind: { case: "numberValue", value: 3 } } } },
          },
        },
        labels: { a: "b" },
        idempotencyKey: "k1",
      }),
    );
    assert.deepEqual(
      request("POST", "/v1/runs/r1:cancel").message,
      create(WorkflowService.method.cancelRun.input, { runId: "r1" }),
    );
  });

  it("reports every bad parameter as INVALID_ARGUMENT with a BadRequest naming it", () => {
    const err = rejected(
      "GET",
      "/v1/runs?page_size=ten&statuses=SLEEPING&created_after=yesterday&bogus=1&page_size=2",
    );
    assert.equal(err.code, Code.InvalidArgument);
    const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
    assert.deepEqual(fields.sort(), ["bogus", "created_after", "page_size", "statuses"]);
    assert.equal(rejected("POST", "/v1/workflows?x=1", {}).code, Code.InvalidArgument);
    assert.equal(rejected("POST", "/v1/workflows", { specJsn: "{}" }).code, Code.InvalidArgument);
    assert.equal(rejected("POST", "/v1/workflows", ["not", "an", "object"]).code, Code.InvalidArgument);
    assert.equal(rejected("GET", "/v1/runs?workflow_name=a&workflow_name=b").code, Code.InvalidArgument);
    assert.equal(rejected("GET", "/v1/runs?labels=x").code, Code.InvalidArgument);
    // One field under its two names: given twice, as a repeated name would be.
    const twice = rejected("GET", "/v1/runs?pageSize=1&page_size=2");
    assert.match(twice.rawMessage, /given more than once \(also as pageSize\)/);
    assert.equal(rejected("GET", "/v1/runs?labels[env]=a&labels[env]=b").code, Code.InvalidArgument);
    assert.equal(
      rejected("GET", "/v1/runs?labels[env]=a&labels%5Benv%5D=b&labels[env]=c").code,
      Code.InvalidArgument,
    );
    assert.equal(
      rejected("GET", "/v1/runs/r1/artifacts?run_id=r2").code,
      Code.InvalidArgument,
      "bound by the path",
    );
  });

  it("writes errors as google.rpc.Status JSON with the matching HTTP status", () => {
    const err = rejected("GET", "/v1/runs?page_size=ten");
    assert.deepEqual(statusJson(err), {
      code: 3,
      message: 'page_size: expected an integer, got "ten"',
      details: [
        {
          "@type": "type.googleapis.com/google.rpc.BadRequest",
          fieldViolations: [{ field: "page_size", description: 'expected an integer, got "ten"' }],
        },
      ],
    });
    const table: [Code, number][] = [
      [Code.InvalidArgument, 400],
      [Code.NotFound, 404],
      [Code.AlreadyExists, 409],
      [Code.Unauthenticated, 401],
      [Code.PermissionDenied, 403],
      [Code.Unavailable, 503],
      [Code.ResourceExhausted, 429],
      [Code.FailedPrecondition, 400],
      [Code.Unimplemented, 501],
      [Code.DeadlineExceeded, 504],
      [Code.Internal, 500],
      [Code.Canceled, 499],
    ];
    for (const [code, status] of table) assert.equal(httpStatusOf(code), status, Code[code]);
  });
});
