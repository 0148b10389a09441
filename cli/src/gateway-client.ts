/**
 * How the operator commands reach Nexusflow: the gateway's address (--address, NEXUSFLOW_ADDRESS;
 * "host:port" or a URL) and a bearer token (--token, NEXUSFLOW_TOKEN; for a gateway on this
 * machine without either, a short-lived token minted with the dev key of NEXUSFLOW_DATA_DIR,
 * ./.nexusflow or the running dev stack, if there is one).
 * Calls go through @nexusflow/client (gRPC over h2c, the token in `authorization`).
 */
import { NexusflowClient } from "@nexusflow/client";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { type CommandIo, UsageError } from "./command.js";
import { describeError } from "./describe-error.js";
import { DEV_ISSUER, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { findDevKeys, readDevState } from "./dev-state.js";

/** Where the gateway listens when nothing says otherwise (GATEWAY_PORT's default). */
export const DEFAULT_ADDRESS = "http://127.0.0.1:8080";

/** A bad --address or NEXUSFLOW_ADDRESS; the message says which. */
export class AddressError extends Error {
  override name = "AddressError";
}

/** The base URL for an address given as "host:port" or as an http(s) URL. */
export function gatewayUrl(address: string): string {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new AddressError(`not a gateway address: ${JSON.stringify(address)} (expected host:port or a URL)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new AddressError(`not a gateway address: ${JSON.stringify(address)} (expected http or https)`);
  }
  return url.origin;
}

function isLoopback(baseUrl: string): boolean {
  const host = new URL(baseUrl).hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** How the token was chosen, for diagnostics. */
export type TokenSource = "flag" | "env" | "dev-key" | "none";

/**
 * The token to send: the flag, else NEXUSFLOW_TOKEN, else (for a gateway on this machine) one
 * minted for 10 minutes with the dev key in `<dataDir>/dev-keys`, if that key exists.
 */
export async function resolveToken(
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  baseUrl: string,
  /** Directory a relative NEXUSFLOW_DATA_DIR is resolved against. */
  root: string,
  /** The working directory, whose `.nexusflow` may hold the dev key. */
  cwd: string = root,
): Promise<{ token: string | undefined; source: TokenSource }> {
  if (flag !== undefined && flag !== "") return { token: flag, source: "flag" };
  const fromEnv = env["NEXUSFLOW_TOKEN"]?.trim();
  if (fromEnv !== undefined && fromEnv !== "") return { token: fromEnv, source: "env" };
  if (isLoopback(baseUrl)) {
    // The same key `nexusflow token` uses (dev-state.ts), but never a new one.
    const dir = await findDevKeys(env, root, cwd).then(
      (found) => found.dir,
      () => undefined,
    );
    const exists =
      dir !== undefined &&
      (await access(join(dir, "private.pem")).then(
        () => true,
        () => false,
      ));
    if (exists) {
      const keys = await ensureDevKeys(dir);
      const token = await mintDevToken(keys, { subject: "nexusflow-cli", scopes: ["admin"], ttlSec: 600 });
      return { token, source: "dev-key" };
    }
  }
  return { token: undefined, source: "none" };
}

/**
 * A client of the gateway at `baseUrl`: @nexusflow/client over gRPC (h2c or TLS), sending `token`
 * when given, with its deadline of unary calls (30 s) and its retries of UNAVAILABLE for calls
 * that are safe to repeat.
 */
export function connectGateway(baseUrl: string, token: string | undefined): NexusflowClient {
  return new NexusflowClient({ baseUrl, token });
}

/**
 * Runs `fn` with a client of the gateway the common options name (and its base URL, for messages);
 * maps failures to exit codes: one line on stderr and 1, or 130 after Ctrl-C.
 */
export async function withGateway(
  io: CommandIo,
  name: string,
  values: { address?: string | undefined; token?: string | undefined },
  fn: (client: NexusflowClient, url: string) => Promise<number>,
): Promise<number> {
  let url: string;
  try {
    url = gatewayUrl(
      values.address ??
        (io.env["NEXUSFLOW_ADDRESS"]?.trim() || (await readDevState(io.env))?.gatewayUrl || DEFAULT_ADDRESS),
    );
  } catch (e) {
    if (e instanceof AddressError) throw new UsageError(e.message);
    throw e;
  }
  const { token, source } = await resolveToken(values.token, io.env, url, io.root, io.cwd);
  if (source === "dev-key")
    io.stderr(`nexusflow: using a dev token (${DEV_ISSUER}) minted with the local dev key\n`);
  let client: NexusflowClient | undefined;
  try {
    client = connectGateway(url, token);
    return await fn(client, url);
  } catch (e) {
    if (io.signal.aborted) return 130;
    io.stderr(`nexusflow: ${name}: ${describeError(e, url)}\n`);
    return 1;
  } finally {
    client?.close();
  }
}
