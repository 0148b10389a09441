import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SpecError } from "./errors.js";
import { DEFAULT_RETRY_POLICY } from "./retry.js";
import { MAX_DEPENDENCIES, MAX_STEPS, type CompiledWorkflow } from "./spec.js";
import { compileWorkflow, MAX_SURROGATE_ERRORS, validateRunInput } from "./validate.js";

type Json = Record<string, unknown>;

function workflow(steps: unknown[], extra: Json = {}): Json {
  return { name: "orders", version: 1, steps, ...extra };
}

function compile(spec: unknown): CompiledWorkflow {
  const result = compileWorkflow(spec);
  if (!result.ok)
    assert.fail(
      `expected the spec to compile:\n${result.errors.map((e) => `${e.path}: ${e.message}`).join("\n")}`,
    );
  return result.workflow;
}

function errorsOf(spec: unknown): SpecError[] {
  const result = compileWorkflow(spec);
  assert.equal(result.ok, false, "expected validation errors");
  return result.ok ? [] : result.errors;
}

function expectError(spec: unknown, path: string, message: RegExp): void {
  const errors = errorsOf(spec);
  const found = errors.some((e) => e.path === path && message.test(e.message));
  assert.ok(
    found,
    `no error at ${path} matching ${message}; got:\n${errors.map((e) => `${e.path}: ${e.message}`).join("\n")}`,
  );
}

describe("compileWorkflow: shapes and fields", () => {
  it("accepts a minimal workflow, as an object or as JSON text", () => {
    const spec = workflow([{ id: "a", type: "http" }]);
    assert.equal(compile(spec).name, "orders");
    assert.equal(compile(JSON.stringify(spec)).version, 1);
  });

  it("rejects what is not a JSON object", () => {
    expectError("{not json", "$", /not valid JSON/);
    expectError([1], "$", /workflow must be an object, got array/);
    expectError(undefined, "$", /must be a JSON object/);
    const cyclic: Json = {};
    cyclic["self"] = cyclic;
    expectError(cyclic, "$", /not JSON-serializable/);
  });

  it("reports unknown fields at every level, naming them", () => {
    const spec = workflow(
      [
        {
          id: "a",
          type: "http",
          dependson: [],
          retry: { maxAttempt: 3 },
          timeouts: { startToClose: "1s", idle: "1s" },
          compensate: { type: "undo", inputs: {} },
        },
      ],
      { owner: "me", defaults: { retries: {} } },
    );
    const errors = errorsOf(spec);
    assert.deepEqual(errors.map((e) => e.path).sort(), [
      "$.defaults.retries",
      "$.owner",
      "$.steps[0].compensate.inputs",
      "$.steps[0].dependson",
      "$.steps[0].retry.maxAttempt",
      "$.steps[0].timeouts.idle",
    ]);
    expectError(
      spec,
      "$.steps[0].dependson",
      /unknown field "dependson" in step \(did you mean "dependsOn"\?\)/,
    );
    expectError(spec, "$.owner", /unknown field "owner" in workflow; allowed fields: name, version/);
  });

  it("checks types, names and ids", () => {
    expectError(
      workflow([{ id: "a", type: "http" }], { name: "Orders" }),
      "$.name",
      /workflow name "Orders" is invalid/,
    );
    expectError({ version: 1, steps: [{ id: "a", type: "x" }] }, "$.name", /required/);
    expectError(workflow([{ id: "a", type: "x" }], { version: 1.5 }), "$.version", /integer from 1/);
    expectError(workflow([{ id: "a", type: "x" }], { version: 0 }), "$.version", /integer from 1/);
    expectError(
      workflow([{ id: "a", type: "x" }], { description: 5 }),
      "$.description",
      /must be a string, got number/,
    );
    expectError(
      workflow([{ id: "a", type: "x" }], { description: "x".repeat(10_001) }),
      "$.description",
      /longer than 10000/,
    );
    expectError(workflow([{ id: "1a", type: "x" }]), "$.steps[0].id", /step id "1a" is invalid/);
    expectError(workflow([{ id: "a".repeat(64), type: "x" }]), "$.steps[0].id", /is invalid/);
    expectError(
      workflow([{ id: "a", type: "Charge Card" }]),
      "$.steps[0].type",
      /task type "Charge Card" is invalid/,
    );
    expectError(workflow([{ type: "x" }]), "$.steps[0].id", /required/);
    expectError(workflow([{ id: "a" }]), "$.steps[0].type", /required/);
    expectError(workflow(["a"]), "$.steps[0]", /step must be an object, got string/);
    expectError(workflow([]), "$.steps", /at least one step/);
    expectError({ name: "x", version: 1 }, "$.steps", /required/);
    expectError(workflow([{ id: "a", type: "x", when: 5 }]), "$.steps[0].when", /must be a string/);
  });

  it("collects every error at once", () => {
    const errors = errorsOf({
      name: "BAD NAME",
      version: -1,
      timeout: "soon",
      extra: true,
      steps: [
        { id: "a", type: "x", dependsOn: ["a", "ghost"], when: "input.x ==" },
        { id: "a", type: "x", input: "{{ steps.zzz.output }}", retry: { maxAttempts: 0 } },
      ],
      output: "{{ nope }}",
    });
    const paths = errors.map((e) => e.path);
    for (const path of [
      "$.name",
      "$.version",
      "$.timeout",
      "$.extra",
      "$.steps[0].dependsOn[0]",
      "$.steps[0].dependsOn[1]",
      "$.steps[0].when",
      "$.steps[1].id",
      "$.steps[1].input",
      "$.steps[1].retry.maxAttempts",
      "$.output",
    ]) {
      assert.ok(paths.includes(path), `missing error at ${path}; got ${paths.join(", ")}`);
    }
  });
});

