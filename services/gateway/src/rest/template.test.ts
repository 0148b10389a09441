/** Path templates of google.api.http: parsing, matching, decoding and precedence. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TemplateError, matchPathTemplate, parsePathTemplate } from "./template.js";

const match = (template: string, path: string): Record<string, string> | undefined => {
  const m = matchPathTemplate(parsePathTemplate(template), path);
  return m === undefined ? undefined : Object.fromEntries(m);
};

describe("path templates", () => {
  it("parses literals, variables, wildcards and verbs", () => {
    const t = parsePathTemplate("/v1/runs/{run_id}:cancel");
    assert.deepEqual(t.segments, [
      { kind: "literal", value: "v1" },
      { kind: "literal", value: "runs" },
      { kind: "wildcard" },
    ]);
    assert.deepEqual(t.variables, [{ fieldPath: ["run_id"], start: 2, end: 3 }]);
    assert.equal(t.verb, "cancel");
    const deep = parsePathTemplate("/v1/artifacts/{key=**}");
    assert.deepEqual(deep.segments.at(-1), { kind: "deep" });
    const nested = parsePathTemplate("/v1/{parent.name=projects/*/runs/*}/logs");
    assert.deepEqual(nested.variables, [{ fieldPath: ["parent", "name"], start: 1, end: 5 }]);
  });

  it("rejects templates outside the grammar", () => {
    for (const bad of [
      "v1/runs",
      "/v1//runs",
      "/v1/{run id}",
      "/v1/{a={b}}",
      "/v1/**/x",
      "/v1/{x",
      "/v1/x:",
    ]) {
      assert.throws(() => parsePathTemplate(bad), TemplateError, bad);
    }
  });

  it("matches and decodes variables", () => {
    assert.deepEqual(match("/v1/runs/{run_id}", "/v1/runs/abc"), { run_id: "abc" });
    assert.deepEqual(match("/v1/runs/{run_id}", "/v1/runs/a%20b%2Fc"), { run_id: "a b/c" });
    assert.deepEqual(match("/v1/workflows/{name}/versions/{version}", "/v1/workflows/w/versions/3"), {
      name: "w",
      version: "3",
    });
    assert.equal(match("/v1/runs/{run_id}", "/v1/runs"), undefined);
    assert.equal(match("/v1/runs/{run_id}", "/v1/runs/"), undefined);
    assert.equal(match("/v1/runs/{run_id}", "/v1/runs/a/b"), undefined);
    assert.equal(match("/v1/runs/{run_id}", "/v1/runs/%E0%A4%A"), undefined, "malformed escape");
  });

  it("matches custom verbs only with their verb", () => {
    assert.deepEqual(match("/v1/runs/{run_id}:cancel", "/v1/runs/r1:cancel"), { run_id: "r1" });
    assert.equal(match("/v1/runs/{run_id}:cancel", "/v1/runs/r1"), undefined);
    assert.equal(match("/v1/runs/{run_id}:cancel", "/v1/runs/r1:watch"), undefined);
  });

  it("matches ** across segments and keeps an encoded slash encoded", () => {
    assert.deepEqual(match("/v1/artifacts/{key=**}", "/v1/artifacts/runs/r1/a%20b.txt"), {
      key: "runs/r1/a b.txt",
    });
    assert.deepEqual(match("/v1/artifacts/{key=**}", "/v1/artifacts/a%2Fb/c"), { key: "a%2Fb/c" });
    assert.deepEqual(match("/v1/{name=projects/*/runs/*}", "/v1/projects/p/runs/r"), {
      name: "projects/p/runs/r",
    });
    assert.equal(match("/v1/{name=projects/*/runs/*}", "/v1/projects/p/jobs/r"), undefined);
  });
});
