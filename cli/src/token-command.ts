/**
 * `nexusflow token`: a short-lived DEV token signed with the dev key that the running dev stack
 * (or NEXUSFLOW_DATA_DIR's, or ./.nexusflow's) trusts; never with a new key no stack would accept.
 */
import { userInfo } from "node:os";
import { Scope } from "@nexusflow/common";
import { parseDuration } from "@nexusflow/common/duration";
import { type CommandIo, UsageError, parse, positionals } from "./command.js";
import { DEV_ISSUER, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { findDevKeys } from "./dev-state.js";

/** Scopes a dev token may carry. */
const KNOWN_SCOPES: readonly string[] = Object.values(Scope);

/** `nexusflow token [--scope S]... [--ttl 1h] [--subject NAME]`: mints a dev token. */
export async function tokenCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals: pos } = parse({
    args,
    allowPositionals: true,
    options: {
      scope: { type: "string", multiple: true },
      ttl: { type: "string" },
      subject: { type: "string" },
    },
  });
  positionals(pos, [], "token");
  const scopes = (values.scope ?? [Scope.ADMIN]).flatMap((s) => s.split(/[\s,]+/)).filter((s) => s !== "");
  const unknown = scopes.filter((s) => !KNOWN_SCOPES.includes(s));
  if (unknown.length > 0) {
    throw new UsageError(
      `--scope: unknown scope ${JSON.stringify(unknown[0])} (known: ${KNOWN_SCOPES.join(", ")})`,
    );
  }
  let ttlMs: number;
  try {
    ttlMs = parseDuration(values.ttl ?? "1h");
  } catch (e) {
    throw new UsageError(`--ttl: ${(e as Error).message}`);
  }
  if (ttlMs < 1000 || ttlMs > 7 * 86_400_000) throw new UsageError("--ttl must be between 1s and 7d");
  // Never a new key unless NEXUSFLOW_DATA_DIR asks for one: no running stack would accept its tokens.
  const location = await findDevKeys(io.env, io.root, io.cwd);
  const keys = await ensureDevKeys(location.dir);
  const subject = values.subject ?? `dev-${userInfo().username}`;
  const token = await mintDevToken(keys, { subject, scopes, ttlSec: Math.round(ttlMs / 1000) });
  const expires = new Date(Date.now() + ttlMs).toISOString();
  io.stderr(
    `nexusflow: DEV token (iss ${DEV_ISSUER}, sub ${subject}, scopes ${scopes.join(" ")}, expires ${expires}); ` +
      `only a stack started with 'nexusflow dev' (npm start) accepts it\n`,
  );
  io.stdout(`${token}\n`);
  return 0;
}