describe("compileWorkflow: dependencies and cycles", () => {
  it("rejects duplicate ids, unknown, duplicate and self dependencies", () => {
    const spec = workflow([
      { id: "fetch", type: "x" },
      { id: "fetch", type: "x" },
      { id: "b", type: "x", dependsOn: ["fetch", "fetch", "fecth", "b", 3] },
    ]);
    expectError(spec, "$.steps[1].id", /duplicate step id "fetch" \(first used at \$\.steps\[0\]\)/);
    expectError(spec, "$.steps[2].dependsOn[1]", /"fetch" is listed more than once/);
    expectError(spec, "$.steps[2].dependsOn[2]", /unknown step "fecth" \(did you mean "fetch"\?\)/);
    expectError(spec, "$.steps[2].dependsOn[3]", /cannot depend on itself/);
    expectError(spec, "$.steps[2].dependsOn[4]", /must be step ids \(strings\), got number/);
  });

  it("names each cycle once, starting from its first step", () => {
    const errors = errorsOf(
      workflow([
        { id: "a", type: "x", dependsOn: ["c"] },
        { id: "b", type: "x", dependsOn: ["a"] },
        { id: "c", type: "x", dependsOn: ["b"] },
        { id: "d", type: "x", dependsOn: ["c"] },
        { id: "e", type: "x", dependsOn: ["f"] },
        { id: "f", type: "x", dependsOn: ["e"] },
        { id: "ok", type: "x" },
      ]),
    );
    const cycles = errors.filter((e) => /cycle/.test(e.message));
    assert.deepEqual(
      cycles.map((e) => [e.path, e.message.replace(/ \(.*\)$/, "")]),
      [
        ["$.steps[0].dependsOn[0]", "dependency cycle: a -> c -> b -> a"],
        ["$.steps[4].dependsOn[0]", "dependency cycle: e -> f -> e"],
      ],
    );
    assert.equal(errors.length, 2, "steps downstream of a cycle (d) get no error of their own");
  });

  it("reports one cycle per tangle of mutually dependent steps", () => {
    const errors = errorsOf(
      workflow([
        { id: "a", type: "x", dependsOn: ["b"] },
        { id: "b", type: "x", dependsOn: ["a", "c"] },
        { id: "c", type: "x", dependsOn: ["b"] },
      ]),
    );
    assert.equal(errors.length, 1);
    assert.match(errors[0]?.message ?? "", /^dependency cycle: a -> b -> a/);
  });
});

