/**
 * docker-compose.yml cannot run here (no Docker engine), so check what can be checked: it parses,
 * every Nexusflow service runs an entry point that exists, and every environment variable it sets
 * is one that common/src/config.ts actually reads (a typo would be silently ignored otherwise).
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";

const ROOT = join(import.meta.dirname, "../../..");

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, unknown>;
}

describe("docker-compose.yml", () => {
  const compose = parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8"), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  const known = new Set(
    [...readFileSync(join(ROOT, "common/src/config.ts"), "utf8").matchAll(/"([A-Z][A-Z0-9_]{2,})"/g)].map(
      (m) => m[1],
    ),
  );

  it("defines the stack: PostgreSQL, Kafka, MinIO, scheduler, executor, gateway and Envoy", () => {
    for (const name of ["postgres", "kafka", "minio", "scheduler", "executor", "gateway", "envoy"]) {
      assert.ok(compose.services[name], `service ${name}`);
    }
  });

  for (const name of ["scheduler", "executor", "gateway"]) {
    it(`${name}: runs an existing entry point and sets only variables the config reads`, () => {
      const service = compose.services[name]!;
      const entry = service.command?.find((part) => part.endsWith("main.ts"));
      assert.ok(entry !== undefined && existsSync(join(ROOT, entry)), `entry point ${entry}`);
      const unknown = Object.keys(service.environment ?? {}).filter((v) => !known.has(v));
      assert.deepEqual(unknown, [], `unknown variables in ${name}`);
    });
  }

  it("mounts the Envoy configuration that the Envoy test validates", () => {
    const volumes = (compose.services["envoy"] as { volumes?: string[] }).volumes ?? [];
    assert.ok(volumes.some((v) => v.startsWith("./deploy/envoy/envoy.yaml:")));
  });
});
