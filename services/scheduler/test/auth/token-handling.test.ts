/**
 * Bad tokens on a running scheduler: each is refused UNAUTHENTICATED (a missing scope
 * PERMISSION_DENIED, keys that cannot be fetched UNAVAILABLE) with a message saying what is wrong
 * and never the token itself; keys rotated at the JWKS URL are picked up without a restart.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { clientConstructor, createTokenVerifier } from "@nexusflow/common";
import { create } from "@bufbuild/protobuf";
import { ListWorkflowsRequestSchema, WorkflowService } from "@nexusflow/gen";
import { type CryptoKey, type JWK, SignJWT, exportJWK, generateKeyPair } from "jose";
import type { Scheduler } from "../../src/scheduler.js";
import { startTestDatabase, startTestScheduler } from "../support.js";
import { TEST_AUDIENCE, TEST_ISSUER } from "./tokens.js";

const T = { timeout: 60_000 };

interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(kid: string): Promise<Key> {
  const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  return {
    kid,
    privateKey: pair.privateKey,
    jwk: { ...(await exportJWK(pair.publicKey)), kid, alg: "EdDSA" },
  };
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");

describe("token handling on the scheduler", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let dir: string;
  let scheduler: Scheduler;
  let jwks: Server;
  /** The keys the JWKS URL serves now; undefined: it answers 500. */
  let served: Key[] | undefined;
  let fetches = 0;
  let k1: Key;
  let client: grpc.Client & {
    listWorkflows(
      req: object,
      md: grpc.Metadata,
      cb: (e: grpc.ServiceError | null, r?: unknown) => void,
    ): grpc.ClientUnaryCall;
  };

  const sign = (
    key: Key,
    options: {
      claims?: Record<string, unknown>;
      sub?: string | undefined;
      iss?: string;
      aud?: string;
      exp?: number | string;
      nbf?: number | string;
    } = {},
  ): Promise<string> => {
    const jwt = new SignJWT({ scope: "workflows:read", ...options.claims })
      .setProtectedHeader({ alg: "EdDSA", kid: key.kid })
      .setIssuer(options.iss ?? TEST_ISSUER)
      .setAudience(options.aud ?? TEST_AUDIENCE)
      .setExpirationTime(options.exp ?? "10m");
    if (options.sub !== undefined) jwt.setSubject(options.sub);
    if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
    return jwt.sign(key.privateKey);
  };

  /** ListWorkflows with `metadata`: its status code and details (OK when answered). */
  const list = (metadata: grpc.Metadata): Promise<{ code: grpc.status; details: string }> =>
    new Promise((resolve) => {
      client.listWorkflows(create(ListWorkflowsRequestSchema), metadata, (e) =>
        resolve(e === null ? { code: grpc.status.OK, details: "" } : { code: e.code, details: e.details }),
      );
    });
  const withHeader = (key: string, value: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set(key, value);
    return m;
  };
  const bearer = (token: string): grpc.Metadata => withHeader("authorization", `Bearer ${token}`);

  /** Asserts `token` is refused with `code` and details matching `pattern`, never echoing the token. */
  const refused = async (token: string, code: grpc.status, pattern: RegExp): Promise<void> => {
    const r = await list(bearer(token));
    assert.equal(r.code, code, `${r.details}`);
    assert.match(r.details, pattern);
    for (const part of token.split(".").filter((p) => p.length >= 8))
      assert.ok(!r.details.includes(part), `the message echoes the token: ${r.details}`);
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-tokens-"));
    k1 = await newKey("k1");
    served = [k1];
    jwks = createServer((_req, res) => {
      fetches++;
      if (served === undefined) {
        res.writeHead(500).end("down");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: served.map((k) => k.jwk) }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", resolve));
    const port = (jwks.address() as AddressInfo).port;
    db = await startTestDatabase();
    scheduler = await startTestScheduler(db.url, {
      auth: await createTokenVerifier({
        jwksUrl: `http://127.0.0.1:${port}/jwks.json`,
        issuer: TEST_ISSUER,
        audience: TEST_AUDIENCE,
        // An unknown kid fetches the set again at once (the default waits 30 s between fetches).
        jwksCooldownMs: 0,
      }),
    });
    const Ctor = clientConstructor(WorkflowService);
    client = new Ctor(scheduler.address, grpc.credentials.createInsecure()) as unknown as typeof client;
  });

  after(async () => {
    client?.close();
    await scheduler?.stop();
    await db?.close();
    await new Promise<void>((resolve) => (jwks === undefined ? resolve() : jwks.close(() => resolve())));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it("accepts a valid token, in the authorization key only, with any case of Bearer", T, async () => {
    const token = await sign(k1, { sub: "reader" });
    assert.equal((await list(bearer(token))).code, grpc.status.OK);
    assert.equal((await list(withHeader("authorization", `bearer ${token}`))).code, grpc.status.OK);
    for (const key of ["x-authorization", "token", "x-api-key", "authentication"]) {
      const r = await list(withHeader(key, `Bearer ${token}`));
      assert.equal(r.code, grpc.status.UNAUTHENTICATED, `${key}: ${r.details}`);
      assert.match(r.details, /missing bearer token/);
    }
    for (const value of [token, `Basic ${token}`, `Bearer`, `Bearer ${token} extra`]) {
      const r = await list(withHeader("authorization", value));
      assert.equal(r.code, grpc.status.UNAUTHENTICATED, r.details);
      assert.match(r.details, /not 'Bearer <JWT>'/);
      assert.ok(!r.details.includes(token.split(".")[2] ?? "?"), r.details);
    }
  });

  it("refuses expired, not-yet-valid, foreign and subjectless tokens: UNAUTHENTICATED", T, async () => {
    const now = Math.floor(Date.now() / 1000);
    await refused(await sign(k1, { sub: "r", exp: now - 120 }), grpc.status.UNAUTHENTICATED, /expired/);
    await refused(
      await sign(k1, { sub: "r", nbf: now + 600 }),
      grpc.status.UNAUTHENTICATED,
      /not valid before/,
    );
    await refused(
      await sign(k1, { sub: "r", aud: "someone-else" }),
      grpc.status.UNAUTHENTICATED,
      /audience "someone-else" is not "nexusflow"/,
    );
    await refused(
      await sign(k1, { sub: "r", iss: "https://evil.test" }),
      grpc.status.UNAUTHENTICATED,
      /issuer "https:\/\/evil.test" is not/,
    );
    await refused(await sign(k1, {}), grpc.status.UNAUTHENTICATED, /no "sub" claim/);
    // Within the clock tolerance (30 s), a token just expired still counts.
    assert.equal((await list(bearer(await sign(k1, { sub: "r", exp: now - 5 })))).code, grpc.status.OK);
  });

  it("refuses alg none, HS256 and forged or malformed tokens: UNAUTHENTICATED", T, async () => {
    const payload = {
      sub: "r",
      iss: TEST_ISSUER,
      aud: TEST_AUDIENCE,
      exp: Math.floor(Date.now() / 1000) + 600,
      scope: "admin",
    };
    await refused(`${b64({ alg: "none" })}.${b64(payload)}.`, grpc.status.UNAUTHENTICATED, /./);
    await refused(
      `${b64({ alg: "none", kid: "k1" })}.${b64(payload)}.`,
      grpc.status.UNAUTHENTICATED,
      /algorithm is not allowed|malformed/,
    );
    // HS256 keyed with the public key's bytes (the classic algorithm confusion).
    const hs = await new SignJWT(payload)
      .setProtectedHeader({ alg: "HS256", kid: "k1" })
      .sign(Buffer.from(k1.jwk.x ?? "", "base64url"));
    await refused(hs, grpc.status.UNAUTHENTICATED, /algorithm is not allowed/);
    // A valid token's payload swapped for one granting admin.
    const [h, , s] = (await sign(k1, { sub: "r" })).split(".");
    await refused(`${h}.${b64(payload)}.${s}`, grpc.status.UNAUTHENTICATED, /signature is invalid/);
    // Signed by a key nobody configured.
    await refused(
      await sign(await newKey("k-unknown"), { sub: "r" }),
      grpc.status.UNAUTHENTICATED,
      /no configured key matches/,
    );
    for (const junk of ["a.b.c", "....", "x".repeat(100), `${b64({ alg: "EdDSA" })}.%%%.zz`])
      await refused(junk, grpc.status.UNAUTHENTICATED, /./);
  });

  it("verifies a large token, and a huge one ends only its own call, unechoed", T, async () => {
    // A large token (a 40 KB claim set) is still verified; one over the 64 KiB of headers HTTP/2
    // takes is reset by the transport (INTERNAL at the client), which ends only that call.
    const large = await sign(k1, { sub: "r", claims: { pad: "p".repeat(30_000) } });
    assert.equal((await list(bearer(large))).code, grpc.status.OK);
    const huge = await sign(k1, { sub: "r", claims: { pad: "p".repeat(64 * 1024) } });
    const r = await list(bearer(huge));
    assert.notEqual(r.code, grpc.status.OK, r.details);
    assert.ok(!r.details.includes("pppppppp"), `the message echoes the token: ${r.details.slice(0, 200)}`);
    // The scheduler still serves.
    assert.equal((await list(bearer(await sign(k1, { sub: "r" })))).code, grpc.status.OK);
  });

  it("tells a missing scope apart: PERMISSION_DENIED naming it", T, async () => {
    await refused(
      await sign(k1, { sub: "r", claims: { scope: "runs:read" } }),
      grpc.status.PERMISSION_DENIED,
      /^nexusflow\.v1\.WorkflowService\/ListWorkflows requires the scope "workflows:read"$/,
    );
  });

  it("follows keys rotated at the JWKS URL, and is UNAVAILABLE when it cannot fetch them", T, async () => {
    const old = await sign(k1, { sub: "r" });
    assert.equal((await list(bearer(old))).code, grpc.status.OK);
    const k2 = await newKey("k2");
    served = [k2];
    const before = fetches;
    // A token of the new key: its unknown kid fetches the set again, and it is accepted.
    assert.equal((await list(bearer(await sign(k2, { sub: "r" })))).code, grpc.status.OK);
    assert.ok(fetches > before, "the JWKS was fetched again");
    // The old key is gone from the set now.
    await refused(old, grpc.status.UNAUTHENTICATED, /no configured key matches/);
    // The URL fails: a token of a key not cached cannot be checked, UNAVAILABLE (worth a retry).
    served = undefined;
    await refused(
      await sign(await newKey("k3"), { sub: "r" }),
      grpc.status.UNAVAILABLE,
      /could not be fetched from the JWKS URL/,
    );
    served = [k2];
  });
});