describe("compileWorkflow: references in templates and expressions", () => {
  const base = [
    { id: "a", type: "x" },
    { id: "b", type: "x", dependsOn: ["a"] },
    { id: "c", type: "x", dependsOn: ["b"] },
    { id: "side", type: "x" },
  ];

  it("allows transitive upstream steps, input and run", () => {
    compile(
      workflow([
        ...base.slice(0, 2),
        {
          id: "c",
          type: "x",
          dependsOn: ["b"],
          when: "steps.a.output.ok && input.go",
          input: "{{ steps.a.output }}-{{ run.id }}",
        },
      ]),
    );
  });

  it("rejects steps that are not upstream, unknown steps and self references", () => {
    const spec = workflow([
      ...base,
      {
        id: "d",
        type: "x",
        dependsOn: ["c"],
        input: { x: "{{ steps.side.output }}", y: "{{ steps.d.output }}" },
        when: "steps.sied.status == 'succeeded'",
      },
      { id: "e", type: "x", input: "{{ step.output }}" },
    ]);
    expectError(
      spec,
      "$.steps[4].input.x",
      /steps\.side\.output refers to step "side", which is not upstream of "d": add it to dependsOn/,
    );
    expectError(spec, "$.steps[4].input.y", /a step cannot refer to itself/);
    expectError(spec, "$.steps[4].when", /unknown step "sied" \(did you mean "side"\?\)/);
    expectError(spec, "$.steps[5].input", /step\.\* is only available in compensate\.input/);
  });

  it("lets compensate.input use step.* and the step itself, and output use any step", () => {
    compile(
      workflow(base, {
        output: { all: "{{ steps.c.output }}", side: "{{ steps.side.status }}" },
      }),
    );
    compile(
      workflow([
        { id: "a", type: "x" },
        {
          id: "charge",
          type: "charge-card",
          dependsOn: ["a"],
          compensate: {
            type: "refund",
            input: {
              id: "{{ step.output.chargeId }}",
              again: "{{ steps.charge.output }}",
              from: "{{ steps.a.output }}",
            },
          },
        },
      ]),
    );
    expectError(
      workflow([
        { id: "a", type: "x" },
        { id: "b", type: "x", compensate: { type: "undo", input: "{{ steps.a.output }}" } },
      ]),
      "$.steps[1].compensate.input",
      /not upstream of "b"/,
    );
    expectError(
      workflow(base, { output: "{{ step.input }}" }),
      "$.output",
      /only available in compensate\.input/,
    );
    expectError(workflow(base, { output: "{{ steps.nope.output }}" }), "$.output", /unknown step "nope"/);
  });

  it("reports unparsable templates and expressions with their position", () => {
    expectError(
      workflow([{ id: "a", type: "x", input: { q: "{{ input.a ++ }}" } }]),
      "$.steps[0].input.q",
      /invalid template: expected a value but found "\+" at position 12/,
    );
    expectError(
      workflow([{ id: "a", type: "x", when: "input.a === 1" }]),
      "$.steps[0].when",
      /invalid expression: .* at position 10/,
    );
    expectError(
      workflow([{ id: "a", type: "x", when: "1 ||".repeat(1100) + "1" }]),
      "$.steps[0].when",
      /longer than 4096/,
    );
  });
});

