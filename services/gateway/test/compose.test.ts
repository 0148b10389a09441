/**
 * docker-compose.yml cannot run here (no Docker engine), so everything that can be checked without
 * one is: the file loads as `docker compose config` loads it (compose-go, scripts/tools/compose-check)
 * with the example env file, and not without its secrets; every long-running service has a
 * healthcheck and every dependency a condition; images are pinned; the Nexusflow services set only
 * variables common/src/config.ts reads; every file a service's configuration names exists in that
 * container (a bind mount of this repository, a file of the image's build, or an output of a
 * one-shot it waits for); the compose Envoy configuration is a valid Envoy bootstrap equal to
 * deploy/envoy/envoy.yaml but for its key source; the key one-shot's tokens pass the services' own
 * verifier; Prometheus scrapes the compose services under the production job names; the dashboard
 * uses only documented metrics.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { describe, it } from "node:test";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { createTokenVerifier } from "@nexusflow/common";
import { parse } from "yaml";
import { deployTool, runTool } from "./deploy-tools.js";
import { envoyRegistry } from "./envoy-descriptors.js";
import { ROOT } from "./tools.js";

type Obj = Record<string, unknown>;

interface Mount {
  type: "bind" | "volume" | "tmpfs";
  source?: string;
  target: string;
  read_only?: boolean;
}
interface Service {
  image?: string;
  command?: string[] | null;
  environment?: Record<string, string | null>;
  volumes?: Mount[];
  tmpfs?: string[];
  healthcheck?: { test?: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }>;
}
interface Project {
  services: Record<string, Service>;
}

const COMPOSE = join(ROOT, "docker-compose.yml");
/** The files the keys one-shot writes (its exported OUTPUTS). */
const KEY_OUTPUTS = JSON.parse(
  /export const OUTPUTS = (\[[^\]]*\])/.exec(
    readFileSync(join(ROOT, "deploy/compose/provision-keys.mjs"), "utf8"),
  )?.[1] ?? "[]",
) as string[];
const ENV_EXAMPLE = join(ROOT, ".env.example");

/** The stack the issue asks for. */
const EXPECTED = [
  "keys",
  "descriptors",
  "migrate",
  "postgres",
  "kafka",
  "s3",
  "scheduler",
  "executor-1",
  "executor-2",
  "gateway",
  "envoy",
  "prometheus",
  "loki",
  "alloy",
  "jaeger",
  "grafana",
];

/** Host paths outside the repository a service may mount (Alloy reads the Docker socket). */
const HOST_PATHS = new Set(["/var/run/docker.sock"]);

/** Variable names common/src/config.ts reads (each appears there as a string literal). */
function configVariables(): Set<string> {
  const text = readFileSync(join(ROOT, "common/src/config.ts"), "utf8");
  return new Set([...text.matchAll(/"([A-Z][A-Z0-9_]{2,})"/g)].map((m) => m[1]!));
}

const isNexusflow = (s: Service): boolean => (s.image ?? "").startsWith("nexusflow:");

/** Services that others wait for to complete: one-shots. */
function oneShots(project: Project): Set<string> {
  return new Set(
    Object.values(project.services).flatMap((s) =>
      Object.entries(s.depends_on ?? {})
        .filter(([, d]) => d.condition === "service_completed_successfully")
        .map(([name]) => name),
    ),
  );
}

/** Files that one-shot `name` writes, relative to the target of the volume it writes them in. */
function producedFiles(name: string, service: Service): string[] {
  if (name === "keys") return KEY_OUTPUTS;
  const out = service.command?.[service.command.indexOf("-o") + 1];
  if (name === "descriptors" && out !== undefined) return [out];
  return [];
}

