/**
 * The dev stack's ports: never one handed out twice, though the system may give the same free
 * port to two listens on port 0 in a row (a CI run saw an executor's metrics port equal to the
 * scheduler's, and the executor could not start).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PortPicker, choosePorts } from "./dev-ports.js";

describe("PortPicker", () => {
  it("asks again when the system gives a port it handed out already, or one taken", async () => {
    // The system's answers to successive listens on port 0: the same port twice, then 8080.
    const answers = [40001, 40001, 8080, 40002];
    const asked: string[] = [];
    const picker = new PortPicker((host) => {
      asked.push(host);
      return Promise.resolve(answers.shift() as number);
    });
    assert.equal(picker.take(8080), 8080);
    assert.equal(await picker.free("127.0.0.1"), 40001);
    assert.equal(await picker.free("127.0.0.1"), 40002);
    assert.equal(asked.length, 4);
  });

  it("gives a stack's every port once, those of later replicas included", async () => {
    const ports = await choosePorts({ AUTH_DISABLED: "true" });
    const chosen = [
      ports.schedulerPort,
      ports.gatewayPort,
      ...ports.executorMetrics.map((m) => m.port),
      ports.serviceMetrics?.scheduler.port,
      ports.serviceMetrics?.gateway.port,
      await ports.picker.free(ports.schedulerHost),
      await ports.picker.free(ports.metricsHost),
    ];
    assert.equal(chosen.length, 8);
    assert.equal(new Set(chosen).size, chosen.length, `ports ${chosen.join(", ")}`);
  });
});
