/**
 * Bearer-token authentication and per-RPC authorization shared by the gateway and the scheduler.
 *
 * Tokens are JWTs signed with RS256, ES256 or EdDSA, verified with `jose` against keys from a JWKS
 * URL (cached; an unknown `kid` triggers a refresh, at most once per cooldown) and/or public key
 * files (PEM SPKI, a JWK or a JWKS). `iss`, `aud`, `exp` (required) and `nbf` are checked with a
 * small clock tolerance. Every failure is an {@link AuthError} with code `UNAUTHENTICATED` (or
 * `UNAVAILABLE` when the JWKS URL cannot be fetched) and a message saying what is wrong with the
 * token, never the token itself.
 *
 * Authorization is one table, {@link RPC_ACCESS}: each RPC needs one scope, or is public. A token
 * grants the scopes in its `scope` claim (space-separated), its `scp` claim (array or string) and
 * its `roles` claim (role names equal to scope names); `admin` grants everything. An executor
 * session is also bound to its token: it attaches as the token's `sub` or as an id its
 * `nexusflow_executors` claim lists ({@link authorizeExecutorId}).
 */
import { readFile } from "node:fs/promises";
import { createPublicKey } from "node:crypto";
// jose is imported by createTokenVerifier, when authentication is on: a service started with
// AUTH_DISABLED=true never loads it (~0.5 MiB of V8 heap).
import type * as JoseModule from "jose";
import type { JWK, JWTPayload, JWTVerifyGetKey } from "jose";
import type { AuthConfig } from "./config.js";

/** The scopes of the Nexusflow API. */
export const Scope = {
  WORKFLOWS_READ: "workflows:read",
  WORKFLOWS_WRITE: "workflows:write",
  RUNS_READ: "runs:read",
  RUNS_WRITE: "runs:write",
  EXECUTOR: "executor",
  ADMIN: "admin",
} as const;
/** A scope of the Nexusflow API. */
export type Scope = (typeof Scope)[keyof typeof Scope];

/** Marks an RPC that needs no token (reflection; health is plain HTTP, `/healthz`). */
export const PUBLIC = "public";

/**
 * Who may call what: the scope each RPC needs, keyed by `package.Service/Method`. The one table of
 * authorization; an RPC missing here is refused (a test fails for any RPC of the API without an entry).
 */