/** Absolute paths named by a bind-mounted configuration file (YAML keys that hold file paths). */
function pathsInConfig(file: string): string[] {
  if (!/\.ya?ml$/.test(file)) return [];
  const found: string[] = [];
  const walk = (v: unknown, key: string | undefined, parent: string | undefined): void => {
    if (Array.isArray(v)) v.forEach((x) => walk(x, key, parent));
    else if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) walk(x, k, key);
    else if (typeof v === "string" && v.startsWith("/") && key !== undefined) {
      // Envoy (filename, proto_descriptor), Prometheus (rule_files), Grafana providers (options.path).
      if (
        ["filename", "proto_descriptor", "rule_files"].includes(key) ||
        (key === "path" && parent === "options")
      )
        found.push(v);
    }
  };
  walk(parse(readFileSync(file, "utf8")), undefined, undefined);
  return found;
}

/** Every absolute path `service`'s configuration names: command, environment, mounted config files. */
function namedPaths(service: Service): string[] {
  const paths: string[] = [];
  for (const arg of service.command ?? []) {
    const value = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : arg;
    if (value.startsWith("/")) paths.push(value);
  }
  for (const value of Object.values(service.environment ?? {})) {
    if (typeof value === "string" && value.startsWith("/")) paths.push(...value.split(","));
  }
  for (const mount of service.volumes ?? []) {
    if (mount.type === "bind" && mount.source?.startsWith(ROOT) === true && existsSync(mount.source)) {
      paths.push(...pathsInConfig(mount.source));
    }
  }
  return paths;
}

