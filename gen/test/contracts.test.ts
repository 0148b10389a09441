/** The contracts' promises that lint cannot check: every public RPC has a REST mapping and docs. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { http } from "@nexusflow/gen/google/api/annotations_pb";
import { ArtifactService, ExecutorService, WorkflowService } from "@nexusflow/gen";

describe("contracts", () => {
  for (const service of [WorkflowService, ArtifactService]) {
    it(`every ${service.name} RPC has a google.api.http annotation`, () => {
      for (const method of service.methods) {
        assert.ok(
          hasOption(method, http),
          `${service.typeName}.${method.name} has no google.api.http option`,
        );
        const rule = getOption(method, http);
        assert.ok(rule.pattern.case !== undefined, `${method.name}: empty HTTP rule`);
        const path = rule.pattern.case === "custom" ? rule.pattern.value.path : (rule.pattern.value ?? "");
        assert.match(path, /^\/v1\//, `${method.name}: REST paths live under /v1/`);
      }
    });
  }

  it("keeps the executor session internal (no REST mapping) and bidirectional", () => {
    const session = ExecutorService.method.session;
    assert.equal(session.methodKind, "bidi_streaming");
    assert.equal(hasOption(session, http), false);
  });

  it("documents every service, RPC, message, enum, field and enum value in proto/nexusflow", () => {
    const dir = join(import.meta.dirname, "../../proto/nexusflow/v1");
    const declaration =
      /^\s*(service|rpc|message|enum|oneof)\s|^\s*(repeated\s+|optional\s+)?[\w.]+(<[\w, .]+>)?\s+\w+\s*=\s*\d+|^\s*[A-Z][A-Z0-9_]+\s*=\s*\d+/;
    const undocumented: string[] = [];
    let declarations = 0;
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".proto"))) {
      const lines = readFileSync(join(dir, file), "utf8").split("\n");
      lines.forEach((line, i) => {
        if (!declaration.test(line)) return;
        declarations++;
        const previous = lines[i - 1]?.trim() ?? "";
        if (!previous.startsWith("//")) undocumented.push(`${file}:${i + 1}: ${line.trim()}`);
      });
    }
    assert.ok(declarations > 200, `found only ${declarations} declarations: the pattern is broken`);
    assert.deepEqual(undocumented, []);
  });
});
