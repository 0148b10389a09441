import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { ExecutorService, SessionRequestSchema, WorkflowService } from "@nexusflow/gen";
import { BadRequestSchema } from "@nexusflow/gen/google/rpc/error_details_pb";
import { StatusSchema } from "@nexusflow/gen/google/rpc/status_pb";
import { ApiError, Code } from "./errors.js";
import { isUnavailable, isUndecodable, serviceDefinition, toGrpcStatus } from "./grpc.js";

/** The google.rpc.Status a status object carries in grpc-status-details-bin. */
function richStatus(s: ReturnType<typeof toGrpcStatus>) {
  const bin = s.metadata?.get("grpc-status-details-bin")[0];
  assert.ok(bin instanceof Buffer);
  return fromBinary(StatusSchema, bin);
}

/** An Error with a `code`, as Node's sockets and node-postgres make them. */
function coded(message: string, code: string, cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code });
}

describe("isUnavailable", () => {
  it("recognises an unreachable dependency by the code of the error or of a cause", () => {
    for (const code of [
      "ECONNREFUSED",
      "ECONNRESET",
      "ETIMEDOUT",
      "EPIPE",
      "57P01",
      "57P03",
      "08001",
      "08006",
    ])
      assert.ok(isUnavailable(coded("anything", code)), code);
    // MikroORM and pg-pool wrap the driver's error.
    const wrapped = new Error("Connection terminated due to connection timeout", {
      cause: new Error("outer", { cause: coded("connect ECONNREFUSED 127.0.0.1:5432", "ECONNREFUSED") }),
    });
    assert.ok(isUnavailable(wrapped));
  });

  it("never by the message: one without a code is not recognised, whatever it says", () => {
    for (const text of [
      "Connection terminated unexpectedly",
      "connect ECONNREFUSED 127.0.0.1:5432",
      "timeout exceeded when trying to connect",
      "Client has encountered a connection error and is not queryable",
    ])
      assert.equal(isUnavailable(new Error(text)), false, text);
    assert.equal(isUnavailable(coded("duplicate key value", "23505")), false);
    assert.equal(isUnavailable(coded("no such file", "ENOENT")), false);
    assert.equal(isUnavailable("ECONNREFUSED"), false);
    assert.equal(isUnavailable(null), false);
  });

  it("makes toGrpcStatus answer UNAVAILABLE instead of INTERNAL", () => {
    assert.equal(toGrpcStatus(coded("Connection terminated unexpectedly", "08006")).code, Code.UNAVAILABLE);
    assert.equal(toGrpcStatus(new Error("Connection terminated unexpectedly")).code, Code.INTERNAL);
  });
});

describe("toGrpcStatus", () => {
  it("makes a message with a lone surrogate well-formed: grpc-js's encodeURI of it cannot throw", () => {
    // V8's JSON.parse quotes half of an astral character: a client's text can end up like this.
    const s = toGrpcStatus(ApiError.invalid("spec_json", "Unexpected token '\ud83d'"));
    assert.equal(s.details, "spec_json: Unexpected token '\ufffd'");
    assert.doesNotThrow(() => encodeURI(s.details ?? ""));
    assert.equal(s.code, Code.INVALID_ARGUMENT);
  });

  it("bounds the message and the field violations however much client text they quote", () => {
    const huge = "é".repeat(3_000_000);
    const e = new ApiError(
      Code.INVALID_ARGUMENT,
      `name: ${huge}`,
      Array.from({ length: 5_000 }, (_, i) => ({ field: `$.steps[${i}].${huge}`, description: huge })),
    );
    const s = toGrpcStatus(e);
    assert.match(s.details ?? "", /^name: é+… \(2998982 more characters\)$/);
    assert.ok((s.details ?? "").length < 1100);
    const rich = richStatus(s);
    assert.equal(rich.message, s.details);
    const [detail] = rich.details;
    assert.ok(detail);
    const violations = fromBinary(BadRequestSchema, detail.value).fieldViolations;
    assert.ok(violations.length > 0 && violations.length < 5_000, `${violations.length} violations`);
    assert.match(violations[0]?.field ?? "", /^\$\.steps\[0\]\.é+… \(\d+ more characters\)$/);
    // Well under what HTTP/2 clients accept as headers (Node: 64 KiB), percent-encoding included.
    const bytes = encodeURI(s.details ?? "").length + toBinary(StatusSchema, rich).length * 2;
    assert.ok(bytes < 48 * 1024, `${bytes} bytes of trailers`);
  });

  it("keeps short messages and violations as they are", () => {
    const s = toGrpcStatus(ApiError.invalid("input.a", "NaN has no JSON form"));
    assert.equal(s.details, "input.a: NaN has no JSON form");
    const [detail] = richStatus(s).details;
    assert.ok(detail);
    assert.deepEqual(
      fromBinary(BadRequestSchema, detail.value).fieldViolations.map((v) => [v.field, v.description]),
      [["input.a", "NaN has no JSON form"]],
    );
  });
});

describe("serviceDefinition", () => {
  it("hands a handler an undecodable request in its turn, saying why, instead of throwing", () => {
    let deep: Value = create(ValueSchema, { kind: { case: "numberValue", value: 1 } });
    for (let i = 0; i < 80; i++)
      deep = create(ValueSchema, { kind: { case: "listValue", value: { values: [deep] } } });
    const bytes = toBinary(
      SessionRequestSchema,
      create(SessionRequestSchema, { message: { case: "completed", value: { output: deep } } }),
    );
    const session = serviceDefinition(ExecutorService)["session"];
    assert.ok(session);
    const decoded: unknown = session.requestDeserialize(Buffer.from(bytes));
    assert.ok(isUndecodable(decoded), "not decoded");
    assert.equal(decoded.typeName, "nexusflow.v1.SessionRequest");
    assert.equal(decoded.firstFieldNumber, SessionRequestSchema.field.completed.number);
    const e = decoded.toApiError();
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.match(
      e.message,
      /^the message is not a valid nexusflow\.v1\.SessionRequest: .*maximum recursion depth/,
    );

    const garbage: unknown = serviceDefinition(WorkflowService)["getRun"]?.requestDeserialize(
      Buffer.from([0xff, 0xff, 0xff]),
    );
    assert.ok(isUndecodable(garbage));
    assert.equal(garbage.firstFieldNumber, undefined);
    // A valid message is decoded as usual.
    const ok: unknown = session.requestDeserialize(
      Buffer.from(toBinary(SessionRequestSchema, create(SessionRequestSchema))),
    );
    assert.ok(!isUndecodable(ok));
  });
});