/** Why `path` would be missing in `name`'s container, or undefined when it is there. */
function missingPath(
  project: Project,
  name: string,
  path: string,
  storageTargets: string[],
): string | undefined {
  const service = project.services[name]!;
  const mounts = (service.volumes ?? [])
    .filter((m) => path === m.target || path.startsWith(`${m.target}/`))
    .sort((a, b) => b.target.length - a.target.length);
  const mount = mounts[0];
  if (mount === undefined) {
    if (isNexusflow(service)) {
      // The image's /app is scripts/build-dist.mjs output: compiled sources and deploy/docker files.
      const rel = path.replace(/^\/app\//, "");
      const source = [rel.replace(/\.js$/, ".ts"), `deploy/docker/${rel}`].find((f) =>
        existsSync(join(ROOT, f)),
      );
      return path.startsWith("/app/") && source !== undefined ? undefined : "not in the image";
    }
    return storageTargets.includes(path) ? undefined : "not mounted";
  }
  const rest = path.slice(mount.target.length).replace(/^\//, "");
  if (mount.type === "bind") {
    if (HOST_PATHS.has(mount.source ?? "")) return undefined;
    if (mount.source === undefined || !mount.source.startsWith(ROOT))
      return `bind mount ${mount.source} is outside the repository`;
    return existsSync(join(mount.source, rest)) ? undefined : `${join(mount.source, rest)} does not exist`;
  }
  if (mount.type === "volume" && mount.read_only !== true) return undefined; // its own data
  if (mount.type === "volume") {
    // Written by a one-shot this service waits for, into the same volume.
    for (const [producer, p] of Object.entries(project.services)) {
      const target = p.volumes?.find((m) => m.type === "volume" && m.source === mount.source && !m.read_only);
      if (target === undefined || producer === name) continue;
      const files = producedFiles(producer, p).map((f) =>
        f.startsWith("/") ? posix.relative(target.target, f) : f,
      );
      if (!files.includes(rest)) continue;
      if (service.depends_on?.[producer]?.condition !== "service_completed_successfully")
        return `written by ${producer}, which ${name} does not wait for`;
      return undefined;
    }
    return storageTargets.includes(mount.target)
      ? undefined
      : `no one-shot writes ${rest} into volume ${mount.source}`;
  }
  return `on a ${mount.type}`;
}

function loadProject(t: Parameters<typeof deployTool>[0]): Promise<Project | undefined> {
  const tool = deployTool(t, "compose-check");
  if (tool === undefined) return Promise.resolve(undefined);
  return runTool(tool, ["-f", COMPOSE, "--env-file", ENV_EXAMPLE]).then((r) => {
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Project;
  });
}

describe("docker-compose.yml", () => {
  const raw = parse(readFileSync(COMPOSE, "utf8"), { merge: true }) as {
    services: Record<string, Obj & { depends_on?: Record<string, { condition?: string }> | string[] }>;
  };

  it("loads as `docker compose config` loads it, and needs the secrets of .env", async (t) => {
    const project = await loadProject(t);
    if (project === undefined) return;
    assert.deepEqual(Object.keys(project.services).sort(), [...EXPECTED].sort());
    const tool = deployTool(t, "compose-check")!;
    const empty = join(mkdtempSync(join(tmpdir(), "nf-compose-")), "empty.env");
    writeFileSync(empty, "");
    const without = await runTool(tool, ["-f", COMPOSE, "--env-file", empty]);
    assert.notEqual(without.code, 0);
    for (const secret of ["POSTGRES_PASSWORD", "S3_SECRET_KEY", "GRAFANA_ADMIN_PASSWORD"])
      assert.match(without.stderr, new RegExp(`${secret} is missing`));
    // The loader bites: a misspelled key is refused.
    mkdirSync(join(ROOT, ".cache"), { recursive: true });
    const broken = join(ROOT, ".cache", `compose-broken-${process.pid}.yml`);
    writeFileSync(
      broken,
      readFileSync(COMPOSE, "utf8").replace("    stop_grace_period: 30s", "    stop_grace_periods: 30s"),
    );
    t.after(() => rmSync(broken, { force: true }));
    const refused = await runTool(tool, ["-f", broken, "--env-file", ENV_EXAMPLE]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /stop_grace_periods/);
    assert.ok(
      !readFileSync(join(ROOT, ".gitignore"), "utf8")
        .split("\n")
        .every((l) => l.trim() !== ".env"),
    );
  });

  it("healthchecks, conditions on every dependency, pinned images", async (t) => {
    const project = await loadProject(t);
    if (project === undefined) return;
    const shots = oneShots(project);
    assert.deepEqual([...shots].sort(), ["descriptors", "keys", "migrate"]);
    for (const [name, service] of Object.entries(project.services)) {
      if (!shots.has(name)) {
        assert.ok(
          (service.healthcheck?.test?.length ?? 0) > 0 && service.healthcheck?.disable !== true,
          `${name}: healthcheck`,
        );
      }
      const image = service.image ?? "";
      assert.match(
        image,
        /^[\w./-]+:[\w.-]*\d+\.\d+[\w.-]*$/,
        `${name}: image ${image} is not pinned to a version`,
      );
      assert.doesNotMatch(image, /latest/, `${name}: image ${image}`);
      // Conditions are written out (the loader would fill in service_started for a bare name).
      const deps = raw.services[name]?.depends_on ?? {};
      assert.ok(!Array.isArray(deps), `${name}: depends_on without conditions`);
      for (const [dep, { condition }] of Object.entries(deps)) {
        assert.ok(project.services[dep] !== undefined, `${name} depends on unknown ${dep}`);
        const expected = shots.has(dep) ? "service_completed_successfully" : "service_healthy";
        assert.equal(condition, expected, `${name} -> ${dep}`);
      }
    }
    // The Nexusflow services wait for what they need.
    const deps = (name: string) => Object.keys(project.services[name]?.depends_on ?? {}).sort();
    assert.deepEqual(deps("scheduler"), ["kafka", "keys", "migrate", "postgres", "s3"]);
    assert.deepEqual(deps("migrate"), ["postgres"]);
    // The migrate one-shot owns the schema: the scheduler, started after it, only checks it.
    assert.equal(project.services["scheduler"]?.environment?.["MIGRATE_ON_START"], "false");
    assert.equal(project.services["migrate"]?.command?.[0], "migrate");
    // Readiness that does not depend on metrics: each service's healthcheck is the image's.
    for (const name of ["scheduler", "executor-1", "executor-2", "gateway"]) {
      const service: Service | undefined = project.services[name];
      assert.deepEqual(
        service?.healthcheck?.test,
        ["CMD", "node", "/app/healthcheck.mjs", name.replace(/-\d+$/, "")],
        name,
      );
      assert.ok(service?.environment?.["HEALTH_PORT"] !== undefined, `${name}: HEALTH_PORT`);
    }
    for (const e of ["executor-1", "executor-2"]) assert.ok(deps(e).includes("scheduler"));
    assert.ok(deps("envoy").includes("descriptors") && deps("envoy").includes("gateway"));
  });

  it("the Nexusflow services set only variables the config reads, run read-only as non-root", async (t) => {
    const project = await loadProject(t);
    if (project === undefined) return;
    const known = configVariables();
    const nexusflow = Object.entries(project.services).filter(([, s]) => isNexusflow(s));
    assert.deepEqual(nexusflow.map(([n]) => n).sort(), [
      "executor-1",
      "executor-2",
      "gateway",
      "migrate",
      "scheduler",
    ]);
    for (const [name, service] of nexusflow) {
      const unknown = Object.keys(service.environment ?? {}).filter((v) => !known.has(v));
      assert.deepEqual(unknown, [], `unknown variables in ${name}`);
      const s = service as Service & { read_only?: boolean; user?: string };
      assert.equal(s.read_only, true, `${name}: read_only`);
      assert.equal(s.user, "1000:1000", `${name}: user`);
      assert.equal(service.command?.[0], name.replace(/-\d+$/, ""), `${name}: command`);
    }
  });

  it("every file a configuration names exists in the container that reads it", async (t) => {
    const project = await loadProject(t);
    if (project === undefined) return;
    // Data directories that a service creates in its own volume.
    const storage = ["/var/lib/alloy/data"];
    let checked = 0;
    const problems: string[] = [];
    for (const name of Object.keys(project.services)) {
      for (const path of namedPaths(project.services[name]!)) {
        checked++;
        const why = missingPath(project, name, path, storage);
        if (why !== undefined) problems.push(`${name}: ${path}: ${why}`);
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(checked >= 15, `only ${checked} paths found`);
    // The ones the old compose file got wrong are among them.
    const envoy = namedPaths(project.services["envoy"]!);
    for (const p of ["/etc/envoy/envoy.yaml", "/keys/jwks.json", "/descriptors/nexusflow.binpb"])
      assert.ok(envoy.includes(p), p);
    assert.ok(namedPaths(project.services["gateway"]!).includes("/keys/issuer.pem"));
    // And the check bites.
    assert.match(missingPath(project, "gateway", "/keys/private.pem", storage) ?? "", /no one-shot writes/);
    assert.match(missingPath(project, "envoy", "/etc/envoy/other.yaml", storage) ?? "", /not mounted/);
  });

  it("the compose Envoy config is a valid bootstrap, deploy/envoy/envoy.yaml but for its key source", () => {
    const registry = envoyRegistry([
      "envoy/config/bootstrap/v3/bootstrap.proto",
      "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
      "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
      "envoy/extensions/filters/http/grpc_json_transcoder/v3/transcoder.proto",
      "envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto",
      "envoy/extensions/filters/http/cors/v3/cors.proto",
      "envoy/extensions/filters/http/router/v3/router.proto",
      "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
      "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    ]);
    const bootstrap = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap")!;
    const compose = parse(readFileSync(join(ROOT, "deploy/compose/envoy.yaml"), "utf8")) as Obj;
    fromJson(bootstrap, compose as JsonValue, { registry, ignoreUnknownFields: false });
    const production = parse(readFileSync(join(ROOT, "deploy/envoy/envoy.yaml"), "utf8")) as Obj;
    // Take out what may differ, then compare the rest.
    const strip = (config: Obj): string =>
      JSON.stringify(config, (key, value: unknown) => {
        if (["remote_jwks", "local_jwks", "issuer", "proto_descriptor"].includes(key)) return undefined;
        if (Array.isArray(value))
          return (value as unknown[]).filter((v) => (v as Obj | undefined)?.["name"] !== "idp");
        return value;
      });
    assert.equal(strip(compose), strip(production));
    const text = JSON.stringify(compose);
    assert.ok(text.includes('"filename":"/keys/jwks.json"'));
    assert.ok(text.includes('"issuer":"nexusflow-compose"'));
  });

  it("the keys one-shot writes keys and tokens that the services' verifier accepts", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nf-keys-"));
    try {
      const run = spawnSync(process.execPath, [join(ROOT, "deploy/compose/provision-keys.mjs"), dir], {
        env: { ISSUER: "nexusflow-compose", AUDIENCE: "nexusflow", PATH: process.env["PATH"] ?? "" },
        encoding: "utf8",
      });
      assert.equal(run.status, 0, run.stderr);
      for (const file of KEY_OUTPUTS) assert.ok(existsSync(join(dir, file)), file);
      for (const keyFile of ["issuer.pem", "jwks.json"]) {
        const verifier = await createTokenVerifier({
          publicKeyFiles: [join(dir, keyFile)],
          issuer: "nexusflow-compose",
          audience: "nexusflow",
        });
        const executor = await verifier.verify(readFileSync(join(dir, "executor.token"), "utf8").trim());
        assert.ok(executor.scopes.has("executor"));
        const operator = await verifier.verify(readFileSync(join(dir, "operator.token"), "utf8").trim());
        for (const scope of ["runs:write", "workflows:write", "runs:read"])
          assert.ok(operator.scopes.has(scope), scope);
      }
      // A second run keeps the key (tokens of the first stay valid) and renews the tokens.
      const key = readFileSync(join(dir, "signing-key.pem"), "utf8");
      spawnSync(process.execPath, [join(ROOT, "deploy/compose/provision-keys.mjs"), dir], {
        env: { ISSUER: "nexusflow-compose", AUDIENCE: "nexusflow", PATH: process.env["PATH"] ?? "" },
      });
      assert.equal(readFileSync(join(dir, "signing-key.pem"), "utf8"), key);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("Prometheus scrapes the compose services under the production job names, with the alert rules", async (t) => {
    const project = await loadProject(t);
    if (project === undefined) return;
    type Scrape = {
      rule_files: string[];
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const compose = parse(readFileSync(join(ROOT, "deploy/compose/prometheus.yml"), "utf8")) as Scrape;
    const production = parse(readFileSync(join(ROOT, "deploy/prometheus/prometheus.yml"), "utf8")) as Scrape;
    assert.deepEqual(
      compose.scrape_configs.map((j) => j.job_name),
      production.scrape_configs.map((j) => j.job_name),
    );
    const ports: Record<string, string> = { scheduler: "9464", executor: "9465", gateway: "9466" };
    for (const target of compose.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets))) {
      const [host, port] = target.split(":");
      const service: Service | undefined = project.services[host!];
      assert.ok(service !== undefined && isNexusflow(service), `${target}: no such Nexusflow service`);
      assert.equal(service.environment?.["METRICS_HOST"], "0.0.0.0", `${host} listens for Prometheus`);
      assert.equal(port, ports[service.command?.[0] ?? ""], target);
    }
    assert.deepEqual(compose.rule_files, ["/etc/prometheus/alerts.yml"]);
  });

  it("the Grafana dashboard uses only metrics the README documents", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Metrics"));
    const documented = new Set([...section.matchAll(/nexusflow_[a-z_]+/g)].map((m) => m[0]));
    const dashboard = readFileSync(join(ROOT, "deploy/grafana/dashboards/overview.json"), "utf8");
    const used = [...dashboard.matchAll(/nexusflow_[a-z_]+/g)].map((m) =>
      m[0].replace(/_(bucket|count|sum)$/, ""),
    );
    assert.ok(used.length > 5);
    for (const metric of used)
      assert.ok(documented.has(metric), `${metric} is not in README.md's Metrics section`);
  });
});
