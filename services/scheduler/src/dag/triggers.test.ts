import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkTriggers, eventKeyProblem, keyMatches, matchTriggers } from "./triggers.js";
import { compileWorkflow } from "./validate.js";

function triggers(value: unknown) {
  const { triggers, errors } = checkTriggers(value, "$.triggers");
  assert.deepEqual(errors, []);
  return triggers;
}

function errorsAt(value: unknown): { path: string; message: string }[] {
  return checkTriggers(value, "$.triggers").errors;
}

describe("event key patterns", () => {
  const cases: [string, string, boolean][] = [
    ["orders.created", "orders.created", true],
    ["orders.created", "orders.created.eu", false],
    ["orders.created", "Orders.created", false],
    ["orders.*", "orders.created", true],
    ["orders.*", "orders", false],
    ["orders.*", "orders.eu.created", false],
    ["*.created", "orders.created", true],
    ["*.created", "orders.deleted", false],
    ["orders.**", "orders.created", true],
    ["orders.**", "orders.eu.created", true],
    ["orders.**", "orders", false],
    ["**", "anything.at.all", true],
    ["*", "one", true],
    ["*", "one.two", false],
    ["orders.*.created", "orders.eu.created", true],
    ["orders.*.created", "orders.eu.deleted", false],
  ];
  for (const [pattern, key, expected] of cases)
    it(`${pattern} ${expected ? "matches" : "does not match"} ${key}`, () => {
      assert.equal(keyMatches(pattern.split("."), key), expected);
    });

  it("refuses patterns and keys outside the grammar, naming the trigger's field", () => {
    assert.match(errorsAt([{ event: "orders.**.x" }])[0]?.message ?? "", /"\*\*" may only be the last/);
    assert.equal(errorsAt([{ event: "orders..x" }])[0]?.path, "$.triggers[0].event");
    assert.equal(errorsAt([{ event: "orders.cr*" }])[0]?.path, "$.triggers[0].event");
    assert.equal(errorsAt([{ event: "" }])[0]?.path, "$.triggers[0].event");
    assert.equal(errorsAt([{}])[0]?.path, "$.triggers[0].event");
    assert.equal(errorsAt([{ event: 3 }])[0]?.path, "$.triggers[0].event");
    assert.equal(eventKeyProblem("orders.created"), undefined);
    assert.match(eventKeyProblem("") ?? "", /required/);
    assert.match(eventKeyProblem("orders.*") ?? "", /invalid/);
    assert.match(eventKeyProblem("a".repeat(256)) ?? "", /at most 255/);
  });

  it("refuses unknown fields, a bad filter and too many triggers, naming the field", () => {
    assert.deepEqual(
      errorsAt([{ event: "a", filtre: "true" }]).map((e) => e.path),
      ["$.triggers[0].filtre"],
    );
    assert.deepEqual(
      errorsAt([{ event: "a" }, { event: "b", filter: "event.payload.x ==" }]).map((e) => e.path),
      ["$.triggers[1].filter"],
    );
    // NaN is no literal of the language: a name that is no path root.
    assert.equal(
      errorsAt([{ event: "a", filter: "event.payload.x == NaN" }])[0]?.path,
      "$.triggers[0].filter",
    );
    assert.match(errorsAt([{ event: "a", filter: "input.x == 1" }])[0]?.message ?? "", /sees only the event/);
    assert.equal(errorsAt([{ event: "a", filter: 1 }])[0]?.path, "$.triggers[0].filter");
    assert.equal(errorsAt([{ event: "a", filter: "event.other" }])[0]?.path, "$.triggers[0].filter");
    assert.equal(errorsAt({ event: "a" })[0]?.path, "$.triggers");
    assert.equal(errorsAt(Array.from({ length: 21 }, () => ({ event: "a" })))[0]?.path, "$.triggers");
  });
});

describe("matching an event against a workflow's triggers", () => {
  it("takes the first trigger whose key matches and whose filter is truthy", () => {
    const t = triggers([
      { event: "orders.created", filter: "event.payload.total > 100" },
      { event: "orders.*", filter: "event.payload.country == 'PT'" },
      { event: "orders.**" },
    ]);
    assert.deepEqual(matchTriggers(t, { key: "orders.created", payload: { total: 150 } }), {
      matched: true,
      index: 0,
    });
    assert.deepEqual(matchTriggers(t, { key: "orders.created", payload: { total: 5, country: "PT" } }), {
      matched: true,
      index: 1,
    });
    assert.deepEqual(matchTriggers(t, { key: "orders.eu.created", payload: null }), {
      matched: true,
      index: 2,
    });
    assert.equal(matchTriggers(t, { key: "invoices.created", payload: { total: 150 } }), undefined);
  });

  it("a filter over event.key and nested payload fields", () => {
    const t = triggers([
      { event: "**", filter: "startsWith(event.key, 'orders.') && 'vip' in event.payload.tags" },
    ]);
    assert.deepEqual(matchTriggers(t, { key: "orders.x", payload: { tags: ["vip"] } }), {
      matched: true,
      index: 0,
    });
    assert.equal(matchTriggers(t, { key: "orders.x", payload: { tags: [] } }), undefined);
    assert.equal(matchTriggers(t, { key: "users.x", payload: { tags: ["vip"] } }), undefined);
  });

  it("a filter that fails on the event is a failed match with the error, unless another trigger matches", () => {
    const failing = triggers([{ event: "orders.*", filter: "event.payload.total > 100" }]);
    const outcome = matchTriggers(failing, { key: "orders.created", payload: { count: 1 } });
    assert.equal(outcome?.matched, false);
    assert.match(
      outcome !== undefined && !outcome.matched ? outcome.error : "",
      /^triggers\[0\]\.filter: event\.payload\.total does not resolve/,
    );
    const typeError = matchTriggers(failing, { key: "orders.created", payload: { total: "many" } });
    assert.equal(typeError?.matched, false);
    const rescued = triggers([
      { event: "orders.*", filter: "event.payload.total > 100" },
      { event: "orders.created" },
    ]);
    assert.deepEqual(matchTriggers(rescued, { key: "orders.created", payload: {} }), {
      matched: true,
      index: 1,
    });
  });
});

describe("triggers in a workflow definition", () => {
  const base = { name: "orders", version: 1, steps: [{ id: "a", type: "t" }] };

  it("compiles a definition with triggers", () => {
    const result = compileWorkflow({
      ...base,
      triggers: [{ event: "orders.*", filter: "event.payload.ok" }],
    });
    assert.equal(result.ok, true, JSON.stringify(!result.ok && result.errors));
  });

  it("refuses event.* outside a trigger's filter, and bad triggers naming the field", () => {
    const when = compileWorkflow({ ...base, steps: [{ id: "a", type: "t", when: "event.payload.x" }] });
    assert.equal(when.ok, false);
    assert.deepEqual(!when.ok && when.errors.map((e) => e.path), ["$.steps[0].when"]);
    const bad = compileWorkflow({ ...base, triggers: [{ event: "orders.*", filter: "steps.a.output" }] });
    assert.deepEqual(!bad.ok && bad.errors.map((e) => e.path), ["$.triggers[0].filter"]);
  });
});
