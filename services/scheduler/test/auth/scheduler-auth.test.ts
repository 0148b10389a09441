/**
 * Authentication on a real scheduler (auth on): an executor Session needs a token with the
 * `executor` scope, WorkflowService calls need their scopes, and reflection (v1 and v1alpha) is
 * public; proved with raw grpc-js sessions, the real Executor, a Connect client, `buf curl` and
 * `grpcurl`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { access, mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, createLogger, createTokenVerifier } from "@nexusflow/common";
import { Executor, isExecutorError } from "@nexusflow/executor";
import { ExecutorService, SessionRequestSchema, type SessionResponse } from "@nexusflow/gen";
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from "jose";
import type { Scheduler } from "../../src/scheduler.js";
import { EXECUTOR_MAIN, ServiceProcess } from "../e2e/processes.js";
import { startTestDatabase, startTestScheduler, workflowClient } from "../support.js";

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");
const ISSUER = "https://issuer.test";
const AUDIENCE = "nexusflow";
const T = { timeout: 60_000 };

/** Opens a raw Session with `metadata` and returns how it ended or its first message. */
function openSession(
  address: string,
  metadata: grpc.Metadata,
): Promise<{ status?: grpc.StatusObject; message?: SessionResponse }> {
  const Ctor = clientConstructor(ExecutorService);
  const client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    session(metadata: grpc.Metadata): grpc.ClientDuplexStream<unknown, SessionResponse>;
  };
  return new Promise((resolve) => {
    const call = client.session(metadata);
    const done = (r: { status?: grpc.StatusObject; message?: SessionResponse }): void => {
      call.cancel();
      client.close();
      resolve(r);
    };
    call.on("data", (m: SessionResponse) => done({ message: m }));
    call.on("error", () => undefined);
    call.on("status", (s: grpc.StatusObject) => done({ status: s }));
    call.write(
      create(SessionRequestSchema, {
        // The subject of the tests' executor tokens: a session attaches as its token's subject.
        message: { case: "attach", value: { executorId: "executor-1", taskTypes: ["noop"], slots: 1 } },
      }),
    );
  });
}

const bearer = (token: string): grpc.Metadata => {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
};

/** The listing names the scheduler's services, and only Nexusflow services. */
function assertServices(listing: string): void {
  const names = listing.trim().split("\n");
  for (const name of [
    "nexusflow.v1.ExecutorService",
    "nexusflow.v1.WorkflowService",
    "grpc.health.v1.Health",
  ]) {
    assert.ok(names.includes(name), `${name} is listed: ${names.join(", ")}`);
  }
  assert.ok(
    names.every((n) => n.startsWith("nexusflow.v1.") || n === "grpc.health.v1.Health"),
    names.join(", "),
  );
}

