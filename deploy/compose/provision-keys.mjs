#!/usr/bin/env node
// The compose stack's key-provisioning one-shot (`keys` in docker-compose.yml): runs in a plain Node
// image with node:crypto only, and writes into its output folder (the `keys` volume, /keys):
//   signing-key.pem   the ES256 private key tokens are signed with (mode 0600; created once, kept)
//   issuer.pem        its public key (SPKI PEM): the scheduler's and gateway's AUTH_PUBLIC_KEYS
//   jwks.json         the same key as a JWKS: Envoy's jwt_authn local_jwks
//   executor.token    a token with the `executor` scope for any executor id (EXECUTOR_TOKEN_FILE)
//   operator.token    a token with every API scope, for you: `NEXUSFLOW_TOKEN=$(docker compose
//                     exec -T gateway cat /keys/operator.token)`
// Tokens are minted again on every start (valid for TOKEN_DAYS, default 30), so `docker compose up`
// renews them. This is a local identity provider for trying the stack out: in production, use your
// own and point AUTH_JWKS_URL / AUTH_PUBLIC_KEYS at it.
//
//   provision-keys.mjs OUT_DIR    (ISSUER and AUDIENCE from the environment)
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The files this writes, relative to OUT_DIR (docker-compose.yml's test checks consumers against it). */
export const OUTPUTS = ["signing-key.pem", "issuer.pem", "jwks.json", "executor.token", "operator.token"];

function main() {
  const out = process.argv[2];
  const issuer = process.env.ISSUER;
  const audience = process.env.AUDIENCE;
  const days = Number(process.env.TOKEN_DAYS ?? "30");
  if (out === undefined || !issuer || !audience || !(days > 0)) {
    process.stderr.write("usage: ISSUER=... AUDIENCE=... [TOKEN_DAYS=30] provision-keys.mjs OUT_DIR\n");
    process.exit(2);
  }
  mkdirSync(out, { recursive: true });
  const write = (name, content, mode) => {
    // Renamed into place: a reader never sees half a file.
    const tmp = join(out, `.${name}.tmp`);
    writeFileSync(tmp, content, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, join(out, name));
  };

  const keyFile = join(out, "signing-key.pem");
  if (!existsSync(keyFile)) {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    write("signing-key.pem", privateKey.export({ type: "pkcs8", format: "pem" }), 0o600);
  }
  const privateKey = createPrivateKey(readFileSync(keyFile));
  const publicKey = createPublicKey(privateKey);
  const publicPem = publicKey.export({ type: "spki", format: "pem" });
  const kid = createHash("sha256").update(publicPem).digest("base64url").slice(0, 16);
  write("issuer.pem", publicPem, 0o644);
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "ES256", use: "sig" };
  write("jwks.json", `${JSON.stringify({ keys: [jwk] }, null, 2)}\n`, 0o644);

  const b64 = (value) =>
    Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
  const mint = (claims) => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64({ alg: "ES256", typ: "JWT", kid });
    const payload = b64({
      iss: issuer,
      aud: audience,
      iat: now,
      nbf: now,
      exp: now + days * 86400,
      ...claims,
    });
    const signature = sign("sha256", Buffer.from(`${header}.${payload}`), {
      key: privateKey,
      dsaEncoding: "ieee-p1363",
    });
    return `${header}.${payload}.${signature.toString("base64url")}\n`;
  };
  write(
    "executor.token",
    mint({ sub: "compose-executors", scope: "executor", nexusflow_executors: ["*"] }),
    0o644,
  );
  write(
    "operator.token",
    mint({ sub: "compose-operator", scope: "workflows:read workflows:write runs:read runs:write admin" }),
    0o644,
  );
  process.stdout.write(`provision-keys: ${OUTPUTS.join(", ")} in ${out} (issuer ${issuer}, kid ${kid})\n`);
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) main();
