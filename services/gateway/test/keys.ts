/**
 * Test keys and tokens: RSA, EC P-256 and Ed25519 key pairs written as PEM and JWK files into a
 * temporary directory, a JWKS endpoint on port 0 whose keys can be rotated, and a token signer.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CryptoKey, type JWK, SignJWT, exportJWK, exportSPKI, generateKeyPair } from "jose";

/** The algorithms under test. */
export type Alg = "RS256" | "ES256" | "EdDSA";

/** A key pair with its files. */
export interface TestKey {
  alg: Alg;
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  /** The public key as PEM (SPKI). */
  pemFile: string;
  /** The public key as a JWK file with `kid`. */
  jwkFile: string;
}

/** Claims and header overrides of a test token. */
export interface TokenSpec {
  sub?: string | undefined;
  iss?: string;
  aud?: string | string[];
  scope?: string;
  scp?: string[];
  roles?: string[];
  /** Seconds from now; undefined leaves `exp` out. */
  expIn?: number | undefined;
  /** Seconds from now. */
  nbfIn?: number;
  kid?: string | undefined;
}

export const ISSUER = "https://issuer.test";
export const AUDIENCE = "nexusflow-api";

/** Temporary directory and keys; `close()` removes the files. */
export interface TestKeys {
  dir: string;
  keys: Record<Alg, TestKey>;
  /** A key nobody trusts. */
  stranger: TestKey;
  /** Signs a token with `key` (default claims: valid for an hour, right issuer and audience). */
  sign(key: TestKey, spec?: TokenSpec): Promise<string>;
  /** Writes a new key pair of `alg` with `kid` (not trusted by files, only via a JWKS that serves it). */
  newKey(alg: Alg, kid: string): Promise<TestKey>;
  close(): Promise<void>;
}

async function makeKey(dir: string, alg: Alg, kid: string): Promise<TestKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === "EdDSA" ? { crv: "Ed25519" } : {}),
  });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg };
  const pemFile = join(dir, `${kid}.pem`);
  const jwkFile = join(dir, `${kid}.jwk.json`);
  await writeFile(pemFile, await exportSPKI(publicKey));
  await writeFile(jwkFile, JSON.stringify(publicJwk));
  return { alg, kid, privateKey, publicJwk, pemFile, jwkFile };
}

/** Creates RSA, EC and Ed25519 keys (kids "rsa-1", "ec-1", "ed-1") and a stranger key. */
export async function createTestKeys(): Promise<TestKeys> {
  const dir = await mkdtemp(join(tmpdir(), "nf-gw-keys-"));
  const keys = {
    RS256: await makeKey(dir, "RS256", "rsa-1"),
    ES256: await makeKey(dir, "ES256", "ec-1"),
    EdDSA: await makeKey(dir, "EdDSA", "ed-1"),
  };
  const stranger = await makeKey(dir, "ES256", "stranger");
  return {
    dir,
    keys,
    stranger,
    async sign(key, spec = {}) {
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = {};
      if (spec.scope !== undefined) claims["scope"] = spec.scope;
      if (spec.scp !== undefined) claims["scp"] = spec.scp;
      if (spec.roles !== undefined) claims["roles"] = spec.roles;
      const jwt = new SignJWT(claims)
        .setProtectedHeader({
          alg: key.alg,
          ...("kid" in spec ? (spec.kid === undefined ? {} : { kid: spec.kid }) : { kid: key.kid }),
        })
        .setIssuer(spec.iss ?? ISSUER)
        .setAudience(spec.aud ?? AUDIENCE)
        .setIssuedAt(now);
      if (!("sub" in spec) || spec.sub !== undefined) jwt.setSubject(spec.sub ?? "alice");
      if (!("expIn" in spec) || spec.expIn !== undefined) jwt.setExpirationTime(now + (spec.expIn ?? 3600));
      if (spec.nbfIn !== undefined) jwt.setNotBefore(now + spec.nbfIn);
      return jwt.sign(key.privateKey);
    },
    newKey: (alg, kid) => makeKey(dir, alg, kid),
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A JWKS endpoint serving whatever keys are set, counting fetches. */
export interface JwksServer {
  url: string;
  fetches: number;
  setKeys(keys: readonly JWK[]): void;
  close(): Promise<void>;
}

/** Starts a JWKS endpoint on 127.0.0.1, port 0. */
export async function startJwksServer(keys: readonly JWK[]): Promise<JwksServer> {
  let current = [...keys];
  const state = { fetches: 0 };
  const server = http.createServer((req, res) => {
    state.fetches++;
    const body = JSON.stringify({ keys: current });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get fetches() {
      return state.fetches;
    },
    setKeys(keys) {
      current = [...keys];
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
