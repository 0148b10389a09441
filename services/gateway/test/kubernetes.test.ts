/**
 * deploy/kubernetes without a cluster: `kustomize build` of each overlay, every object decoded
 * strictly into the k8s.io/api types of its apiVersion (scripts/tools/k8s-check: an unknown or
 * misspelled field fails), then what a reviewer would check by hand: probes, resources, a
 * non-root read-only securityContext, topology spread and a drain-long grace period, the scheduler
 * at one replica with Recreate whose init container migrates (no Job: its pod template could not
 * change with the image), probes on the ports the ConfigMap gives the services (HEALTH_PORT for
 * /healthz and /readyz, gRPC health on the gRPC ports), PDBs, the HPA, ConfigMap keys that
 * common/src/config.ts reads, and the NetworkPolicies evaluated for who may talk to whom.
 */
/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return --
   the manifests are untyped YAML; k8s-check has already decoded each into its k8s.io/api type. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { parseAllDocuments } from "yaml";
import { deployTool, runTool } from "./deploy-tools.js";
import { ROOT } from "./tools.js";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const OVERLAYS = ["dev", "prod", "replicas"] as const;

async function build(t: TestContext, overlay: string): Promise<{ text: string; objects: Obj[] } | undefined> {
  const kustomize = deployTool(t, "kustomize");
  if (kustomize === undefined) return undefined;
  const result = await runTool(kustomize, ["build", join("deploy", "kubernetes", "overlays", overlay)]);
  assert.equal(result.code, 0, result.stderr);
  const objects = parseAllDocuments(result.stdout)
    .map((d) => d.toJS() as Obj | null)
    .filter((o): o is Obj => o !== null);
  return { text: result.stdout, objects };
}

const find = (objects: Obj[], kind: string, name: string): Obj | undefined =>
  objects.find((o) => o["kind"] === kind && o["metadata"]?.["name"] === name);

const matches = (selector: Obj | undefined, labels: Record<string, string>): boolean =>
  Object.entries((selector?.["matchLabels"] ?? {}) as Record<string, string>).every(
    ([k, v]) => labels[k] === v,
  );

/** A peer of a connection: a pod of this namespace with labels, or anything from elsewhere. */
interface Peer {
  labels: Record<string, string>;
  sameNamespace: boolean;
}

const peerMatches = (rule: Obj, peer: Peer): boolean => {
  const peers = (rule["from"] ?? rule["to"]) as Obj[] | undefined;
  if (peers === undefined) return true;
  return peers.some((p) => {
    if (p["ipBlock"] !== undefined) return !peer.sameNamespace;
    if (p["namespaceSelector"] !== undefined) return matches(p["podSelector"], peer.labels);
    return peer.sameNamespace && matches(p["podSelector"], peer.labels);
  });
};
const portMatches = (rule: Obj, port: number): boolean =>
  rule["ports"] === undefined || (rule["ports"] as Obj[]).some((p) => p["port"] === port);

/** NetworkPolicy semantics (matchLabels only): is this connection allowed at one end? */
function allowed(
  policies: Obj[],
  direction: "ingress" | "egress",
  pod: Record<string, string>,
  peer: Peer,
  port: number,
): boolean {
  const type = direction === "ingress" ? "Ingress" : "Egress";
  const selecting = policies.filter(
    (p) => matches(p["spec"]["podSelector"], pod) && (p["spec"]["policyTypes"] as string[]).includes(type),
  );
  if (selecting.length === 0) return true;
  return selecting.some((p) =>
    ((p["spec"][direction] ?? []) as Obj[]).some((r) => peerMatches(r, peer) && portMatches(r, port)),
  );
}

const pod = (name: string): Record<string, string> => ({
  "app.kubernetes.io/name": `nexusflow-${name}`,
  "app.kubernetes.io/part-of": "nexusflow",
});