describe("compileWorkflow: durations, retry policies and limits", () => {
  it("parses durations and rejects bad or zero ones", () => {
    const spec = workflow(
      [{ id: "a", type: "x", timeouts: { startToClose: "5 minutes", heartbeat: "0s" } }],
      { timeout: 30 },
    );
    expectError(spec, "$.steps[0].timeouts.startToClose", /invalid duration/);
    expectError(spec, "$.steps[0].timeouts.heartbeat", /longer than 0/);
    expectError(spec, "$.timeout", /must be a string, got number/);
    expectError(workflow([{ id: "a", type: "x" }], { timeout: "31d" }), "$.timeout", /maximum of 30d/);
  });

  it("takes a step's priority, else the workflow default, else 0, from -10 to 10", () => {
    const w = compile(
      workflow(
        [
          { id: "a", type: "x", priority: 10 },
          { id: "b", type: "x" },
          { id: "c", type: "x", priority: -10 },
        ],
        { defaults: { priority: 3 } },
      ),
    );
    assert.deepEqual(
      w.steps.map((s) => [s.id, s.priority]),
      [
        ["a", 10],
        ["b", 3],
        ["c", -10],
      ],
    );
    assert.equal(compile(workflow([{ id: "a", type: "x" }])).steps[0]?.priority, 0);
    expectError(
      workflow([{ id: "a", type: "x", priority: 11 }]),
      "$.steps[0].priority",
      /from -10 to 10, got 11/,
    );
    expectError(workflow([{ id: "a", type: "x", priority: 1.5 }]), "$.steps[0].priority", /integer/);
    expectError(
      workflow([{ id: "a", type: "x" }], { defaults: { priority: "high" } }),
      "$.defaults.priority",
      /integer from -10 to 10, got "high"/,
    );
  });

  it("checks retry policy bounds", () => {
    const spec = workflow([
      {
        id: "a",
        type: "x",
        retry: {
          maxAttempts: 101,
          backoffCoefficient: 0.5,
          jitter: "random",
          initialInterval: "10s",
          maxInterval: "1s",
          nonRetryableErrors: ["", 5],
        },
      },
    ]);
    expectError(spec, "$.steps[0].retry.maxAttempts", /integer from 1 to 100, got 101/);
    expectError(spec, "$.steps[0].retry.backoffCoefficient", /from 1 to 100, got 0.5/);
    expectError(spec, "$.steps[0].retry.jitter", /"none", "full", "equal"/);
    expectError(spec, "$.steps[0].retry.maxInterval", /must not be shorter than initialInterval/);
    expectError(spec, "$.steps[0].retry.nonRetryableErrors[0]", /non-empty string/);
    expectError(spec, "$.steps[0].retry.nonRetryableErrors[1]", /non-empty string/);
    expectError(
      workflow([{ id: "a", type: "x", retry: { initialInterval: "1m" } }], {
        defaults: { retry: { maxInterval: "10s" } },
      }),
      "$.steps[0].retry.initialInterval",
      /longer than maxInterval .* once merged with defaults\.retry/,
    );
    expectError(
      workflow([{ id: "a", type: "x", timeouts: { heartbeat: "1m" } }], {
        defaults: { timeouts: { startToClose: "30s" } },
      }),
      "$.steps[0].timeouts",
      /heartbeat must not be longer than startToClose/,
    );
  });

  it("enforces size limits", () => {
    const huge = JSON.stringify(workflow([{ id: "a", type: "x", input: "x".repeat(1024 * 1024) }]));
    expectError(huge, "$", /limit is 1048576 \(1 MiB\)/);
    const many = Array.from({ length: MAX_STEPS + 1 }, (_, i) => ({ id: `s${i}`, type: "x" }));
    expectError(workflow(many), "$.steps", /at most 5000 steps, got 5001/);
    const deps = Array.from({ length: MAX_DEPENDENCIES + 1 }, (_, i) => `s${i}`);
    expectError(
      workflow([...many.slice(0, 10), { id: "z", type: "x", dependsOn: deps }]),
      "$.steps[10].dependsOn",
      /5000 entries; the limit is 4999/,
    );
    let deep: unknown = 1;
    for (let i = 0; i < 200; i++) deep = [deep];
    expectError(
      workflow([{ id: "a", type: "x", input: deep }]),
      "$.steps[0].input" + "[0]".repeat(77),
      /nested deeper than 80 levels/,
    );
  });

  it("accepts a chain of MAX_STEPS steps", () => {
    const many = Array.from({ length: MAX_STEPS }, (_, i) => ({
      id: `s${i}`,
      type: "x",
      ...(i > 0 ? { dependsOn: [`s${i - 1}`] } : {}),
    }));
    assert.equal(compile(workflow(many)).steps.length, MAX_STEPS);
  });

  it("accepts 1 -> 1000 -> 1: a join over 1,000 dependencies", () => {
    const fans = Array.from({ length: 1000 }, (_, i) => ({ id: `f${i}`, type: "x", dependsOn: ["root"] }));
    const steps = [
      { id: "root", type: "x" },
      ...fans,
      { id: "join", type: "x", dependsOn: fans.map((f) => f.id) },
    ];
    const compiled = compile(workflow(steps));
    assert.equal(compiled.steps.length, 1002);
    assert.equal(compiled.stepsById.get("join")?.dependsOn.length, 1000);
  });
});

