/**
 * Reflection on a grpc-js server as the scheduler sets it up, asked over the wire with raw
 * grpc.reflection requests (v1 and v1alpha): the services are listed, and the google.rpc error
 * detail types the scheduler sends can be looked up by symbol, so grpcurl can decode them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import { ArtifactService, ExecutorService, WorkflowService } from "@nexusflow/gen";
import { addReflection } from "./reflection.js";

const VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"];

/** What a ServerReflectionResponse carried: files, service names, or an error message. */
interface Answer {
  files: FileDescriptorProto[];
  services: string[];
  error?: string;
}

/** ServerReflectionResponse: file_descriptor_response = 4, list_services_response = 6, error_response = 7. */
function decodeResponse(bytes: Uint8Array): Answer {
  const answer: Answer = { files: [], services: [] };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 4 || field === 6) {
      const inner = new BinaryReader(reader.bytes());
      while (inner.pos < inner.len) {
        const [f, w] = inner.tag();
        if (f !== 1) {
          inner.skip(w);
        } else if (field === 4) {
          answer.files.push(fromBinary(FileDescriptorProtoSchema, inner.bytes()));
        } else {
          // ServiceResponse: name = 1.
          const service = new BinaryReader(inner.bytes());
          while (service.pos < service.len) {
            const [sf, sw] = service.tag();
            if (sf === 1) answer.services.push(service.string());
            else service.skip(sw);
          }
        }
      }
    } else if (field === 7) {
      const inner = new BinaryReader(reader.bytes());
      while (inner.pos < inner.len) {
        const [f, w] = inner.tag();
        if (f === 2) answer.error = inner.string();
        else inner.skip(w);
      }
    } else {
      reader.skip(wireType);
    }
  }
  return answer;
}

describe("scheduler reflection", () => {
  let server: grpc.Server;
  let client: grpc.Client;

  before(async () => {
    server = new grpc.Server();
    addReflection(server, [WorkflowService, ExecutorService, ArtifactService]);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
  });

  /** One ServerReflectionRequest (`field` = 4 file_containing_symbol, 7 list_services) to `version`. */
  function ask(version: string, field: number, value: string): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const call = client.makeBidiStreamRequest(
        `/${version}.ServerReflection/ServerReflectionInfo`,
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer) => decodeResponse(b),
      );
      call.on("data", (a: Answer) => {
        resolve(a);
        call.end();
      });
      call.on("error", reject);
      call.write(new BinaryWriter().tag(field, 2).string(value).finish());
    });
  }

  it("answers several requests on one stream in order, sent before the library was loaded", async () => {
    // The first stream of a new server: its requests arrive while @grpc/reflection is imported.
    const fresh = new grpc.Server();
    addReflection(fresh, [WorkflowService]);
    const port = await new Promise<number>((resolve, reject) =>
      fresh.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const other = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const answers = await new Promise<Answer[]>((resolve, reject) => {
        const call = other.makeBidiStreamRequest(
          `/${VERSIONS[0]}.ServerReflection/ServerReflectionInfo`,
          (b: Uint8Array) => Buffer.from(b),
          (b: Buffer) => decodeResponse(b),
        );
        const got: Answer[] = [];
        call.on("data", (a: Answer) => got.push(a));
        call.on("end", () => resolve(got));
        call.on("error", reject);
        call.write(new BinaryWriter().tag(7, 2).string("*").finish());
        call.write(new BinaryWriter().tag(4, 2).string("google.rpc.Status").finish());
        call.write(new BinaryWriter().tag(4, 2).string("no.such.Symbol").finish());
        call.end();
      });
      assert.equal(answers.length, 3);
      assert.deepEqual(answers[0]?.services, ["nexusflow.v1.WorkflowService"]);
      assert.ok(answers[1]?.files.some((f) => f.name === "google/rpc/status.proto"));
      assert.match(answers[2]?.error ?? "", /no\.such\.Symbol/);
    } finally {
      other.close();
      await new Promise<void>((resolve) => fresh.tryShutdown(() => resolve()));
    }
  });

  it("lists only the services", async () => {
    for (const version of VERSIONS) {
      const { services } = await ask(version, 7, "*");
      assert.deepEqual(services.sort(), [
        "nexusflow.v1.ArtifactService",
        "nexusflow.v1.ExecutorService",
        "nexusflow.v1.WorkflowService",
      ]);
    }
  });

  it("answers file_containing_symbol for the google.rpc error details, with their imports", async () => {
    for (const version of VERSIONS) {
      for (const symbol of [
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
        "google.rpc.ResourceInfo",
        "google.rpc.Status",
      ]) {
        const { files, error } = await ask(version, 4, symbol);
        assert.equal(error, undefined, `${version} ${symbol}`);
        const file = files.find(
          (f) => f.package === "google.rpc" && f.messageType.some((m) => `google.rpc.${m.name}` === symbol),
        );
        assert.ok(file, `${version} ${symbol}: ${files.map((f) => f.name).join(", ")}`);
        const names = new Set(files.map((f) => f.name));
        for (const dep of file.dependency) assert.ok(names.has(dep), `${version} ${symbol}: missing ${dep}`);
      }
      const { files } = await ask(version, 4, "google.rpc.BadRequest");
      const badRequest = files
        .find((f) => f.name === "google/rpc/error_details.proto")
        ?.messageType.find((m) => m.name === "BadRequest");
      assert.deepEqual(
        badRequest?.nestedType[0]?.field.slice(0, 2).map((f) => f.name),
        ["field", "description"],
      );
    }
  });
});