export const RPC_ACCESS: Readonly<Record<string, Scope | typeof PUBLIC>> = {
  "nexusflow.v1.WorkflowService/RegisterWorkflow": Scope.WORKFLOWS_WRITE,
  "nexusflow.v1.WorkflowService/GetWorkflow": Scope.WORKFLOWS_READ,
  "nexusflow.v1.WorkflowService/ListWorkflows": Scope.WORKFLOWS_READ,
  "nexusflow.v1.WorkflowService/StartRun": Scope.RUNS_WRITE,
  "nexusflow.v1.WorkflowService/StartRuns": Scope.RUNS_WRITE,
  "nexusflow.v1.WorkflowService/GetRun": Scope.RUNS_READ,
  "nexusflow.v1.WorkflowService/ListRuns": Scope.RUNS_READ,
  "nexusflow.v1.WorkflowService/CancelRun": Scope.RUNS_WRITE,
  "nexusflow.v1.WorkflowService/SignalRun": Scope.RUNS_WRITE,
  "nexusflow.v1.WorkflowService/RerunRun": Scope.RUNS_WRITE,
  "nexusflow.v1.WorkflowService/WatchRun": Scope.RUNS_READ,
  "nexusflow.v1.WorkflowService/ExplainPending": Scope.RUNS_READ,
  "nexusflow.v1.ArtifactService/ListArtifacts": Scope.RUNS_READ,
  "nexusflow.v1.ArtifactService/GetTaskLogs": Scope.RUNS_READ,
  "nexusflow.v1.ArtifactService/GetArtifact": Scope.RUNS_READ,
  // Operators who may read runs may see which executors run them.
  "nexusflow.v1.ClusterService/ListExecutors": Scope.RUNS_READ,
  // And which scheduler replicas own which partitions of runs.
  "nexusflow.v1.ReplicaService/ListReplicas": Scope.RUNS_READ,
  // A schedule starts runs: changing one needs what starting runs needs.
  "nexusflow.v1.ScheduleService/CreateSchedule": Scope.RUNS_WRITE,
  "nexusflow.v1.ScheduleService/GetSchedule": Scope.RUNS_READ,
  "nexusflow.v1.ScheduleService/ListSchedules": Scope.RUNS_READ,
  "nexusflow.v1.ScheduleService/DeleteSchedule": Scope.RUNS_WRITE,
  "nexusflow.v1.ScheduleService/PauseSchedule": Scope.RUNS_WRITE,
  "nexusflow.v1.ScheduleService/ResumeSchedule": Scope.RUNS_WRITE,
  "nexusflow.v1.ScheduleService/TriggerSchedule": Scope.RUNS_WRITE,
  "nexusflow.v1.ScheduleService/BackfillSchedule": Scope.RUNS_WRITE,
  // An event starts the runs of the workflows it triggers: publishing needs what starting runs needs.
  // Pausing a rate limit's key holds runs' tasks back: what changing runs needs.
  "nexusflow.v1.RateLimitService/PauseRateLimit": Scope.RUNS_WRITE,
  "nexusflow.v1.RateLimitService/ResumeRateLimit": Scope.RUNS_WRITE,
  "nexusflow.v1.RateLimitService/ListRateLimits": Scope.RUNS_READ,
  "nexusflow.v1.EventService/PublishEvent": Scope.RUNS_WRITE,
  "nexusflow.v1.EventService/GetEvent": Scope.RUNS_READ,
  "nexusflow.v1.EventService/ListEvents": Scope.RUNS_READ,
  "nexusflow.v1.ExecutorService/Session": Scope.EXECUTOR,
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
  // Probes (kubelet, grpc_health_probe) carry no token.
  "grpc.health.v1.Health/Check": PUBLIC,
  "grpc.health.v1.Health/Watch": PUBLIC,
};

/**
 * Scopes that also grant an RPC, besides the one {@link RPC_ACCESS} names: an executor's token
 * (scope `executor`) may list the scheduler replicas, to open a session to each of them.
 */
export const RPC_ALSO_GRANTED_TO: Readonly<Record<string, readonly Scope[]>> = {
  "nexusflow.v1.ReplicaService/ListReplicas": [Scope.EXECUTOR],
};

/** `package.Service/Method` for a gRPC path `/package.Service/Method` (the key of {@link RPC_ACCESS}). */
export function rpcName(path: string): string {
  return path.startsWith("/") ? path.slice(1) : path;
}

/** The scope `rpc` needs, {@link PUBLIC}, or undefined when the table has no entry. */
export function requiredScope(rpc: string): Scope | typeof PUBLIC | undefined {
  return Object.hasOwn(RPC_ACCESS, rpc) ? RPC_ACCESS[rpc] : undefined;
}

/** Why a call was refused. */
export type AuthErrorCode = "UNAUTHENTICATED" | "PERMISSION_DENIED" | "UNAVAILABLE";

/**
 * A refused call: no or a bad token (UNAUTHENTICATED), a missing scope (PERMISSION_DENIED), or
 * the token could not be checked because the JWKS URL did not answer (UNAVAILABLE, worth a retry).
 */