describe("compileWorkflow: the compiled form", () => {
  const spec = workflow(
    [
      { id: "join", type: "x", dependsOn: ["left", "right"], retry: { maxAttempts: 5 } },
      { id: "left", type: "x", dependsOn: ["root"], timeouts: { startToClose: "2m" } },
      { id: "root", type: "x", compensate: { type: "undo", retry: { jitter: "none" } } },
      { id: "right", type: "x", dependsOn: ["root"] },
    ],
    {
      timeout: "1h",
      defaults: {
        retry: { initialInterval: "2s", nonRetryableErrors: ["Invalid"] },
        timeouts: { startToClose: "30s", heartbeat: "10s" },
      },
    },
  );

  it("orders steps topologically, keeping spec order among independent steps", () => {
    const wf = compile(spec);
    assert.deepEqual(wf.order, ["root", "left", "right", "join"]);
    assert.deepEqual(
      wf.steps.map((s) => s.order),
      [0, 1, 2, 3],
    );
    assert.deepEqual(wf.dependencies.get("join"), ["left", "right"]);
    assert.deepEqual(wf.dependents.get("root"), ["left", "right"]);
    assert.equal(wf.stepsById.get("join")?.specIndex, 0);
    assert.equal(wf.timeoutMs, 3_600_000);
  });

  it("merges step retry and timeouts over the defaults", () => {
    const wf = compile(spec);
    const join = wf.stepsById.get("join");
    assert.deepEqual(join?.retry, {
      ...DEFAULT_RETRY_POLICY,
      maxAttempts: 5,
      initialIntervalMs: 2000,
      maxIntervalMs: 200_000,
      nonRetryableErrors: ["Invalid"],
    });
    assert.deepEqual(wf.stepsById.get("left")?.timeouts, {
      scheduleToStartMs: null,
      startToCloseMs: 120_000,
      heartbeatMs: 10_000,
    });
    assert.deepEqual(join?.timeouts, {
      scheduleToStartMs: null,
      startToCloseMs: 30_000,
      heartbeatMs: 10_000,
    });
    const compensate = wf.stepsById.get("root")?.compensate;
    assert.equal(compensate?.type, "undo");
    assert.equal(compensate?.retry.jitter, "none");
    assert.equal(compensate?.retry.initialIntervalMs, 2000);
  });

  it("hashes content independently of key order and formatting", () => {
    const reordered = JSON.parse(JSON.stringify(spec), (_key, value: unknown) =>
      value !== null && typeof value === "object" && !Array.isArray(value)
        ? Object.fromEntries(Object.entries(value as Json).reverse())
        : value,
    ) as unknown;
    const a = compile(spec);
    const b = compile(JSON.stringify(reordered, null, 2));
    assert.equal(a.contentHash, b.contentHash);
    assert.equal(a.canonicalJson, b.canonicalJson);
    assert.match(a.contentHash, /^[0-9a-f]{64}$/);
    const changed = compile({ ...spec, version: 2 });
    assert.notEqual(changed.contentHash, a.contentHash);
  });

  it("keeps a frozen copy of the spec, independent of the caller's object", () => {
    const mine = workflow([{ id: "a", type: "x", input: { n: 1 } }]);
    const wf = compile(mine);
    ((mine["steps"] as Json[])[0] as Json)["type"] = "changed";
    assert.equal(wf.spec.steps[0]?.type, "x");
    assert.ok(Object.isFrozen(wf.spec.steps[0]?.input));
  });

  it("accepts step ids that look like prototype keys", () => {
    const wf = compile(
      workflow([
        { id: "__proto__", type: "x" },
        { id: "constructor", type: "x", dependsOn: ["__proto__"], input: "{{ steps.__proto__.output }}" },
      ]),
    );
    assert.deepEqual(wf.order, ["__proto__", "constructor"]);
  });
});

