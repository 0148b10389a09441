/**
 * Routing with authentication on (issue #22): the replica a call reaches checks its token and scope
 * before forwarding anything, and the run's owner checks the same token again. The two replicas
 * trust different audiences, so that a token only the first accepts is refused by the owner.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code } from "@connectrpc/connect";
import { createTokenVerifier, jsonToValue } from "@nexusflow/common";
import { RunStatus } from "@nexusflow/gen";
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from "jose";
import type { Scheduler } from "../../src/scheduler.js";
import { refusal, startTestDatabase, startTestScheduler, waitFor, workflowClient } from "../support.js";

const ISSUER = "https://issuer.test";
const T = { timeout: 60_000 };

describe("routing with authentication", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let privateKey: CryptoKey;
  let a: Scheduler;
  let b: Scheduler;

  const sign = (scope: string, audience: string | string[]): Promise<string> =>
    new SignJWT({ scope })
      .setProtectedHeader({ alg: "EdDSA", kid: "k1" })
      .setIssuer(ISSUER)
      .setAudience(audience)
      .setSubject("routing-test")
      .setExpirationTime("10m")
      .sign(privateKey);
  const headers = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-routing-auth-"));
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    privateKey = pair.privateKey;
    const jwkFile = join(dir, "key.jwk.json");
    await writeFile(
      jwkFile,
      JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "EdDSA" }),
    );
    db = await startTestDatabase();
    const replica = async (audience: string): Promise<Scheduler> =>
      startTestScheduler(db.url, {
        cluster: true,
        partitionLeaseMs: 1000,
        auth: await createTokenVerifier({ publicKeyFiles: [jwkFile], issuer: ISSUER, audience }),
      });
    a = await replica("replica-a");
    b = await replica("replica-b");
    await waitFor(
      "an even split",
      () => a.partitions.held().length === 8 && b.partitions.held().length === 8,
    );
  });
  after(async () => {
    await b?.stop();
    await a?.stop();
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("checks the token at the first replica before forwarding, and again at the owner", T, async () => {
    const both = await sign("workflows:write runs:write runs:read", ["replica-a", "replica-b"]);
    await workflowClient(a.address).registerWorkflow(
      {
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "routing-auth",
            version: 1,
            steps: [{ id: "step", type: "routing.nobody" }],
          }),
        },
      },
      headers(both),
    );
    const { run } = await workflowClient(a.address).startRun(
      { workflowName: "routing-auth", input: jsonToValue({}) },
      headers(both),
    );
    const runId = run?.id ?? "";
    assert.ok(a.engine.isActive(runId), "A holds the run");
    const sent = b.replicaRouter?.stats.forwarded;

    // No runs:write: B refuses, forwarding nothing.
    const readOnly = await refusal(
      workflowClient(b.address).cancelRun(
        { runId },
        headers(await sign("runs:read", ["replica-a", "replica-b"])),
      ),
    );
    assert.equal(readOnly.code, Code.PermissionDenied);
    assert.match(readOnly.message, /requires the scope "runs:write"/);
    const none = await refusal(workflowClient(b.address).cancelRun({ runId }));
    assert.equal(none.code, Code.Unauthenticated);
    assert.equal(b.replicaRouter?.stats.forwarded, sent, "nothing was forwarded");
    assert.ok(a.engine.isActive(runId));

    // Accepted by B, not by A (another audience): the owner refuses the same token.
    const onlyB = await refusal(
      workflowClient(b.address).cancelRun({ runId }, headers(await sign("runs:write", "replica-b"))),
    );
    assert.equal(onlyB.code, Code.Unauthenticated);
    assert.equal(b.replicaRouter?.stats.forwarded, (sent ?? 0) + 1, "forwarded once, refused by A");
    assert.ok(a.engine.isActive(runId), "the run was not cancelled");

    // A token both accept: cancelled at A.
    const cancelled = await workflowClient(b.address).cancelRun({ runId }, headers(both));
    assert.equal(cancelled.run?.status, RunStatus.CANCELLED);
    assert.equal(a.engine.isActive(runId), false);
  });
});