export class AuthError extends Error {
  override name = "AuthError";
  constructor(
    readonly code: AuthErrorCode,
    message: string,
    /** The scope that was missing (PERMISSION_DENIED only). */
    readonly scope?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Type guard for {@link AuthError}. */
export function isAuthError(e: unknown): e is AuthError {
  return e instanceof AuthError;
}

/** The caller, as established by a verified token. */
export interface Principal {
  /** The token's `sub`. */
  readonly subject: string;
  /** Scopes granted by `scope`, `scp` and `roles`. */
  readonly scopes: ReadonlySet<string>;
  /** The token's issuer. */
  readonly issuer: string | undefined;
  /** When the token expires, in milliseconds since the epoch. */
  readonly expiresAtMs: number;
  /** Every claim of the token. */
  readonly claims: Readonly<JWTPayload>;
}

/** Whether `principal` may call an RPC that needs `scope` (admin may call everything). */
export function hasScope(principal: Principal, scope: string): boolean {
  return principal.scopes.has(scope) || principal.scopes.has(Scope.ADMIN);
}

/**
 * The claim listing the executor ids a token may attach as, besides its own `sub`: an array of
 * ids (or one id as a string), where an entry ending in `*` matches every id starting with what
 * precedes it (`"batch-*"` for an autoscaled fleet `batch-7f3a`, `batch-9c1d`, ...; `"*"` alone
 * matches any id). Entries that are not non-empty strings grant nothing.
 */
export const EXECUTORS_CLAIM = "nexusflow_executors";

/** The executor-id patterns of a token's {@link EXECUTORS_CLAIM} (none when it has no such claim). */
export function executorPatternsOf(claims: Readonly<JWTPayload>): string[] {
  const claim = claims[EXECUTORS_CLAIM];
  const entries = typeof claim === "string" ? [claim] : Array.isArray(claim) ? (claim as unknown[]) : [];
  return entries.filter((e): e is string => typeof e === "string" && e !== "");
}

/** Whether `executorId` matches `pattern`: equal, or starting with its prefix when it ends in `*`. */
export function executorIdMatches(pattern: string, executorId: string): boolean {
  return pattern.endsWith("*") ? executorId.startsWith(pattern.slice(0, -1)) : pattern === executorId;
}

/**
 * Checks that `principal` may attach an executor session as `executorId`: the id is the token's
 * subject, or matches an entry of its {@link EXECUTORS_CLAIM} claim. Scopes do not matter here (not
 * even `admin`): a token acts as the executors it names. Throws {@link AuthError} PERMISSION_DENIED
 * naming the executor id and the token's subject otherwise.
 */
export function authorizeExecutorId(principal: Principal, executorId: string): void {
  if (principal.subject === executorId) return;
  const patterns = executorPatternsOf(principal.claims);
  if (patterns.some((p) => executorIdMatches(p, executorId))) return;
  throw new AuthError(
    "PERMISSION_DENIED",
    `the token of ${JSON.stringify(principal.subject)} may not attach as executor ${JSON.stringify(executorId)}: ` +
      `an executor id must be the token's subject or match its "${EXECUTORS_CLAIM}" claim` +
      (patterns.length === 0 ? "" : ` (${patterns.map((p) => JSON.stringify(p)).join(", ")})`),
  );
}

/**
 * Checks that `principal` may call `rpc` (`package.Service/Method`). Throws {@link AuthError}:
 * PERMISSION_DENIED naming the missing scope, or naming the RPC when the table has no entry for it.
 */
export function authorize(principal: Principal, rpc: string): void {
  const scope = requiredScope(rpc);
  if (scope === undefined) throw new AuthError("PERMISSION_DENIED", `no access rule for ${rpc}`);
  if (scope === PUBLIC || hasScope(principal, scope)) return;
  if (
    Object.hasOwn(RPC_ALSO_GRANTED_TO, rpc) &&
    RPC_ALSO_GRANTED_TO[rpc]?.some((s) => hasScope(principal, s))
  )
    return;
  throw new AuthError("PERMISSION_DENIED", `${rpc} requires the scope "${scope}"`, scope);
}

/**
 * The token of an `authorization: Bearer <token>` header value. Throws {@link AuthError}
 * UNAUTHENTICATED when the header is missing or not a bearer token.
 */
export function bearerToken(authorization: string | null | undefined): string {
  if (authorization === null || authorization === undefined || authorization.trim() === "") {
    throw new AuthError("UNAUTHENTICATED", "missing bearer token (send 'authorization: Bearer <JWT>')");
  }
  const match = /^Bearer[ \t]+(\S+)\s*$/i.exec(authorization.trim());
  if (match?.[1] === undefined) {
    throw new AuthError("UNAUTHENTICATED", "the authorization header is not 'Bearer <JWT>'");
  }
  return match[1];
}

/** Signature algorithms accepted by default (EdDSA is also accepted under its newer name Ed25519). */
export const DEFAULT_ALGORITHMS: readonly string[] = ["RS256", "ES256", "EdDSA", "Ed25519"];

/** Options of {@link createTokenVerifier}. At least one of `jwksUrl` and `publicKeyFiles` is required. */
export interface TokenVerifierOptions {
  /** URL of a JSON Web Key Set. */
  jwksUrl?: string | undefined;
  /** Files with public keys: PEM (SPKI), a JWK or a JWKS, as JSON. */
  publicKeyFiles?: readonly string[] | undefined;
  /** Accepted `iss` values. */
  issuer: string | readonly string[];
  /** Accepted `aud` values (the token must name one). */
  audience: string | readonly string[];
  /**
   * Tolerated clock difference for `exp` and `nbf`, in seconds.
   * @default 30
   */
  clockToleranceSec?: number | undefined;
  /**
   * Accepted signature algorithms.
   * @default {@link DEFAULT_ALGORITHMS}
   */
  algorithms?: readonly string[] | undefined;
  /**
   * After fetching the JWKS, how long an unknown `kid` waits before it may trigger another fetch, in milliseconds.
   * @default 30_000
   */
  jwksCooldownMs?: number | undefined;
  /**
   * How long fetched keys are used before they are fetched again, in milliseconds.
   * @default 600_000
   */
  jwksCacheMaxAgeMs?: number | undefined;
  /**
   * Timeout of a JWKS fetch, in milliseconds.
   * @default 5_000
   */
  jwksTimeoutMs?: number | undefined;
}

/** Verifies bearer tokens. */
export interface TokenVerifier {
  /** The principal of a valid token; throws {@link AuthError} UNAUTHENTICATED otherwise. */
  verify(token: string): Promise<Principal>;
  /**
   * The clock difference tolerated for `exp` and `nbf` (AUTH_CLOCK_SKEW), in milliseconds: how long
   * after its `exp` a token is still accepted, so how long a stream it opened may outlive it.
   */
  readonly clockToleranceMs?: number | undefined;
}

/** A key file could not be read or understood; the message names the file. */
export class KeyFileError extends Error {
  override name = "KeyFileError";
  constructor(
    readonly file: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${message}`, options);
  }
}

/** The JWS algorithm that goes with a public key, as Node describes it. */
function algorithmOf(jwk: JWK): string | undefined {
  if (jwk.kty === "RSA") return "RS256";
  if (jwk.kty === "EC" && jwk.crv === "P-256") return "ES256";
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  return undefined;
}

/** Reads a key file into JWKs (public parts only). Throws {@link KeyFileError}. */
export async function readPublicKeyFile(file: string): Promise<JWK[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new KeyFileError(file, e instanceof Error ? e.message : String(e), { cause: e });
  }
  let jwks: JWK[];
  if (text.includes("-----BEGIN")) {
    if (/PRIVATE KEY-----/.test(text)) {
      throw new KeyFileError(file, "contains a private key; configure the public key only");
    }
    try {
      jwks = [createPublicKey(text).export({ format: "jwk" })];
    } catch (e) {
      throw new KeyFileError(file, "not a PEM public key", { cause: e });
    }
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new KeyFileError(file, "neither PEM nor JSON (a JWK or a JWKS)", { cause: e });
    }
    const keys = typeof parsed === "object" && parsed !== null && "keys" in parsed ? parsed.keys : [parsed];
    if (!Array.isArray(keys) || keys.some((k) => typeof k !== "object" || k === null || !("kty" in k))) {
      throw new KeyFileError(file, "not a JWK or a JWKS");
    }
    jwks = keys as JWK[];
  }
  return jwks.map((jwk, i) => {
    if (jwk.d !== undefined)
      throw new KeyFileError(file, `key ${i + 1} is a private key; configure the public key only`);
    const alg = jwk.alg ?? algorithmOf(jwk);
    if (alg === undefined)
      throw new KeyFileError(file, `key ${i + 1}: unsupported key type (use RSA, EC P-256 or Ed25519)`);
    return { ...jwk, alg };
  });
}

function asList(v: string | readonly string[]): string[] {
  return typeof v === "string" ? [v] : [...v];
}

/** Scopes granted by a token's claims. */
export function scopesOf(claims: JWTPayload): Set<string> {
  const scopes = new Set<string>();
  const add = (v: unknown): void => {
    if (typeof v === "string") v.split(/\s+/).forEach((s) => s !== "" && scopes.add(s));
    else if (Array.isArray(v)) v.forEach((s) => typeof s === "string" && s !== "" && scopes.add(s));
  };
  add(claims["scope"]);
  add(claims["scp"]);
  add(claims["roles"]);
  return scopes;
}

/** The jose module, once loaded. */
type Jose = typeof JoseModule;

/** One line saying what is wrong with a token, from a jose error (told apart by code, not text). */
function describeJoseError(
  joseErrors: Jose["errors"],
  e: unknown,
  options: {
    algorithms: readonly string[];
    audience: string[];
    issuer: string[];
  },
): string {
  const code = typeof e === "object" && e !== null && "code" in e ? e.code : undefined;
  if (e instanceof joseErrors.JWTExpired) {
    const exp =
      typeof e.payload.exp === "number" ? ` at ${new Date(e.payload.exp * 1000).toISOString()}` : "";
    return `the token expired${exp}`;
  }
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    switch (e.claim) {
      case "aud":
        return `the token's audience ${JSON.stringify(e.payload.aud ?? null)} is not ${options.audience.map((a) => JSON.stringify(a)).join(" or ")}`;
      case "iss":
        return `the token's issuer ${JSON.stringify(e.payload.iss ?? null)} is not ${options.issuer.map((a) => JSON.stringify(a)).join(" or ")}`;
      case "nbf":
        return `the token is not valid before ${typeof e.payload.nbf === "number" ? new Date(e.payload.nbf * 1000).toISOString() : "its nbf"}`;
      default:
        return e.reason === "missing"
          ? `the token has no "${e.claim}" claim`
          : `the token's "${e.claim}" claim is invalid`;
    }
  }
  switch (code) {
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return `the token's signature algorithm is not allowed (allowed: ${options.algorithms.join(", ")})`;
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "the token's signature is invalid";
    case "ERR_JWKS_NO_MATCHING_KEY":
      return "no configured key matches the token (unknown kid or key type)";
    case "ERR_JOSE_NOT_SUPPORTED":
      return "the token uses an unsupported algorithm or key";
    case "ERR_JWS_INVALID":
    case "ERR_JWT_INVALID":
      return `malformed token: ${e instanceof Error ? e.message : String(e)}`;
    default:
      return e instanceof Error ? `invalid token: ${e.message}` : "invalid token";
  }
}

/** The JWKS URL failed (network, timeout, not a key set): the token could not be checked at all. */
class KeySetUnavailable extends Error {
  override name = "KeySetUnavailable";
}

function isKeySetFailure(joseErrors: Jose["errors"], e: unknown): boolean {
  if (!(e instanceof joseErrors.JOSEError)) return true;
  return e.code === "ERR_JWKS_TIMEOUT" || e.code === "ERR_JWKS_INVALID" || e.code === "ERR_JOSE_GENERIC";
}

/**
 * A key resolver over configured keys. Keys with a `kid` (from JWK files) are chosen by the token's
 * `kid`; keys without one (PEM files, or JWKs without `kid`) can verify any token, whatever its `kid`.
 */
function localKeyResolver(jose: Jose, keys: readonly JWK[]): JWTVerifyGetKey | undefined {
  if (keys.length === 0) return undefined;
  const { createLocalJWKSet, errors: joseErrors } = jose;
  const keyed = keys.filter((k) => k.kid !== undefined);
  const anonymous = keys.filter((k) => k.kid === undefined);
  const keyedSet = keyed.length > 0 ? createLocalJWKSet({ keys: keyed }) : undefined;
  const anonymousSet = anonymous.length > 0 ? createLocalJWKSet({ keys: anonymous }) : undefined;
  return async (header, token) => {
    if (keyedSet !== undefined) {
      try {
        return await keyedSet(header, token);
      } catch (e) {
        if (anonymousSet === undefined || !(e instanceof joseErrors.JWKSNoMatchingKey)) throw e;
      }
    }
    const { kid: _kid, ...withoutKid } = header;
    return (anonymousSet as NonNullable<typeof anonymousSet>)(withoutKid, token);
  };
}

/**
 * Creates a verifier. Reads the key files now (async factory): a missing or bad file fails here
 * with {@link KeyFileError}. The JWKS URL is fetched lazily, on the first token.
 */
export async function createTokenVerifier(options: TokenVerifierOptions): Promise<TokenVerifier> {
  const algorithms = [...(options.algorithms ?? DEFAULT_ALGORITHMS)];
  const issuer = asList(options.issuer);
  const audience = asList(options.audience);
  const clockTolerance = options.clockToleranceSec ?? 30;
  const files = options.publicKeyFiles ?? [];
  if (options.jwksUrl === undefined && files.length === 0) {
    throw new Error("createTokenVerifier: configure a JWKS URL or public key files");
  }
  const localKeys = (await Promise.all(files.map((f) => readPublicKeyFile(f)))).flat();
  const jose = await import("jose");
  const { createRemoteJWKSet, errors: joseErrors, jwtVerify } = jose;
  const local = localKeyResolver(jose, localKeys);
  const remote =
    options.jwksUrl === undefined
      ? undefined
      : createRemoteJWKSet(new URL(options.jwksUrl), {
          cooldownDuration: options.jwksCooldownMs ?? 30_000,
          cacheMaxAge: options.jwksCacheMaxAgeMs ?? 600_000,
          timeoutDuration: options.jwksTimeoutMs ?? 5_000,
        });
  const getKey: JWTVerifyGetKey = async (header, token) => {
    if (local !== undefined) {
      try {
        return await local(header, token);
      } catch (e) {
        if (remote === undefined || !(e instanceof joseErrors.JWKSNoMatchingKey)) throw e;
      }
    }
    // Only reached with a remote set: it refreshes itself on an unknown kid (after the cooldown).
    try {
      return await (remote as NonNullable<typeof remote>)(header, token);
    } catch (e) {
      if (!isKeySetFailure(joseErrors, e)) throw e;
      const reason = e instanceof Error ? e.message : String(e);
      throw new KeySetUnavailable(`the token keys could not be fetched from the JWKS URL: ${reason}`, {
        cause: e,
      });
    }
  };
  return {
    clockToleranceMs: clockTolerance * 1000,
    async verify(token) {
      try {
        const { payload } = await jwtVerify(token, getKey, {
          algorithms,
          issuer,
          audience,
          clockTolerance,
          requiredClaims: ["exp", "sub"],
        });
        return {
          subject: payload.sub ?? "",
          scopes: scopesOf(payload),
          issuer: payload.iss,
          expiresAtMs: (payload.exp ?? 0) * 1000,
          claims: payload,
        };
      } catch (e) {
        if (e instanceof KeySetUnavailable)
          throw new AuthError("UNAVAILABLE", e.message, undefined, { cause: e });
        throw new AuthError(
          "UNAUTHENTICATED",
          describeJoseError(joseErrors, e, { algorithms, audience, issuer }),
          undefined,
          { cause: e },
        );
      }
    },
  };
}

/**
 * Authenticates and authorizes one call from its `authorization` header value: public RPCs pass
 * without a token (undefined principal); others need a valid token with the RPC's scope.
 * Throws {@link AuthError}.
 */
export async function authenticateCall(
  verifier: TokenVerifier,
  rpc: string,
  authorization: string | null | undefined,
): Promise<Principal | undefined> {
  const scope = requiredScope(rpc);
  if (scope === PUBLIC) return undefined;
  if (scope === undefined) throw new AuthError("PERMISSION_DENIED", `no access rule for ${rpc}`);
  const principal = await verifier.verify(bearerToken(authorization));
  authorize(principal, rpc);
  return principal;
}

/** The verifier for a service's {@link AuthConfig}; undefined when authentication is disabled. */
export async function tokenVerifierFromConfig(config: AuthConfig): Promise<TokenVerifier | undefined> {
  if (!config.enabled) return undefined;
  return createTokenVerifier({
    jwksUrl: config.jwksUrl,
    publicKeyFiles: config.publicKeyFiles,
    issuer: config.issuer,
    audience: config.audience,
    clockToleranceSec: config.clockToleranceSec,
  });
}