describe("run input schema", () => {
  const schema = {
    type: "object",
    required: ["amount", "currency"],
    additionalProperties: false,
    properties: {
      amount: { type: "number", minimum: 0, exclusiveMaximum: 1_000_000 },
      currency: { enum: ["EUR", "USD"] },
      note: { type: ["string", "null"], maxLength: 5 },
      email: { type: "string", pattern: "^[^@]+@[^@]+$", minLength: 3 },
      items: {
        type: "array",
        minItems: 1,
        items: {
          type: "object",
          required: ["sku"],
          properties: { sku: { type: "string" }, qty: { type: "integer", minimum: 1 } },
        },
      },
      kind: { const: "order" },
      "odd key": { type: "boolean" },
    },
  };
  const wf = compile(workflow([{ id: "a", type: "x" }], { input: schema }));

  it("accepts valid input", () => {
    assert.deepEqual(
      validateRunInput(wf, {
        amount: 10,
        currency: "EUR",
        note: null,
        items: [{ sku: "a", qty: 2 }],
        kind: "order",
      }),
      [],
    );
  });

  it("reports every violation with a JSON path", () => {
    const errors = validateRunInput(wf, {
      amount: -1,
      currency: "GBP",
      note: "too long",
      email: "nope",
      items: [{ qty: 1.5 }],
      kind: "refund",
      "odd key": 1,
      extra: true,
    });
    assert.deepEqual(
      errors.map((e) => `${e.path}: ${e.message}`),
      [
        "$.amount: must be >= 0",
        '$.currency: must be one of ["EUR","USD"]',
        "$.note: must be at most 5 characters long",
        "$.email: must match the pattern /^[^@]+@[^@]+$/",
        "$.items[0].sku: is required",
        "$.items[0].qty: expected integer, got number",
        '$.kind: must equal "order"',
        '$["odd key"]: expected boolean, got number',
        "$.extra: is not an allowed property",
      ],
    );
    assert.deepEqual(
      validateRunInput(wf, {}).map((e) => e.path),
      ["$.amount", "$.currency"],
    );
    assert.deepEqual(validateRunInput(wf, [1]), [{ path: "$", message: "expected object, got array" }]);
    assert.deepEqual(validateRunInput(wf, undefined), [{ path: "$", message: "expected object, got null" }]);
  });

  it("accepts anything when the workflow has no schema", () => {
    assert.deepEqual(validateRunInput(compile(workflow([{ id: "a", type: "x" }])), { any: [1] }), []);
  });

  it("rejects unsupported or malformed schema keywords at registration", () => {
    const spec = workflow([{ id: "a", type: "x" }], {
      input: {
        type: "object",
        oneOf: [],
        properties: {
          a: { type: "strng" },
          b: { pattern: "(" },
          c: { minLength: -1 },
          d: { additionalProperties: {} },
          e: { items: [{}] },
        },
        required: "a",
        title: "annotations are fine",
      },
    });
    expectError(spec, "$.input.oneOf", /unsupported JSON Schema keyword "oneOf"/);
    expectError(spec, "$.input.properties.a.type", /must be one of string, number/);
    expectError(spec, "$.input.properties.b.pattern", /invalid regular expression/);
    expectError(spec, "$.input.properties.c.minLength", /non-negative integer/);
    expectError(spec, "$.input.properties.d.additionalProperties", /only true or false/);
    expectError(spec, "$.input.properties.e.items", /tuple form/);
    expectError(spec, "$.input.required", /must be an array/);
    assert.equal(errorsOf(spec).length, 7);
    expectError(
      workflow([{ id: "a", type: "x" }], { input: "object" }),
      "$.input",
      /must be a JSON Schema object/,
    );
  });
});

describe("compileWorkflow: concurrency limits", () => {
  it("compiles limits on the workflow and on steps, strategy queue by default, each with its key space", () => {
    const w = compile(
      workflow(
        [
          { id: "a", type: "x" },
          {
            id: "b",
            type: "x",
            dependsOn: ["a"],
            concurrency: [
              { key: "input.customerId", limit: 1 },
              { key: "steps.a.output.merchant", limit: 5, strategy: "cancel-in-progress" },
            ],
          },
        ],
        { concurrency: [{ key: "input.tenant", limit: 10000, strategy: "keep-newest-queued" }] },
      ),
    );
    assert.deepEqual(
      w.concurrency.map((l) => [l.scope, l.expression, l.limit, l.strategy, l.space, l.path]),
      [
        [
          "workflow",
          "input.tenant",
          10000,
          "keep-newest-queued",
          "workflow:orders:input.tenant",
          "$.concurrency[0]",
        ],
      ],
    );
    const b = w.stepsById.get("b");
    assert.deepEqual(
      b?.concurrency.map((l) => [l.scope, l.limit, l.strategy, l.space]),
      [
        ["step", 1, "queue", "step:orders/b:input.customerId"],
        ["step", 5, "cancel-in-progress", "step:orders/b:steps.a.output.merchant"],
      ],
    );
    assert.deepEqual(w.stepsById.get("a")?.concurrency, []);
  });

  it("names the field at fault: limit range, strategy, expression, unknown fields, references", () => {
    const step = (concurrency: unknown) => workflow([{ id: "a", type: "x", concurrency }]);
    expectError(
      step([{ key: "input.c", limit: 0 }]),
      "$.steps[0].concurrency[0].limit",
      /integer from 1 to 10000/,
    );
    expectError(step([{ key: "input.c", limit: 10001 }]), "$.steps[0].concurrency[0].limit", /got 10001/);
    expectError(step([{ key: "input.c", limit: 1.5 }]), "$.steps[0].concurrency[0].limit", /integer/);
    expectError(step([{ key: "input.c" }]), "$.steps[0].concurrency[0].limit", /limit is required/);
    expectError(step([{ limit: 1 }]), "$.steps[0].concurrency[0].key", /key is required/);
    expectError(
      step([{ key: "input.c", limit: 1, strategy: "cancel-newset" }]),
      "$.steps[0].concurrency[0].strategy",
      /unknown strategy "cancel-newset" \(did you mean "cancel-newest"\?\)/,
    );
    expectError(
      step([{ key: "input.c ==", limit: 1 }]),
      "$.steps[0].concurrency[0].key",
      /invalid expression/,
    );
    expectError(step([{ key: 42, limit: 1 }]), "$.steps[0].concurrency[0].key", /must be a string/);
    expectError(
      step([{ key: "input.c", limit: 1, max: 2 }]),
      "$.steps[0].concurrency[0].max",
      /unknown field/,
    );
    expectError(step({ key: "input.c", limit: 1 }), "$.steps[0].concurrency", /must be an array/);
    expectError(
      step([
        { key: "input.c", limit: 1 },
        { key: "input.c", limit: 2 },
      ]),
      "$.steps[0].concurrency[1].key",
      /already limited at \$\.steps\[0\]\.concurrency\[0\]/,
    );
    expectError(
      step([{ key: "steps.zz.output", limit: 1 }]),
      "$.steps[0].concurrency[0].key",
      /unknown step "zz"/,
    );
    expectError(
      workflow([{ id: "a", type: "x" }], { concurrency: [{ key: "steps.a.output.id", limit: 1 }] }),
      "$.concurrency[0].key",
      /evaluated when the run starts/,
    );
    expectError(
      step(Array.from({ length: 11 }, (_, i) => ({ key: `input.k${i}`, limit: 1 }))),
      "$.steps[0].concurrency",
      /11 limits; the most is 10/,
    );
  });
});

