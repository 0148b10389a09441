/**
 * Test tokens for a scheduler with authentication on: an Ed25519 issuer whose public key a verifier
 * trusts, signing JWTs with any subject and claims (scopes, `nexusflow_executors`).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { createTokenVerifier, type TokenVerifier } from "@nexusflow/common";
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from "jose";

/** The `iss` of test tokens. */
export const TEST_ISSUER = "https://issuer.test";
/** The `aud` of test tokens. */
export const TEST_AUDIENCE = "nexusflow";

/** Signs test tokens and makes verifiers that trust them. */
export interface TestIssuer {
  /** A token for `subject` with `claims` (e.g. `{ scope: "executor" }`), valid for 10 minutes. */
  sign(subject: string, claims: Record<string, unknown>): Promise<string>;
  /** A verifier trusting this issuer's key (for `SchedulerOptions.auth`). */
  verifier(): Promise<TokenVerifier>;
}

/** A new key pair; its public JWK is written into `dir`. */
export async function createTestIssuer(dir: string): Promise<TestIssuer> {
  const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const privateKey: CryptoKey = pair.privateKey;
  const jwkFile = join(dir, "issuer.jwk.json");
  await writeFile(
    jwkFile,
    JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "test", alg: "EdDSA" }),
  );
  return {
    sign: (subject, claims) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "EdDSA", kid: "test" })
        .setIssuer(TEST_ISSUER)
        .setAudience(TEST_AUDIENCE)
        .setSubject(subject)
        .setExpirationTime("10m")
        .sign(privateKey),
    verifier: () =>
      createTokenVerifier({ publicKeyFiles: [jwkFile], issuer: TEST_ISSUER, audience: TEST_AUDIENCE }),
  };
}

/** grpc-js metadata carrying `authorization: Bearer <token>`. */
export function bearer(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}

/** A Connect interceptor sending `token` with every call. */
export function withToken(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
