import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isNexusflowClientError } from "./errors.js";
import { compileClientOptions, normaliseBaseUrl } from "./options.js";

const invalid = (e: unknown): boolean => isNexusflowClientError(e, "INVALID_OPTIONS");

describe("compileClientOptions", () => {
  it("applies the documented defaults", () => {
    const o = compileClientOptions();
    assert.equal(o.baseUrl, "http://127.0.0.1:8080");
    assert.equal(o.protocol, "grpc");
    assert.equal(o.httpVersion, "2");
    assert.equal(o.token, undefined);
    assert.equal(o.timeoutMs, 30_000);
    assert.deepEqual(o.retry, { maxAttempts: 4, initialDelayMs: 100, maxDelayMs: 2_000 });
    assert.equal(compileClientOptions({ protocol: "connect" }).httpVersion, "1.1");
    assert.equal(compileClientOptions({ retry: false }).retry.maxAttempts, 1);
  });

  it("turns a fixed token into a provider and keeps a function as it is", async () => {
    const fixed = compileClientOptions({ token: "abc" }).token;
    assert.equal(await fixed?.({ method: "m", signal: new AbortController().signal }), "abc");
    const fn = (): string => "x";
    assert.equal(compileClientOptions({ token: fn }).token, fn);
  });

  it("refuses bad values with INVALID_OPTIONS naming the option", () => {
    assert.throws(() => compileClientOptions({ token: "" }), invalid);
    assert.throws(() => compileClientOptions({ timeoutMs: -1 }), invalid);
    assert.throws(() => compileClientOptions({ retry: { maxAttempts: 0 } }), invalid);
    assert.throws(() => compileClientOptions({ retry: { initialDelayMs: 500, maxDelayMs: 100 } }), invalid);
    assert.throws(() => compileClientOptions({ protocol: "grpc", httpVersion: "1.1" }), /gRPC needs HTTP\/2/);
    assert.throws(() => compileClientOptions({ protocol: "rest" as "grpc" }), invalid);
  });
});

describe("normaliseBaseUrl", () => {
  it("takes URLs and host:port, keeps a path prefix, drops a trailing slash", () => {
    assert.equal(normaliseBaseUrl("127.0.0.1:50051"), "http://127.0.0.1:50051");
    assert.equal(normaliseBaseUrl("https://api.example.com/"), "https://api.example.com");
    assert.equal(normaliseBaseUrl("http://proxy:8080/nexusflow/"), "http://proxy:8080/nexusflow");
  });

  it("refuses other schemes, queries and garbage", () => {
    assert.throws(() => normaliseBaseUrl("ftp://example.com"), invalid);
    assert.throws(() => normaliseBaseUrl("http://example.com/?a=1"), invalid);
    assert.throws(() => normaliseBaseUrl("http://[::1"), invalid);
    assert.throws(() => normaliseBaseUrl(""), invalid);
  });
});
