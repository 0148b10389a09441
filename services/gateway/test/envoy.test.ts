/**
 * deploy/envoy/envoy.yaml against Envoy's API: parsed from YAML to JSON and read as an
 * envoy.config.bootstrap.v3.Bootstrap with @bufbuild/protobuf, strictly (unknown fields, bad enum
 * values, unknown `@type`s and wrong value types are errors), using descriptors built from the
 * protos in @grpc/grpc-js-xds. Then what the schema cannot see: every route and JWKS fetch names a
 * cluster that exists, every JWT rule a provider that exists, the transcoder the real services.
 * A deliberately broken copy proves that the check bites. (Validation rules such as min lengths
 * and anything Envoy decides at run time are out of reach without an Envoy binary.)
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import {
  type DescMessage,
  type FileRegistry,
  type JsonValue,
  createFileRegistry,
  fromBinary,
  fromJson,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import {
  ArtifactService,
  ClusterService,
  EventService,
  RateLimitService,
  ScheduleService,
  WorkflowService,
} from "@nexusflow/gen";
import { parse as parseYaml } from "yaml";
import { envoyRegistry } from "./envoy-descriptors.js";
import { BUF, ROOT, tool } from "./tools.js";

const ENVOY_YAML = join(ROOT, "deploy", "envoy", "envoy.yaml");
/** The compose stack's copy (compose.test.ts checks it is this file but for its key source). */
const COMPOSE_ENVOY_YAML = join(ROOT, "deploy", "compose", "envoy.yaml");

/** The Envoy API files whose types envoy.yaml uses (the bootstrap and every typed_config). */
const ENVOY_PROTOS = [
  "envoy/config/bootstrap/v3/bootstrap.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
  "envoy/extensions/filters/http/grpc_json_transcoder/v3/transcoder.proto",
  "envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto",
  "envoy/extensions/filters/http/cors/v3/cors.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
  "envoy/extensions/transport_sockets/tls/v3/tls.proto",
];

type Obj = Record<string, unknown>;

/** Every object (at any depth) under `value` for which `pick` holds. */
function findAll(value: unknown, pick: (o: Obj) => boolean): Obj[] {
  const found: Obj[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === "object" && v !== null) {
      if (pick(v as Obj)) found.push(v as Obj);
      Object.values(v).forEach(walk);
    }
  };
  walk(value);
  return found;
}

const typed = (suffix: string) => (o: Obj) => typeof o["@type"] === "string" && o["@type"].endsWith(suffix);