describe("compileWorkflow: rate limits", () => {
  it("compiles named limits with their defaults (per 1s, units 1, burst = units)", () => {
    const w = compile(
      workflow([
        {
          id: "a",
          type: "x",
          rateLimits: [
            { name: "partner-api", key: "input.account", rate: 50 },
            { name: "global", rate: 10, per: "1m", burst: 20, units: 2 },
          ],
        },
      ]),
    );
    assert.deepEqual(
      w.stepsById
        .get("a")
        ?.rateLimits.map((l) => [l.name, l.expression, l.units, l.rate, l.perMs, l.burst, l.path]),
      [
        ["partner-api", "input.account", 1, 50, 1000, 1, "$.steps[0].rateLimits[0]"],
        ["global", null, 2, 10, 60_000, 20, "$.steps[0].rateLimits[1]"],
      ],
    );
  });

  it("lets several steps share a limit declared alike", () => {
    const w = compile(
      workflow([
        { id: "a", type: "x", rateLimits: [{ name: "p", rate: 10, key: "input.k" }] },
        { id: "b", type: "x", rateLimits: [{ name: "p", rate: 10, per: "1s" }] },
      ]),
    );
    assert.deepEqual(
      ["a", "b"].map((id) => w.stepsById.get(id)?.rateLimits[0]?.name),
      ["p", "p"],
    );
  });

  it("names the field at fault", () => {
    const step = (rateLimits: unknown) => workflow([{ id: "a", type: "x", rateLimits }]);
    expectError(step({ name: "p", rate: 1 }), "$.steps[0].rateLimits", /must be an array/);
    expectError(step([{ rate: 1 }]), "$.steps[0].rateLimits[0].name", /name is required/);
    expectError(step([{ name: "Bad Name", rate: 1 }]), "$.steps[0].rateLimits[0].name", /a-z/);
    expectError(step([{ name: "p" }]), "$.steps[0].rateLimits[0].rate", /rate is required/);
    expectError(step([{ name: "p", rate: 0 }]), "$.steps[0].rateLimits[0].rate", /integer from 1/);
    expectError(step([{ name: "p", rate: 1, per: "soon" }]), "$.steps[0].rateLimits[0].per", /per/);
    expectError(step([{ name: "p", rate: 1, burst: 0 }]), "$.steps[0].rateLimits[0].burst", /integer from 1/);
    expectError(
      step([{ name: "p", rate: 5, burst: 4, units: 6 }]),
      "$.steps[0].rateLimits[0].units",
      /exceed burst/,
    );
    expectError(
      step([{ name: "p", rate: 1, perSecond: 2 }]),
      "$.steps[0].rateLimits[0].perSecond",
      /unknown field/,
    );
    expectError(
      step([{ name: "p", rate: 1, key: "input.c ==" }]),
      "$.steps[0].rateLimits[0].key",
      /invalid expression/,
    );
    expectError(
      step([{ name: "p", rate: 1, key: "steps.zz.output" }]),
      "$.steps[0].rateLimits[0].key",
      /unknown step "zz"/,
    );
    expectError(
      step([
        { name: "p", rate: 1 },
        { name: "p", rate: 2 },
      ]),
      "$.steps[0].rateLimits[1].name",
      /already declared at \$\.steps\[0\]\.rateLimits\[0\]/,
    );
    expectError(
      workflow([
        { id: "a", type: "x", rateLimits: [{ name: "p", rate: 10 }] },
        { id: "b", type: "x", rateLimits: [{ name: "p", rate: 10, per: "1m" }] },
      ]),
      "$.steps[1].rateLimits[0]",
      /rate limit "p" is declared at \$\.steps\[0\]\.rateLimits\[0\] with rate 10 per 1000 ms, burst 1; here with rate 10 per 60000 ms/,
    );
  });
});

