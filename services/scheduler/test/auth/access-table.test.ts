/**
 * The one authorization table (`RPC_ACCESS` in @nexusflow/common) against the API: every RPC of
 * every Nexusflow service, of gRPC reflection and of gRPC health, has an entry, and no entry names an RPC that
 * does not exist. A new RPC without a rule fails here (and is refused at run time).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DescService } from "@bufbuild/protobuf";
import {
  AuthError,
  PUBLIC,
  type Principal,
  RPC_ACCESS,
  Scope,
  authorize,
  healthServiceDefinition,
  requiredScope,
  scopesOf,
} from "@nexusflow/common";
import * as gen from "@nexusflow/gen";

const isService = (v: unknown): v is DescService =>
  typeof v === "object" && v !== null && "kind" in v && v.kind === "service";
/** Every service of the generated API, found by kind so that new ones are covered without edits here. */
const API_SERVICES: DescService[] = Object.values(gen as Record<string, unknown>).filter(isService);
const REFLECTION_RPCS = [
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];
/** grpc.health.v1.Health (Check, Watch), served by the scheduler for probes. */
const HEALTH_RPCS = Object.values(healthServiceDefinition).map((m) => m.path.slice(1));
const ALL_RPCS = [
  ...API_SERVICES.flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`)),
  ...REFLECTION_RPCS,
  ...HEALTH_RPCS,
];

const principal = (...scopes: string[]): Principal => ({
  subject: "t",
  scopes: new Set(scopes),
  issuer: undefined,
  expiresAtMs: Date.now() + 60_000,
  claims: {},
});

describe("the authorization table", () => {
  it("covers the whole API", () => {
    assert.ok(API_SERVICES.length >= 3, `found ${API_SERVICES.map((s) => s.typeName).join(", ")}`);
    const missing = ALL_RPCS.filter((rpc) => requiredScope(rpc) === undefined);
    assert.deepEqual(missing, [], "RPCs without an entry in RPC_ACCESS (common/src/auth.ts)");
  });

  it("has no entry for an RPC that does not exist", () => {
    const stale = Object.keys(RPC_ACCESS).filter((rpc) => !ALL_RPCS.includes(rpc));
    assert.deepEqual(stale, []);
  });

  it("gives each RPC the documented scope", () => {
    const expected: Record<string, string> = {
      "nexusflow.v1.WorkflowService/RegisterWorkflow": Scope.WORKFLOWS_WRITE,
      "nexusflow.v1.WorkflowService/GetWorkflow": Scope.WORKFLOWS_READ,
      "nexusflow.v1.WorkflowService/ListWorkflows": Scope.WORKFLOWS_READ,
      "nexusflow.v1.WorkflowService/StartRun": Scope.RUNS_WRITE,
      "nexusflow.v1.WorkflowService/CancelRun": Scope.RUNS_WRITE,
      "nexusflow.v1.WorkflowService/GetRun": Scope.RUNS_READ,
      "nexusflow.v1.WorkflowService/ListRuns": Scope.RUNS_READ,
      "nexusflow.v1.WorkflowService/WatchRun": Scope.RUNS_READ,
      "nexusflow.v1.ExecutorService/Session": Scope.EXECUTOR,
    };
    for (const [rpc, scope] of Object.entries(expected)) assert.equal(requiredScope(rpc), scope, rpc);
    for (const rpc of [...REFLECTION_RPCS, ...HEALTH_RPCS]) assert.equal(requiredScope(rpc), PUBLIC);
  });

  it("lets admin do everything and names the missing scope otherwise", () => {
    for (const rpc of ALL_RPCS) authorize(principal(Scope.ADMIN), rpc);
    assert.throws(
      () => authorize(principal(Scope.RUNS_READ), "nexusflow.v1.WorkflowService/CancelRun"),
      (e: unknown) =>
        e instanceof AuthError && e.code === "PERMISSION_DENIED" && e.scope === Scope.RUNS_WRITE,
    );
    assert.throws(
      () => authorize(principal(Scope.ADMIN), "nexusflow.v1.WorkflowService/NoSuchRpc"),
      (e: unknown) =>
        e instanceof AuthError && e.code === "PERMISSION_DENIED" && /no access rule/.test(e.message),
    );
  });

  it("reads scopes from scope (space-separated), scp (array) and roles", () => {
    assert.deepEqual(
      [...scopesOf({ scope: "runs:read  runs:write", scp: ["workflows:read"], roles: ["admin"] })].sort(),
      ["admin", "runs:read", "runs:write", "workflows:read"],
    );
    assert.deepEqual([...scopesOf({ scp: "executor" })], ["executor"]);
    assert.deepEqual([...scopesOf({ scope: 42, roles: [1, "x"] })], ["x"]);
  });
});