describe("deploy/kubernetes", () => {
  for (const overlay of OVERLAYS) {
    it(`overlays/${overlay}: builds, and every object decodes strictly into the k8s.io/api types`, async (t) => {
      const built = await build(t, overlay);
      const checker = deployTool(t, "k8s-check");
      if (built === undefined || checker === undefined) return;
      const result = await runTool(checker, [], { input: built.text });
      assert.equal(result.code, 0, result.stdout + result.stderr);
      assert.equal(result.stdout.trim().split("\n").length, built.objects.length);
      if (overlay === "prod") {
        // The check bites: a misspelled field of a container and an unknown kind fail.
        const broken = built.text.replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true");
        const refused = await runTool(checker, [], { input: broken });
        assert.equal(refused.code, 1);
        assert.match(refused.stdout, /FAIL .*unknown field ".*readOnlyRootFileSystem"/);
        const unknownKind = await runTool(checker, [], {
          input: "apiVersion: v1\nkind: Pods\nmetadata: {name: x}\n",
        });
        assert.match(unknownKind.stdout, /unknown apiVersion and kind v1\/Pods/);
      }
    });

    it(`overlays/${overlay}: Deployments with probes, resources, non-root read-only containers`, async (t) => {
      const built = await build(t, overlay);
      if (built === undefined) return;
      const { objects } = built;
      for (const name of ["scheduler", "executor", "gateway"]) {
        const deployment = find(objects, "Deployment", `nexusflow-${name}`);
        assert.ok(deployment !== undefined, name);
        const spec = deployment["spec"]["template"]["spec"];
        assert.equal(spec["securityContext"]["runAsNonRoot"], true, name);
        assert.equal(spec["automountServiceAccountToken"], false, name);
        for (const container of [...(spec["initContainers"] ?? []), ...spec["containers"]] as Obj[]) {
          const where = `${name}/${container["name"]}`;
          assert.match(container["image"], /^ghcr\.io\/nexusflow\/nexusflow:\d+\.\d+\.\d+$/, where);
          assert.equal(container["securityContext"]["readOnlyRootFilesystem"], true, where);
          assert.equal(container["securityContext"]["allowPrivilegeEscalation"], false, where);
          assert.deepEqual(container["securityContext"]["capabilities"]["drop"], ["ALL"], where);
          assert.ok(
            container["resources"]["requests"]["memory"] && container["resources"]["limits"]["memory"],
            where,
          );
        }
        const main = spec["containers"][0] as Obj;
        assert.deepEqual(main["args"], [name]);
        assert.ok(main["readinessProbe"] && main["livenessProbe"], `${name}: probes`);
        const ports = new Set((main["ports"] as Obj[]).flatMap((p) => [p["name"], p["containerPort"]]));
        for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
          const p = main[probe] as Obj | undefined;
          const port = p?.["httpGet"]?.["port"] ?? p?.["grpc"]?.["port"];
          if (p !== undefined) assert.ok(ports.has(port), `${name} ${probe} port ${port}`);
        }
        // /tmp is writable although the root filesystem is not.
        assert.ok(
          (main["volumeMounts"] as Obj[]).some((m) => m["mountPath"] === "/tmp"),
          `${name}: /tmp`,
        );
      }
      const scheduler = find(objects, "Deployment", "nexusflow-scheduler")!;
      if (overlay === "replicas") {
        // Cluster mode (components/replicas): three replicas share the database, replaced one at a time.
        assert.equal(scheduler["spec"]["replicas"], 3);
        assert.equal(scheduler["spec"]["strategy"]["type"], "RollingUpdate");
        const env = new Map<string, Obj>(
          (scheduler["spec"]["template"]["spec"]["containers"][0]["env"] as Obj[]).map(
            (e, i): [string, Obj] => [e["name"], { ...e, i }],
          ),
        );
        assert.equal(env.get("SCHEDULER_CLUSTER")?.["value"], "true");
        assert.equal(env.get("POD_IP")?.["valueFrom"]?.["fieldRef"]?.["fieldPath"], "status.podIP");
        assert.equal(env.get("SCHEDULER_ADVERTISE_ADDRESS")?.["value"], "$(POD_IP):50051");
        // $(POD_IP) expands only when POD_IP comes first.
        assert.ok(
          (env.get("POD_IP")?.["i"] as number) < (env.get("SCHEDULER_ADVERTISE_ADDRESS")?.["i"] as number),
        );
        assert.equal(env.get("SCHEDULER_TOKEN_FILE")?.["value"], "/etc/nexusflow/scheduler-token/token");
        assert.equal(
          find(objects, "PodDisruptionBudget", "nexusflow-scheduler")?.["spec"]["maxUnavailable"],
          1,
        );
      } else {
        assert.equal(
          scheduler["spec"]["replicas"],
          1,
          "one scheduler per database without the replicas component",
        );
        assert.equal(scheduler["spec"]["strategy"]["type"], "Recreate");
      }
      assert.equal(
        scheduler["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"],
        50051,
      );
      // Migrations: the scheduler pod's init container applies them (one pod at a time: replicas 1,
      // Recreate; migrate's advisory lock besides), the scheduler only checks (MIGRATE_ON_START).
      const schedulerSpec = scheduler["spec"]["template"]["spec"];
      const [migrate, ...otherInits] = schedulerSpec["initContainers"] as Obj[];
      assert.deepEqual(otherInits, []);
      assert.deepEqual(migrate?.["args"], ["migrate"]);
      assert.equal(migrate?.["image"], schedulerSpec["containers"][0]["image"], "the same image migrates");
      // The database secret (dev generates it, with a hash suffix).
      const secretRef = (migrate?.["env"] as Obj[]).find((e) => e["name"] === "DATABASE_URL")?.["valueFrom"][
        "secretKeyRef"
      ] as Obj;
      assert.equal(secretRef["key"], "DATABASE_URL");
      assert.match(secretRef["name"] as string, /^nexusflow-database(-[a-z0-9]+)?$/);
      const configMap = objects.find((o) => o["kind"] === "ConfigMap")!;
      const config = configMap["data"] as Record<string, string>;
      assert.equal(config["MIGRATE_ON_START"], "false");
      assert.deepEqual(
        (schedulerSpec["containers"][0]["envFrom"] as Obj[]).map((e) => e["configMapRef"]?.["name"]),
        [configMap["metadata"]["name"], undefined],
      );
      // Nothing with a pod template that `kubectl apply` of a new image could not update.
      assert.deepEqual(
        objects.filter((o) => ["Job", "CronJob", "Pod"].includes(o["kind"] as string)).map((o) => o["kind"]),
        [],
      );
      // Probes ask the ports the services listen on: HEALTH_PORT for HTTP, the gRPC ports for
      // grpc.health.v1 (the scheduler's, and the gateway's, which serves it too).
      const listens: Record<string, Record<string, string | undefined>> = {
        scheduler: { grpc: config["SCHEDULER_PORT"], http: config["HEALTH_PORT"] },
        executor: { http: config["HEALTH_PORT"] },
        gateway: { grpc: config["GATEWAY_PORT"], http: config["GATEWAY_PORT"] },
      };
      assert.equal(config["HEALTH_PORT"], "8081");
      for (const name of ["scheduler", "executor", "gateway"]) {
        const main = find(objects, "Deployment", `nexusflow-${name}`)!["spec"]["template"]["spec"][
          "containers"
        ][0] as Obj;
        const portOf = (port: unknown): string =>
          String(
            typeof port === "number"
              ? port
              : (main["ports"] as Obj[]).find((p) => p["name"] === port)?.["containerPort"],
          );
        for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
          const p = main[probe] as Obj | undefined;
          if (p === undefined) continue;
          if (p["grpc"] !== undefined)
            assert.equal(portOf(p["grpc"]["port"]), listens[name]!["grpc"], `${name} ${probe}`);
          else {
            assert.equal(portOf(p["httpGet"]["port"]), listens[name]!["http"], `${name} ${probe}`);
            const path = p["httpGet"]["path"] as string;
            assert.equal(path, probe === "livenessProbe" ? "/healthz" : "/readyz", `${name} ${probe}`);
          }
        }
      }
      // Readiness of the services with a gRPC port is asked over gRPC.
      for (const name of ["scheduler", "gateway"])
        assert.ok(
          find(objects, "Deployment", `nexusflow-${name}`)!["spec"]["template"]["spec"]["containers"][0][
            "readinessProbe"
          ]["grpc"],
          name,
        );
      for (const name of ["executor", "gateway"]) {
        const spec = find(objects, "Deployment", `nexusflow-${name}`)!["spec"]["template"]["spec"];
        const keys = (spec["topologySpreadConstraints"] as Obj[]).map((c) => c["topologyKey"]);
        assert.deepEqual(keys.sort(), ["kubernetes.io/hostname", "topology.kubernetes.io/zone"], name);
      }
      const executorSpec = find(objects, "Deployment", "nexusflow-executor")!["spec"]["template"]["spec"];
      assert.ok(executorSpec["terminationGracePeriodSeconds"] >= 60, "long enough for a drain");
      for (const name of ["executor", "gateway"])
        assert.ok(find(objects, "PodDisruptionBudget", `nexusflow-${name}`));
      const hpa = find(objects, "HorizontalPodAutoscaler", "nexusflow-executor");
      assert.equal(hpa?.["spec"]["scaleTargetRef"]["name"], "nexusflow-executor");
      assert.equal(
        objects.some((o) => o["kind"] === "ServiceMonitor"),
        overlay !== "dev",
        "ServiceMonitors only where the component is added",
      );
    });

    it(`overlays/${overlay}: configuration the services read, secrets they need`, async (t) => {
      const built = await build(t, overlay);
      if (built === undefined) return;
      const known = new Set(
        [...readFileSync(join(ROOT, "common/src/config.ts"), "utf8").matchAll(/"([A-Z][A-Z0-9_]{2,})"/g)].map(
          (m) => m[1],
        ),
      );
      const configMap = built.objects.find((o) => o["kind"] === "ConfigMap")!;
      const unknown = Object.keys(configMap["data"] as Obj).filter((k) => !known.has(k));
      assert.deepEqual(unknown, [], "ConfigMap keys config.ts does not read");
      const secrets = new Set<string>();
      JSON.stringify(built.objects, (key, value: unknown) => {
        const v = value as Obj;
        if (key === "secretKeyRef" || key === "secretRef") secrets.add(v["name"] as string);
        if (key === "secret") secrets.add(v["secretName"] as string);
        return value;
      });
      const generated = built.objects
        .filter((o) => o["kind"] === "Secret")
        .map((o) => o["metadata"]["name"] as string);
      const missing = [...secrets].filter((s) => !generated.includes(s));
      if (overlay === "dev") assert.deepEqual(missing, [], "dev is self-contained");
      else
        assert.deepEqual(missing.sort(), [
          "nexusflow-auth-keys",
          "nexusflow-database",
          "nexusflow-executor-token",
          "nexusflow-s3",
          ...(overlay === "replicas" ? ["nexusflow-scheduler-token"] : []),
        ]);
    });
  }

  it("NetworkPolicies: only the gateway is reachable from outside; each service reaches what it needs", async (t) => {
    const built = await build(t, "prod");
    if (built === undefined) return;
    const policies = built.objects.filter((o) => o["kind"] === "NetworkPolicy");
    const outside: Peer = { labels: {}, sameNamespace: false };
    const from = (name: string): Peer => ({ labels: pod(name), sameNamespace: true });
    const prometheus: Peer = { labels: { "app.kubernetes.io/name": "prometheus" }, sameNamespace: false };
    const ingress = (name: string, peer: Peer, port: number) =>
      allowed(policies, "ingress", pod(name), peer, port);
    const egress = (name: string, peer: Peer, port: number) =>
      allowed(policies, "egress", pod(name), peer, port);

    assert.equal(ingress("gateway", outside, 8080), true, "gateway from outside");
    assert.equal(ingress("scheduler", outside, 50051), false, "scheduler from outside");
    assert.equal(ingress("executor", outside, 9465), false, "executor from outside");
    assert.equal(ingress("scheduler", from("executor"), 50051), true, "executor -> scheduler (in)");
    assert.equal(egress("executor", from("scheduler"), 50051), true, "executor -> scheduler (out)");
    assert.equal(ingress("scheduler", from("gateway"), 50051), true, "gateway -> scheduler (in)");
    assert.equal(egress("gateway", from("scheduler"), 50051), true, "gateway -> scheduler (out)");
    for (const port of [5432, 9092, 9000])
      assert.equal(egress("scheduler", outside, port), true, `scheduler -> ${port}`);
    assert.equal(egress("gateway", outside, 5432), false, "gateway -> PostgreSQL");
    assert.equal(egress("executor", outside, 5432), false, "executor -> PostgreSQL");
    for (const [name, port] of [
      ["scheduler", 9464],
      ["executor", 9465],
      ["gateway", 9466],
    ] as const) {
      assert.equal(ingress(name, prometheus, port), true, `Prometheus -> ${name}`);
    }
    assert.equal(egress("scheduler", outside, 53), true, "DNS");
    assert.equal(
      ingress("scheduler", from("scheduler"), 50051),
      false,
      "one replica: no scheduler -> scheduler",
    );
  });

  it("overlays/replicas: the scheduler replicas may call each other, nothing else opens", async (t) => {
    const built = await build(t, "replicas");
    if (built === undefined) return;
    const policies = built.objects.filter((o) => o["kind"] === "NetworkPolicy");
    const from = (name: string): Peer => ({ labels: pod(name), sameNamespace: true });
    const outside: Peer = { labels: {}, sameNamespace: false };
    assert.equal(allowed(policies, "ingress", pod("scheduler"), from("scheduler"), 50051), true, "in");
    assert.equal(allowed(policies, "egress", pod("scheduler"), from("scheduler"), 50051), true, "out");
    assert.equal(allowed(policies, "ingress", pod("scheduler"), outside, 50051), false, "from outside");
    assert.equal(
      allowed(policies, "ingress", pod("scheduler"), from("scheduler"), 9464),
      false,
      "other ports",
    );
  });
});
