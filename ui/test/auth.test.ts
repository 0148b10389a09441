/**
 * The token's claims as the UI reads them for display (ui/src/auth.ts), and the hand-over of a
 * token in the URL fragment, against stand-ins for the browser's location, history and
 * sessionStorage (the browser test does it in Chromium).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { decodeToken, forgetToken, hasScope, storedToken, takeTokenFromFragment } from "../src/auth";

const jwt = (claims: object): string =>
  `${Buffer.from('{"alg":"EdDSA"}').toString("base64url")}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;

describe("decodeToken", () => {
  it("reads scopes from scope, scp and roles, the subject and the expiry", () => {
    const info = decodeToken(
      jwt({
        sub: "ada",
        scope: "runs:read  workflows:read",
        scp: ["runs:write"],
        roles: "ops",
        exp: 2_000_000_000,
      }),
    );
    assert.equal(info?.subject, "ada");
    assert.deepEqual([...(info?.scopes ?? [])].sort(), ["ops", "runs:read", "runs:write", "workflows:read"]);
    assert.equal(info?.expiresAt?.getTime(), 2_000_000_000_000);
    assert.equal(hasScope(info, "runs:write"), true);
    assert.equal(hasScope(info, "workflows:write"), false);
  });

  it("grants every scope to admin, none to nothing", () => {
    assert.equal(hasScope(decodeToken(jwt({ scope: "admin" })), "runs:write"), true);
    assert.equal(hasScope(undefined, "runs:read"), false);
    assert.equal(hasScope(decodeToken(jwt({ sub: "x" })), "runs:read"), false);
  });

  it("says undefined for what is not a JWT, and survives non-ASCII claims", () => {
    assert.equal(decodeToken("opaque-token"), undefined);
    assert.equal(decodeToken("a.b"), undefined);
    assert.equal(decodeToken("a.%%%.c"), undefined);
    assert.equal(decodeToken(`a.${Buffer.from("[1]").toString("base64url")}.c`)?.scopes.size, 0);
    assert.equal(decodeToken(`a.${Buffer.from("null").toString("base64url")}.c`), undefined);
    assert.equal(decodeToken(jwt({ sub: "Zoë" }))?.subject, "Zoë");
  });
});

describe("takeTokenFromFragment", () => {
  const store = new Map<string, string>();
  let replaced: string[] = [];
  const setLocation = (pathname: string, search: string, hash: string): void => {
    Object.assign(globalThis, {
      window: {
        location: { pathname, search, hash },
        history: { state: null, replaceState: (_s: unknown, _t: string, url: string) => replaced.push(url) },
      },
    });
  };

  beforeEach(() => {
    store.clear();
    replaced = [];
    Object.assign(globalThis, {
      sessionStorage: {
        getItem: (k: string) => store.get(k) ?? null,
        setItem: (k: string, v: string) => store.set(k, v),
        removeItem: (k: string) => store.delete(k),
      },
    });
  });
  afterEach(() => {
    delete (globalThis as { window?: unknown }).window;
    delete (globalThis as { sessionStorage?: unknown }).sessionStorage;
  });

  it("moves the token into sessionStorage and takes it out of the URL, keeping the rest", () => {
    setLocation("/ui/runs/r1", "?x=1", "#token=abc.def.ghi&tab=2");
    takeTokenFromFragment();
    assert.equal(storedToken(), "abc.def.ghi");
    assert.deepEqual(replaced, ["/ui/runs/r1?x=1#tab=2"]);
    setLocation("/ui/", "", "#token=t2");
    takeTokenFromFragment();
    assert.equal(storedToken(), "t2");
    assert.equal(replaced.at(-1), "/ui/");
    forgetToken();
    assert.equal(storedToken(), undefined);
  });

  it("leaves a URL without a token alone", () => {
    setLocation("/ui/", "", "#other=1");
    takeTokenFromFragment();
    setLocation("/ui/", "", "");
    takeTokenFromFragment();
    assert.deepEqual(replaced, []);
    assert.equal(storedToken(), undefined);
  });
});
