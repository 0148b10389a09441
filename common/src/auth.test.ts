import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  EXECUTORS_CLAIM,
  type Principal,
  authorize,
  authorizeExecutorId,
  executorIdMatches,
  executorPatternsOf,
  isAuthError,
  scopesOf,
} from "./auth.js";

function principal(subject: string, claims: Record<string, unknown> = {}): Principal {
  const all = { sub: subject, ...claims };
  return { subject, scopes: scopesOf(all), issuer: "iss", expiresAtMs: Date.now() + 60_000, claims: all };
}

function deniedFor(id: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isAuthError(e), String(e));
    assert.equal(e.code, "PERMISSION_DENIED");
    assert.ok(e.message.includes(`may not attach as executor ${JSON.stringify(id)}`), e.message);
    return true;
  };
}

describe("executor identity of a token", () => {
  it("allows the token's subject and the ids of its claim, exact or by a trailing-* prefix", () => {
    const p = principal("fleet", { [EXECUTORS_CLAIM]: ["worker-a", "batch-*"], scope: "executor" });
    for (const id of ["fleet", "worker-a", "batch-", "batch-7f3a"]) authorizeExecutorId(p, id);
    for (const id of ["worker-b", "worker-a2", "batch", "xbatch-1", "Fleet", ""])
      assert.throws(() => authorizeExecutorId(p, id), deniedFor(id));
  });

  it("is not widened by scopes, not even admin", () => {
    assert.throws(
      () => authorizeExecutorId(principal("ops", { scope: "admin" }), "worker-a"),
      deniedFor("worker-a"),
    );
  });

  it("reads the claim as a list of ids or one id, ignoring entries that are not non-empty strings", () => {
    assert.deepEqual(executorPatternsOf({ [EXECUTORS_CLAIM]: "worker-e" }), ["worker-e"]);
    assert.deepEqual(executorPatternsOf({ [EXECUTORS_CLAIM]: ["a", 7, null, "", { b: 1 }, "c*"] }), [
      "a",
      "c*",
    ]);
    for (const v of [undefined, null, 7, { a: "b" }, true])
      assert.deepEqual(executorPatternsOf({ [EXECUTORS_CLAIM]: v }), []);
    authorizeExecutorId(principal("manager", { [EXECUTORS_CLAIM]: ["*"] }), "anything");
  });

  it("matches an id by equality, or by prefix for a pattern ending in *, whatever the text", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (prefix, rest) => {
        assert.ok(executorIdMatches(`${prefix}*`, `${prefix}${rest}`));
        assert.ok(executorIdMatches(`${prefix}${rest}`, `${prefix}${rest}`));
      }),
    );
    fc.assert(
      fc.property(fc.string(), fc.string(), (a, b) => {
        fc.pre(!b.startsWith(a));
        assert.ok(!executorIdMatches(`${a}*`, b));
        if (!a.endsWith("*")) assert.ok(!executorIdMatches(a, b));
      }),
    );
  });
});

void describe("ListReplicas for executors", () => {
  it("an executor token may list the replicas (to open a session to each), and call nothing else of runs:read", () => {
    const executor = principal("ex-1", { scope: "executor" });
    authorize(executor, "nexusflow.v1.ReplicaService/ListReplicas");
    authorize(principal("op", { scope: "runs:read" }), "nexusflow.v1.ReplicaService/ListReplicas");
    assert.throws(
      () => authorize(executor, "nexusflow.v1.WorkflowService/GetRun"),
      (e: unknown) => isAuthError(e) && e.code === "PERMISSION_DENIED" && e.scope === "runs:read",
    );
    assert.throws(
      () =>
        authorize(principal("x", { scope: "workflows:read" }), "nexusflow.v1.ReplicaService/ListReplicas"),
      (e: unknown) => isAuthError(e) && e.code === "PERMISSION_DENIED" && e.scope === "runs:read",
    );
  });
});