describe("compileWorkflow: lone surrogates", () => {
  const units =
    "a high surrogate (U+D800-U+DBFF) must be followed by a low one (U+DC00-U+DFFF), and a low one must follow a high one, as no UTF-8 text, protobuf string or PostgreSQL value can hold one alone";

  it("refuses one in any string or key of a definition, naming its JSON path, before any other check", () => {
    const spec = workflow(
      [
        {
          id: "a",
          type: "x",
          input: { note: "x\uD800y", ["k\uDC00"]: 1, list: ["ok", "\uDBFF"], fine: "😀 \uD83D\uDE00" },
          retry: { nonRetryableErrors: ["E\uDFFF"] },
        },
        { id: "b\uD800", type: "x", dependsOn: ["a"] },
      ],
      { description: "d\uDE00", input: { type: "object", title: "t\uD83D" } },
    );
    const errors = errorsOf(spec);
    assert.deepEqual(
      errors.map((e) => `${e.path} ${e.message}`),
      [
        `$.steps[0].input.note a string holds a lone surrogate U+D800 at position 1: ${units}`,
        `$.steps[0].input["k\\udc00"] the key holds a lone surrogate U+DC00 at position 1: ${units}`,
        `$.steps[0].input.list[1] a string holds a lone surrogate U+DBFF at position 0: ${units}`,
        `$.steps[0].retry.nonRetryableErrors[0] a string holds a lone surrogate U+DFFF at position 1: ${units}`,
        `$.steps[1].id a string holds a lone surrogate U+D800 at position 1: ${units}`,
        `$.description a string holds a lone surrogate U+DE00 at position 1: ${units}`,
        `$.input.title a string holds a lone surrogate U+D83D at position 1: ${units}`,
      ],
    );
    // Every path and message can be sent (grpc-js and protobuf refuse what is not well-formed).
    for (const e of errors) assert.ok(e.path.isWellFormed() && e.message.isWellFormed(), e.path);
    // The same as JSON text, where RegisterWorkflow's spec_json writes one as an escape.
    assert.deepEqual(
      errorsOf(
        String.raw`{"name": "orders", "version": 1, "steps": [{"id": "a", "type": "x", "input": "\ud83d\ude00 \ude00"}]}`,
      ).map((e) => `${e.path} ${e.message}`),
      [`$.steps[0].input a string holds a lone surrogate U+DE00 at position 3: ${units}`],
    );
  });

  it("accepts surrogate pairs, and lists at most 20 strings", () => {
    const ok = compile(
      workflow([{ id: "a", type: "x", input: { "😀": "\uD83D\uDE00{{ input.x }}" } }], { description: "𝄞" }),
    );
    assert.equal(ok.spec.description, "𝄞");
    const many = errorsOf(
      workflow([{ id: "a", type: "x", input: Array.from({ length: 30 }, (_, i) => `${i}\uD800`) }]),
    );
    assert.equal(many.length, MAX_SURROGATE_ERRORS + 1);
    assert.equal(many[19]?.path, "$.steps[0].input[19]");
    assert.deepEqual(many[20], {
      path: "$",
      message: "10 more strings or keys hold a lone surrogate (not listed)",
    });
  });
});