async function grpcurlBinary(): Promise<string | undefined> {
  const bin = join(ROOT, ".cache", "bin");
  const file = join(bin, "grpcurl");
  const exists = () =>
    access(file).then(
      () => true,
      () => false,
    );
  if (await exists()) return file;
  try {
    await run("go", ["version"]);
  } catch {
    if (process.env["CI"] === "true") throw new Error("grpcurl is required under CI=true: install Go");
    return undefined;
  }
  await mkdir(bin, { recursive: true });
  // Built privately and renamed into place, so a concurrent build never exposes half a binary.
  const staging = await mkdtemp(join(bin, ".grpcurl-"));
  try {
    await run("go", ["install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"], {
      env: { ...process.env, GOBIN: staging },
      timeout: 900_000,
    });
    await rename(join(staging, "grpcurl"), file);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return (await exists()) ? file : undefined;
}

describe("scheduler authentication", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let scheduler: Scheduler;
  let dir: string;
  let privateKey: CryptoKey;

  const sign = (claims: Record<string, unknown>, sub = "executor-1"): Promise<string> =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "EdDSA", kid: "k1" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(sub)
      .setExpirationTime("10m")
      .sign(privateKey);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-sched-auth-"));
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    privateKey = pair.privateKey;
    const jwkFile = join(dir, "key.jwk.json");
    await writeFile(
      jwkFile,
      JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "EdDSA" }),
    );
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, {
      auth: await createTokenVerifier({ publicKeyFiles: [jwkFile], issuer: ISSUER, audience: AUDIENCE }),
    });
  });

  after(async () => {
    await scheduler?.stop();
    await db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a Session without a token: UNAUTHENTICATED", T, async () => {
    const { status } = await openSession(scheduler.address, new grpc.Metadata());
    assert.equal(status?.code, grpc.status.UNAUTHENTICATED);
    assert.match(status?.details ?? "", /missing bearer token/);
    const bad = await openSession(scheduler.address, bearer("not-a-token"));
    assert.equal(bad.status?.code, grpc.status.UNAUTHENTICATED);
  });

  it("refuses a Session whose token lacks the executor scope: PERMISSION_DENIED", T, async () => {
    const { status } = await openSession(
      scheduler.address,
      bearer(await sign({ scope: "runs:read runs:write" })),
    );
    assert.equal(status?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(status?.details, 'nexusflow.v1.ExecutorService/Session requires the scope "executor"');
  });

  it("attaches a Session with an executor token, and the real Executor with one", T, async () => {
    const { message } = await openSession(scheduler.address, bearer(await sign({ scope: "executor" })));
    assert.equal(message?.message.case, "attachAck");

    const refused = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "no-token",
      logger: createLogger("executor", "silent"),
    });
    await assert.rejects(refused.start(), (e: unknown) => isExecutorError(e, "ATTACH_REFUSED"));

    const executor = new Executor({
      schedulerAddress: scheduler.address,
      executorId: "with-token",
      logger: createLogger("executor", "silent"),
      metadata: bearer(await sign({ scope: "executor" }, "with-token")),
    });
    try {
      await executor.start();
      assert.equal(executor.state, "ATTACHED");
    } finally {
      await executor.stop();
    }
  });

  it(
    "an executor process reads EXECUTOR_TOKEN_FILE for every session: it waits for the file, then attaches",
    T,
    async () => {
      const tokenFile = join(dir, "executor.token");
      const executor = new ServiceProcess("token-file", EXECUTOR_MAIN, {
        SCHEDULER_ADDRESS: scheduler.address,
        EXECUTOR_ID: "token-file",
        EXECUTOR_TOKEN_FILE: tokenFile,
      });
      try {
        // No file yet: the attempt fails and is retried with backoff (not refused for good).
        const retried = await executor.waitForLog(
          "a failed attempt to attach",
          (l) => l.msg === "could not attach to the scheduler; retrying",
          60_000,
        );
        assert.match(String(retried["details"]), /cannot make the session's metadata: .*executor\.token/);
        assert.ok(executor.alive, `the executor is still trying\n${executor.tail()}`);
        assert.ok(
          !executor.lines.some((l) => l.msg === "executor attached to the scheduler"),
          "not attached without the token file",
        );
        await writeFile(tokenFile, `${await sign({ scope: "executor" }, "token-file")}\n`);
        await executor.waitForLog(
          "the attach once the file is there",
          (l) => l.msg === "executor attached to the scheduler",
          60_000,
        );
      } finally {
        await executor.kill();
      }
    },
  );

  it("checks WorkflowService calls (as forwarded by the gateway) against their scopes", T, async () => {
    const client = workflowClient(scheduler.address);
    const noToken = await client.listWorkflows({}).catch((e: unknown) => e);
    assert.ok(noToken instanceof ConnectError && noToken.code === Code.Unauthenticated);
    const reader = await sign({ scope: "workflows:read" }, "someone");
    const listed = await client.listWorkflows({}, { headers: { authorization: `Bearer ${reader}` } });
    assert.deepEqual(listed.workflows, []);
    const denied = await client
      .startRun({ workflowName: "x" }, { headers: { authorization: `Bearer ${reader}` } })
      .catch((e: unknown) => e);
    assert.ok(denied instanceof ConnectError && denied.code === Code.PermissionDenied, String(denied));
  });

  it("serves reflection v1 and v1alpha without a token (buf curl)", T, async () => {
    for (const protocol of ["grpc-v1", "grpc-v1alpha"]) {
      const { stdout } = await run(join(ROOT, "node_modules", ".bin", "buf"), [
        "curl",
        "--http2-prior-knowledge",
        // grpc-js speaks gRPC only; buf curl's default protocol is Connect.
        "--protocol",
        "grpc",
        "--reflect-protocol",
        protocol,
        "--list-services",
        `http://${scheduler.address}`,
      ]);
      assertServices(stdout);
    }
  });

  it("is listed and described by grpcurl", { timeout: 900_000 }, async (t) => {
    const bin = await grpcurlBinary();
    if (bin === undefined) {
      t.skip("grpcurl not available (no Go on the PATH)");
      return;
    }
    const { stdout } = await run(bin, ["-plaintext", scheduler.address, "list"]);
    assertServices(stdout);
    const described = await run(bin, [
      "-plaintext",
      scheduler.address,
      "describe",
      "nexusflow.v1.ExecutorService",
    ]);
    assert.match(
      described.stdout,
      /rpc Session \( stream \.nexusflow\.v1\.SessionRequest \) returns \( stream \.nexusflow\.v1\.SessionResponse \)/,
    );
    // Health needs no token and, described by reflection, no .proto file.
    const health = await run(bin, ["-plaintext", scheduler.address, "grpc.health.v1.Health/Check"]);
    assert.deepEqual(JSON.parse(health.stdout), { status: "SERVING" });
  });
});
