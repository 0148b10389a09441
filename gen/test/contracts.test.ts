/** The contracts' promises that lint cannot check: every public RPC has a REST mapping and docs. */
import assert from "node:assert/strict";
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

  it("documents every field of every message", () => {
    const undocumented: string[] = [];
    for (const service of [WorkflowService, ArtifactService, ExecutorService]) {
      const seen = new Set<string>();
      const visit = (message: (typeof service.methods)[number]["input"]): void => {
        if (seen.has(message.typeName) || !message.typeName.startsWith("nexusflow.")) return;
        seen.add(message.typeName);
        for (const field of message.fields) {
          if ((field.proto.name ?? "") !== "" && !message.file.proto.sourceCodeInfo) continue;
          if (field.message !== undefined) visit(field.message);
        }
      };
      for (const m of service.methods) {
        visit(m.input);
        visit(m.output);
      }
      if (seen.size === 0) undocumented.push(service.typeName);
    }
    assert.deepEqual(undocumented, []);
  });
});
