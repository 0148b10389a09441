import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ConfigError,
  MAX_GATEWAY_REQUEST_BYTES,
  loadExecutorConfig,
  loadGatewayConfig,
  loadSchedulerConfig,
} from "./config.js";

describe("executor configuration", () => {
  it("takes the session token as a value or as a file read per session, not both", () => {
    assert.deepEqual(
      [loadExecutorConfig({ EXECUTOR_TOKEN: "abc" })].map((c) => [c.token, c.tokenFile]),
      [["abc", undefined]],
    );
    assert.deepEqual(
      [loadExecutorConfig({ EXECUTOR_TOKEN_FILE: "/var/run/secrets/token" })].map((c) => [
        c.token,
        c.tokenFile,
      ]),
      [[undefined, "/var/run/secrets/token"]],
    );
    assert.throws(
      () => loadExecutorConfig({ EXECUTOR_TOKEN: "abc", EXECUTOR_TOKEN_FILE: "/t" }),
      (e: unknown) =>
        e instanceof ConfigError && e.variable === "EXECUTOR_TOKEN_FILE" && /not both/.test(e.message),
    );
  });
});

describe("probe endpoints (HEALTH_PORT)", () => {
  const AUTH = { AUTH_DISABLED: "true" };

  it("ride on the metrics port by default, and are gone with METRICS_PORT=off alone", () => {
    const c = loadSchedulerConfig({ ...AUTH, METRICS_HOST: "0.0.0.0" });
    assert.deepEqual(c.metrics, { host: "0.0.0.0", port: 9464, explicit: false });
    assert.deepEqual(c.probes, { host: "0.0.0.0", port: 9464, onMetricsPort: true });
    assert.equal(loadSchedulerConfig({ ...AUTH, METRICS_PORT: "off" }).probes, undefined);
  });

  it("with HEALTH_PORT are served whatever METRICS_PORT says", () => {
    const off = loadExecutorConfig({ METRICS_PORT: "off", HEALTH_PORT: "8081", METRICS_HOST: "0.0.0.0" });
    assert.equal(off.metrics, undefined);
    assert.deepEqual(off.probes, { host: "0.0.0.0", port: 8081, onMetricsPort: false });
    const apart = loadGatewayConfig({ ...AUTH, METRICS_PORT: "9999", HEALTH_PORT: "8081" });
    assert.equal(apart.metrics?.port, 9999);
    assert.deepEqual(apart.probes, { host: "127.0.0.1", port: 8081, onMetricsPort: false });
  });

  it("share the metrics server when HEALTH_PORT names its port, which then counts as set", () => {
    const c = loadExecutorConfig({ HEALTH_PORT: "9465" });
    assert.deepEqual(c.metrics, { host: "127.0.0.1", port: 9465, explicit: true });
    assert.deepEqual(c.probes, { host: "127.0.0.1", port: 9465, onMetricsPort: true });
  });

  it("refuse a HEALTH_PORT that is not a port, naming it", () => {
    for (const value of ["off", "http", "70000"])
      assert.throws(
        () => loadExecutorConfig({ HEALTH_PORT: value }),
        (e: unknown) => e instanceof ConfigError && e.variable === "HEALTH_PORT",
        value,
      );
  });
});

describe("MIGRATE_ON_START", () => {
  const AUTH = { AUTH_DISABLED: "true" };

  it("is on unless set false, so `npm start` needs no migrate step", () => {
    assert.equal(loadSchedulerConfig(AUTH).migrateOnStart, true);
    assert.equal(loadSchedulerConfig({ ...AUTH, MIGRATE_ON_START: "true" }).migrateOnStart, true);
    assert.equal(loadSchedulerConfig({ ...AUTH, MIGRATE_ON_START: "false" }).migrateOnStart, false);
    assert.equal(loadSchedulerConfig({ ...AUTH, MIGRATE_ON_START: "0" }).migrateOnStart, false);
  });

  it("refuses anything but a boolean, naming the variable", () => {
    assert.throws(
      () => loadSchedulerConfig({ ...AUTH, MIGRATE_ON_START: "later" }),
      (e: unknown) => e instanceof ConfigError && e.variable === "MIGRATE_ON_START",
    );
  });
});

describe("PRIORITY_AGEING", () => {
  const AUTH = { AUTH_DISABLED: "true" };

  it("is 10 s unless set, a duration", () => {
    assert.equal(loadSchedulerConfig(AUTH).priorityAgeingMs, 10_000);
    assert.equal(loadSchedulerConfig({ ...AUTH, PRIORITY_AGEING: "1m" }).priorityAgeingMs, 60_000);
  });

  it("refuses zero and what is not a duration, naming the variable", () => {
    for (const value of ["0s", "soon"])
      assert.throws(
        () => loadSchedulerConfig({ ...AUTH, PRIORITY_AGEING: value }),
        (e: unknown) => e instanceof ConfigError && e.variable === "PRIORITY_AGEING",
      );
  });
});

