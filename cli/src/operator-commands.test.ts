/** Pure parts of the operator commands: addresses, tables, error lines, dev tokens. */
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createTokenVerifier } from "@nexusflow/common";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { DEV_AUDIENCE, DEV_ISSUER, ensureDevKeys, mintDevToken } from "./dev-keys.js";
import { AddressError, gatewayUrl, resolveToken } from "./gateway-client.js";
import { classifyWorkflowFile } from "./apply-command.js";
import { describeError } from "./describe-error.js";
import { formatTable, truncate } from "./table.js";

describe("operator command helpers", () => {
  it("accepts host:port or a URL as the gateway address", () => {
    assert.equal(gatewayUrl("127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert.equal(gatewayUrl("http://localhost:9000/"), "http://localhost:9000");
    assert.equal(gatewayUrl("https://api.example.com"), "https://api.example.com");
    assert.throws(() => gatewayUrl("ftp://x"), AddressError);
    assert.throws(() => gatewayUrl("http://"), AddressError);
  });

  it("aligns tables", () => {
    assert.equal(
      formatTable(
        ["A", "LONGER"],
        [
          ["xyz", "1"],
          ["", "22"],
        ],
      ),
      "A    LONGER\nxyz  1\n     22",
    );
    assert.equal(truncate("abcdef", 4), "abc…");
  });

  it("describes failures in one line with the violations and a hint", () => {
    const err = new ConnectError("bad request", Code.InvalidArgument, undefined, [
      {
        desc: BadRequestSchema,
        value: { fieldViolations: [{ field: "$.steps[0]", description: "needs\nan id" }] },
      },
    ]);
    assert.equal(describeError(err, "http://x"), "INVALID_ARGUMENT: bad request ($.steps[0]: needs an id)");
    assert.match(
      describeError(new ConnectError("no", Code.Unavailable), "http://x"),
      /is the gateway running at http:\/\/x/,
    );
    assert.match(
      describeError(new ConnectError("who?", Code.Unauthenticated), "http://x"),
      /NEXUSFLOW_TOKEN/,
    );
    // Without a gateway of the user's choosing (nexusflow dev), no hint about what to set.
    assert.equal(describeError(new ConnectError("no", Code.Unavailable)), "UNAVAILABLE: no");
    assert.equal(describeError(new Error("plain")), "plain");
  });

  it("tells workflow definitions from other JSON and from text that is not JSON", () => {
    assert.deepEqual(classifyWorkflowFile('{"name":"a","steps":[]}'), { kind: "definition" });
    assert.equal(classifyWorkflowFile('{"orderId":"o-1"}').kind, "other");
    assert.equal(classifyWorkflowFile("[1]").kind, "other");
    assert.equal(classifyWorkflowFile("{nope").kind, "invalid");
  });

  it("mints dev tokens that a verifier of the dev key accepts, and only it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nf-dev-keys-"));
    try {
      const keys = await ensureDevKeys(join(dir, "dev-keys"));
      assert.equal((await stat(keys.privateKeyFile)).mode & 0o777, 0o600);
      assert.deepEqual(await ensureDevKeys(join(dir, "dev-keys")), keys, "the key is created once");
      const token = await mintDevToken(keys, { subject: "me", scopes: ["runs:read"], ttlSec: 60 });
      const verifier = await createTokenVerifier({
        publicKeyFiles: [keys.publicKeyFile],
        issuer: DEV_ISSUER,
        audience: DEV_AUDIENCE,
      });
      const principal = await verifier.verify(token);
      assert.equal(principal.subject, "me");
      assert.deepEqual([...principal.scopes], ["runs:read"]);
      const production = await createTokenVerifier({
        publicKeyFiles: [keys.publicKeyFile],
        issuer: "https://idp.example.com/",
        audience: DEV_AUDIENCE,
      });
      await assert.rejects(production.verify(token), /issuer "nexusflow-dev" is not/);

      const env = { NEXUSFLOW_DATA_DIR: dir };
      assert.equal((await resolveToken("flag", env, "http://127.0.0.1:1", "/")).source, "flag");
      assert.equal(
        (await resolveToken(undefined, { ...env, NEXUSFLOW_TOKEN: "t" }, "http://127.0.0.1:1", "/")).source,
        "env",
      );
      assert.equal((await resolveToken(undefined, env, "http://127.0.0.1:1", "/")).source, "dev-key");
      assert.equal(
        (await resolveToken(undefined, env, "https://api.example.com", "/")).source,
        "none",
        "never for a remote gateway",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
