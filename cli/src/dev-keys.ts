/**
 * The local development key: an Ed25519 key pair under `<data dir>/dev-keys/`, created on first
 * use, with which `nexusflow dev` and `nexusflow token` mint short-lived tokens. The services only
 * trust it when told to (AUTH_PUBLIC_KEYS=<dir>/public.pem, which only `nexusflow dev` sets), and
 * its tokens say what they are: issuer "nexusflow-dev". A production deployment simply never
 * configures this key; and since it sets AUTH_ISSUER to its own identity provider, a dev token
 * would fail there even if the key leaked into its configuration.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SignJWT, importPKCS8 } from "jose";

/** Issuer of every dev token. */
export const DEV_ISSUER = "nexusflow-dev";
/** Audience of dev tokens, and the AUTH_AUDIENCE `nexusflow dev` gives the services. */
export const DEV_AUDIENCE = "nexusflow";

/** Where the dev key pair lives. */
export interface DevKeys {
  /** The directory, `<data dir>/dev-keys`. */
  dir: string;
  /** PKCS#8 PEM of the private key (mode 0600). */
  privateKeyFile: string;
  /** SPKI PEM of the public key: what AUTH_PUBLIC_KEYS points at. */
  publicKeyFile: string;
  /** Key id: a hash of the public key. */
  kid: string;
}

/** The dev key directory under a data directory (NEXUSFLOW_DATA_DIR, default ".nexusflow"). */
export function devKeysDir(dataDir: string): string {
  return join(dataDir, "dev-keys");
}

function keyId(publicPem: string): string {
  return createHash("sha256").update(publicPem).digest("base64url").slice(0, 16);
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (e) {
    if (typeof e === "object" && e !== null && "code" in e && e.code === "ENOENT") return undefined;
    throw e;
  }
}

/** The dev key pair in `dir`, created (EdDSA, Ed25519) when missing. */
export async function ensureDevKeys(dir: string): Promise<DevKeys> {
  const privateKeyFile = join(dir, "private.pem");
  const publicKeyFile = join(dir, "public.pem");
  let publicPem = await readIfExists(publicKeyFile);
  const privatePem = await readIfExists(privateKeyFile);
  if (publicPem === undefined || privatePem === undefined) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const pair = generateKeyPairSync("ed25519");
    publicPem = pair.publicKey.export({ type: "spki", format: "pem" }).toString();
    const priv = pair.privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    // Written under temporary names and renamed, so a concurrent reader never sees half a pair.
    await writeFile(`${privateKeyFile}.tmp`, priv, { mode: 0o600 });
    await writeFile(`${publicKeyFile}.tmp`, publicPem, { mode: 0o644 });
    await rename(`${privateKeyFile}.tmp`, privateKeyFile);
    await rename(`${publicKeyFile}.tmp`, publicKeyFile);
    await writeFile(
      join(dir, "README"),
      "Local development key of `nexusflow dev` and `nexusflow token`. Never configure it in production.\n",
    );
  } else {
    await chmod(privateKeyFile, 0o600);
  }
  return { dir, privateKeyFile, publicKeyFile, kid: keyId(publicPem) };
}

/** What a dev token grants. */
export interface DevTokenOptions {
  /** The `sub` claim. */
  subject: string;
  /** Scopes, e.g. ["admin"] or ["runs:read", "runs:write"]. */
  scopes: readonly string[];
  /** Lifetime in seconds. */
  ttlSec: number;
  /**
   * The `aud` claim.
   * @default DEV_AUDIENCE
   */
  audience?: string;
}

/** Signs a dev token with the dev private key (iss "nexusflow-dev", EdDSA). */
export async function mintDevToken(keys: DevKeys, options: DevTokenOptions): Promise<string> {
  const key = await importPKCS8(await readFile(keys.privateKeyFile, "utf8"), "EdDSA");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ scope: options.scopes.join(" "), dev: true })
    .setProtectedHeader({ alg: "EdDSA", typ: "JWT", kid: keys.kid })
    .setIssuer(DEV_ISSUER)
    .setAudience(options.audience ?? DEV_AUDIENCE)
    .setSubject(options.subject)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + options.ttlSec)
    .sign(key);
}

/** Environment for a service to trust the dev key (and only it). */
export function devAuthEnv(keys: DevKeys): Record<string, string> {
  return {
    AUTH_PUBLIC_KEYS: keys.publicKeyFile,
    AUTH_ISSUER: DEV_ISSUER,
    AUTH_AUDIENCE: DEV_AUDIENCE,
    AUTH_JWKS_URL: "",
    AUTH_DISABLED: "",
  };
}