describe("deploy/envoy/envoy.yaml", () => {
  let registry: FileRegistry;
  let bootstrap: DescMessage;
  let text: string;

  /** YAML → JSON → Bootstrap, strictly; throws on anything Envoy's schema does not allow. */
  const validate = (yaml: string): JsonValue => {
    const json = parseYaml(yaml) as JsonValue;
    fromJson(bootstrap, json, { registry, ignoreUnknownFields: false });
    return json;
  };

  before(async () => {
    registry = envoyRegistry(ENVOY_PROTOS);
    const desc = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
    assert.ok(desc !== undefined);
    bootstrap = desc;
    text = await readFile(ENVOY_YAML, "utf8");
  });

  it("is a valid Envoy v3 Bootstrap", () => {
    validate(text);
  });

  it("has the filters the gateway needs, router last, each once", () => {
    const json = validate(text);
    const hcm = findAll(json, typed("HttpConnectionManager"))[0];
    assert.ok(hcm !== undefined);
    const names = (hcm["http_filters"] as Obj[]).map((f) => f["name"]);
    for (const filter of [
      "envoy.filters.http.jwt_authn",
      "envoy.filters.http.grpc_web",
      "envoy.filters.http.grpc_json_transcoder",
    ]) {
      assert.equal(names.filter((n) => n === filter).length, 1, filter);
    }
    assert.equal(names.at(-1), "envoy.filters.http.router");
  });

  it("names only clusters, providers and services that exist", () => {
    const json = validate(text) as Obj;
    const clusters = new Set(
      ((json["static_resources"] as Obj)["clusters"] as Obj[]).map((c) => c["name"] as string),
    );
    const routeTargets = findAll(json, (o) => typeof o["cluster"] === "string").map(
      (o) => o["cluster"] as string,
    );
    assert.ok(routeTargets.length >= 3);
    for (const target of routeTargets) assert.ok(clusters.has(target), `unknown cluster ${target}`);

    const jwt = findAll(json, typed("JwtAuthentication"))[0] as Obj;
    const providers = new Set(Object.keys(jwt["providers"] as Obj));
    const required = findAll(jwt["rules"], (o) => typeof o["provider_name"] === "string");
    assert.ok(required.length > 0, "some route requires a token");
    for (const r of required) assert.ok(providers.has(r["provider_name"] as string));
    const open = (jwt["rules"] as Obj[])
      .filter((r) => r["requires"] === undefined)
      .map((r) => (r["match"] as Obj)["prefix"]);
    assert.deepEqual(
      open,
      ["/healthz", "/grpc.reflection."],
      "only health and reflection go without a token",
    );

    const transcoder = findAll(json, typed("GrpcJsonTranscoder"))[0] as Obj;
    assert.deepEqual(transcoder["services"], [
      WorkflowService.typeName,
      ArtifactService.typeName,
      ClusterService.typeName,
      ScheduleService.typeName,
      RateLimitService.typeName,
      EventService.typeName,
    ]);
  });

  it("lets the transcoder answer a run over 16 MiB, in both configs (Envoy's 1 MiB buffer otherwise)", async () => {
    for (const file of [ENVOY_YAML, COMPOSE_ENVOY_YAML]) {
      const transcoder = findAll(validate(await readFile(file, "utf8")), typed("GrpcJsonTranscoder"));
      assert.equal(transcoder.length, 1, file);
      const { max_request_body_size: request, max_response_body_size: response } = transcoder[0]!;
      assert.ok(typeof response === "number", `${file} sets max_response_body_size`);
      assert.ok(typeof request === "number", `${file} sets max_request_body_size`);
      // A run's input may be 16 MiB (the scheduler's limit, over gRPC): its answer must fit.
      assert.ok(response > 16 * 1024 * 1024, `${file}: max_response_body_size ${response}`);
      assert.ok(response >= request, file);
    }
  });

  it(
    "transcodes with a descriptor set that `buf build` makes from proto/, as the header says",
    { timeout: 60_000 },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "nf-envoy-"));
      try {
        const out = join(dir, "nexusflow.binpb");
        await tool(BUF, ["build", "-o", out]);
        const set = fromBinary(FileDescriptorSetSchema, await readFile(out));
        const files = createFileRegistry(set);
        const transcoder = findAll(validate(text), typed("GrpcJsonTranscoder"))[0] as Obj;
        for (const service of transcoder["services"] as string[]) {
          assert.ok(files.getService(service) !== undefined, `${service} is not in the descriptor set`);
        }
        assert.ok(set.file.some((f) => f.name === "google/api/http.proto"));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it("rejects a deliberately broken copy: misspelled fields, bad enums, unknown types, wrong values", () => {
    const breakages: [string, string, RegExp][] = [
      ["stat_prefix: nexusflow", "stats_prefix: nexusflow", /stats_prefix/],
      ["codec_type: AUTO", "codec_type: AUTOMATIC", /AUTOMATIC/],
      ["lb_policy: ROUND_ROBIN", "lb_policy: ROUND_ROBBIN", /ROUND_ROBBIN/],
      ["grpc_web.v3.GrpcWeb", "grpc_web.v3.GrpcWebb", /GrpcWebb/],
      ["convert_grpc_status: true", "convert_grpc_statuses: true", /convert_grpc_statuses/],
      ["port_value: 8000", "port_value: eight-thousand", /port_value|eight-thousand/],
      ["connect_timeout: 2s", "connect_timeout: two seconds", /connect_timeout|two seconds/],
      ["cache_duration: 600s", "cache_duraton: 600s", /cache_duraton/],
      ["max_response_body_size: 33554432", "max_response_body_bytes: 33554432", /max_response_body_bytes/],
    ];
    for (const [from, to, error] of breakages) {
      assert.ok(text.includes(from), `the fixture contains ${JSON.stringify(from)}`);
      const broken = text.replace(from, to);
      assert.throws(() => validate(broken), error, `${JSON.stringify(to)} was accepted`);
    }
  });
});