describe("HEARTBEAT_INTERVAL and SESSION_TIMEOUT", () => {
  const AUTH = { AUTH_DISABLED: "true" };

  it("are 2 s and 10 s unless set", () => {
    const c = loadSchedulerConfig(AUTH);
    assert.deepEqual([c.heartbeatIntervalMs, c.sessionTimeoutMs], [2000, 10_000]);
  });

  it("refuse a session timeout no longer than the heartbeat interval, naming SESSION_TIMEOUT", () => {
    for (const [beat, timeout] of [
      ["2s", "2s"],
      ["5s", "3s"],
    ])
      assert.throws(
        () => loadSchedulerConfig({ ...AUTH, HEARTBEAT_INTERVAL: beat, SESSION_TIMEOUT: timeout }),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.variable === "SESSION_TIMEOUT" &&
          /HEARTBEAT_INTERVAL/.test(e.message),
      );
    assert.equal(loadSchedulerConfig({ ...AUTH, SESSION_TIMEOUT: "3s" }).sessionTimeoutMs, 3000);
  });
});

describe("gateway SCHEDULER_ADDRESS", () => {
  const AUTH = { AUTH_DISABLED: "true" };
  const addresses = (value: string | undefined): string[] =>
    loadGatewayConfig({ ...AUTH, SCHEDULER_ADDRESS: value }).schedulerAddresses;

  it("takes one host:port as before, or a comma-separated list of them", () => {
    assert.deepEqual(addresses(undefined), ["127.0.0.1:50051"]);
    assert.deepEqual(addresses("scheduler:50051"), ["scheduler:50051"]);
    assert.deepEqual(addresses("10.0.0.1:50051, 10.0.0.2:50051,[::1]:50052"), [
      "10.0.0.1:50051",
      "10.0.0.2:50051",
      "[::1]:50052",
    ]);
  });

  it("refuses a list with a bad item, an empty item or an address twice, naming the variable", () => {
    for (const [value, message] of [
      ["a:1,nope", /^SCHEDULER_ADDRESS: expected host:port, got "nope"$/],
      ["a:1,,b:2", /^SCHEDULER_ADDRESS: an empty item in the list "a:1,,b:2"$/],
      ["a:1,", /^SCHEDULER_ADDRESS: an empty item/],
      ["a:1, a:1", /^SCHEDULER_ADDRESS: a:1 is listed twice in "a:1, a:1"$/],
    ] as const) {
      assert.throws(
        () => addresses(value),
        (e: unknown) =>
          e instanceof ConfigError && e.variable === "SCHEDULER_ADDRESS" && message.test(e.message),
        value,
      );
    }
  });
});

describe("EXECUTOR_REPLICA_REFRESH", () => {
  it("defaults to 3 s, takes 0 (off) and 100 ms to 10 min, and names itself otherwise", () => {
    assert.equal(loadExecutorConfig({}).replicaRefreshMs, 3000);
    assert.equal(loadExecutorConfig({ EXECUTOR_REPLICA_REFRESH: "0" }).replicaRefreshMs, 0);
    assert.equal(loadExecutorConfig({ EXECUTOR_REPLICA_REFRESH: "500ms" }).replicaRefreshMs, 500);
    for (const bad of ["50ms", "1h", "often"])
      assert.throws(
        () => loadExecutorConfig({ EXECUTOR_REPLICA_REFRESH: bad }),
        (e: unknown) => e instanceof ConfigError && /EXECUTOR_REPLICA_REFRESH/.test(e.message),
        bad,
      );
  });
});

describe("GATEWAY_MAX_REQUEST_BYTES", () => {
  const AUTH = { AUTH_DISABLED: "true" };
  const maxRequestBytes = (value: string | undefined): number =>
    loadGatewayConfig({ ...AUTH, GATEWAY_MAX_REQUEST_BYTES: value }).maxRequestBytes;

  it("is 4 MiB unless set, and takes up to 16 MiB, the largest message the scheduler accepts", () => {
    assert.equal(maxRequestBytes(undefined), 4 * 1024 * 1024);
    assert.equal(maxRequestBytes("1024"), 1024);
    assert.equal(maxRequestBytes(String(16 * 1024 * 1024)), MAX_GATEWAY_REQUEST_BYTES);
    assert.equal(MAX_GATEWAY_REQUEST_BYTES, 16 * 1024 * 1024);
  });

  it("refuses more than 16 MiB (a larger request would reset the shared upstream session), naming the range", () => {
    for (const value of [16 * 1024 * 1024 + 1, 20_000_000, 64 * 1024 * 1024, 1023]) {
      assert.throws(
        () => maxRequestBytes(String(value)),
        (e: unknown) =>
          e instanceof ConfigError &&
          e.variable === "GATEWAY_MAX_REQUEST_BYTES" &&
          e.message ===
            `GATEWAY_MAX_REQUEST_BYTES: must be between 1024 and 16777216 (16 MiB, the largest ` +
              `message the scheduler accepts), got ${value}`,
        String(value),
      );
    }
  });
});
