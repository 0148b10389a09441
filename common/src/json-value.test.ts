import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { ArtifactRefSchema, WorkflowSpecSchema } from "@nexusflow/gen";
import fc from "fast-check";
import { Code } from "./errors.js";
import {
  JsonValueError,
  checkJsonForm,
  isJsonValueError,
  jsonToValue,
  nulCharacterPath,
  replaceNulCharacters,
  valueToJson,
  valueToJsonChecked,
} from "./json-value.js";

/** The Values without a JSON form, with the reason each is refused for. */
const BAD: [string, () => Value][] = [
  ["NaN has no JSON form", () => create(ValueSchema, { kind: { case: "numberValue", value: NaN } })],
  [
    "Infinity has no JSON form",
    () => create(ValueSchema, { kind: { case: "numberValue", value: Infinity } }),
  ],
  [
    "-Infinity has no JSON form",
    () => create(ValueSchema, { kind: { case: "numberValue", value: -Infinity } }),
  ],
  ["a Value with no kind set has no JSON form", () => create(ValueSchema)],
];

/** Every Value node of `value` with its path from `path`, in the order a conversion visits them. */
function nodes(value: Value, path: string): [Value, string][] {
  const k = value.kind;
  if (k.case === "structValue")
    return [
      [value, path],
      ...Object.entries(k.value.fields).flatMap(([key, v]) => nodes(v, `${path}.${key}`)),
    ];
  if (k.case === "listValue")
    return [[value, path], ...k.value.values.flatMap((v, i) => nodes(v, `${path}[${i}]`))];
  return [[value, path]];
}

function refusedAt(path: string, reason: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(isJsonValueError(e), String(e));
    assert.equal(e.path, path);
    assert.equal(e.reason, reason);
    assert.equal(e.message, `${path}: ${reason}`);
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.deepEqual(e.violations, [{ field: path, description: reason }]);
    return true;
  };
}

describe("valueToJsonChecked", () => {
  it("converts every JSON value exactly as valueToJson does (-0 included)", () => {
    fc.assert(
      fc.property(fc.jsonValue(), (json) => {
        const value = jsonToValue(json);
        assert.deepEqual(valueToJsonChecked(value, "input"), valueToJson(value));
      }),
      { numRuns: 300 },
    );
    assert.equal(valueToJsonChecked(undefined, "input"), null);
    assert.ok(Object.is(valueToJsonChecked(jsonToValue(-0), "input"), -0));
  });

  it("names the field of the value with no JSON form, at the top or nested", () => {
    const [, nan] = BAD[0] as [string, () => Value];
    const items = jsonToValue({ items: [1, 2, 3] });
    assert.ok(items.kind.case === "structValue");
    const list = items.kind.value.fields["items"]?.kind;
    assert.ok(list?.case === "listValue");
    list.value.values[2] = nan();
    assert.throws(
      () => valueToJsonChecked(items, "completed.output"),
      refusedAt("completed.output.items[2]", "NaN has no JSON form"),
    );
    for (const [reason, bad] of BAD)
      assert.throws(() => valueToJsonChecked(bad(), "input"), refusedAt("input", reason));
    assert.ok(new JsonValueError("a", "b") instanceof Error);
  });

  it("finds one bad value wherever it is put in any JSON value", () => {
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 4 }),
        fc.nat(),
        fc.constantFrom(...BAD),
        (json, pick, [reason, bad]) => {
          const value = jsonToValue(json);
          const all = nodes(value, "failed.error.details");
          const [node, path] = all[pick % all.length] as [Value, string];
          node.kind = bad().kind;
          assert.throws(() => valueToJsonChecked(value, "failed.error.details"), refusedAt(path, reason));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("keeps a __proto__ key as an own property, as valueToJson does", () => {
    const value = create(ValueSchema, {
      kind: { case: "structValue", value: { fields: {} } },
    });
    assert.ok(value.kind.case === "structValue");
    Object.defineProperty(value.kind.value.fields, "__proto__", {
      value: jsonToValue({ polluted: true }),
      enumerable: true,
      writable: true,
      configurable: true,
    });
    const json = valueToJsonChecked(value, "input") as Record<string, unknown>;
    assert.deepEqual(Object.keys(json), ["__proto__"]);
    assert.equal(Object.getPrototypeOf(json), Object.prototype);
    assert.deepEqual(JSON.stringify(json), JSON.stringify(valueToJson(value)));
  });
});

describe("checkJsonForm", () => {
  const spec = () =>
    create(WorkflowSpecSchema, {
      name: "w",
      version: 1,
      input: { type: "object", properties: { n: { minimum: 0 } } },
      steps: [
        { id: "a", type: "noop", input: jsonToValue({ x: [1] }) },
        { id: "b", type: "noop", compensate: { type: "undo", input: jsonToValue({ y: 2 }) } },
      ],
      output: jsonToValue({ done: true }),
    });

  it("passes a message whose Values all have a JSON form", () => {
    checkJsonForm(WorkflowSpecSchema, spec(), "spec");
  });

  it("names a bad Value anywhere in the message by proto field names", () => {
    for (const [reason, bad] of BAD) {
      const s1 = spec();
      (s1.steps[1]?.compensate?.input as Value).kind = bad().kind;
      assert.throws(
        () => checkJsonForm(WorkflowSpecSchema, s1, "spec"),
        refusedAt("spec.steps[1].compensate.input", reason),
      );
      const s2 = spec();
      const x = s2.steps[0]?.input?.kind;
      assert.ok(x?.case === "structValue");
      const list = x.value.fields["x"]?.kind;
      assert.ok(list?.case === "listValue");
      list.value.values.push(bad());
      assert.throws(
        () => checkJsonForm(WorkflowSpecSchema, s2, "spec"),
        refusedAt("spec.steps[0].input.x[1]", reason),
      );
    }
  });

  it("names a non-finite number in a Struct field, which protobuf-es keeps as plain JSON", () => {
    for (const [n, reason] of [
      [NaN, "NaN has no JSON form"],
      [Infinity, "Infinity has no JSON form"],
      [-Infinity, "-Infinity has no JSON form"],
    ] as const) {
      const s = spec();
      s.input = { type: "object", properties: { n: { minimum: n } }, list: [1, n] };
      assert.throws(
        () => checkJsonForm(WorkflowSpecSchema, s, "spec"),
        refusedAt("spec.input.properties.n.minimum", reason),
      );
      s.input = { list: [1, n] };
      assert.throws(
        () => checkJsonForm(WorkflowSpecSchema, s, "spec"),
        refusedAt("spec.input.list[1]", reason),
      );
    }
  });
  it("names a Timestamp that toJson cannot write, at its bounds and beyond", () => {
    const reason =
      "a Timestamp must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, with nanos from 0 to 999999999";
    const ref = (createTime: { seconds: bigint; nanos?: number }) =>
      create(ArtifactRefSchema, { key: "k", createTime });
    for (const t of [
      { seconds: 253_402_300_800n },
      { seconds: -62_135_596_801n },
      { seconds: 2n ** 63n - 1n },
      { seconds: 0n, nanos: -1 },
      { seconds: 0n, nanos: 1_000_000_000 },
    ]) {
      assert.throws(
        () => checkJsonForm(ArtifactRefSchema, ref(t), "completed.output_ref"),
        refusedAt("completed.output_ref.create_time", reason),
        JSON.stringify(t, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v)),
      );
    }
    for (const t of [
      { seconds: 253_402_300_799n, nanos: 999_999_999 },
      { seconds: -62_135_596_800n },
      { seconds: 0n },
    ])
      checkJsonForm(ArtifactRefSchema, ref(t), "completed.output_ref");
  });
});

describe("nulCharacterPath", () => {
  it("finds the first string, value or key, holding U+0000, as a path", () => {
    assert.equal(nulCharacterPath({ a: [1, "ok", { b: "x\u0000y" }] }, "input"), "input.a[2].b");
    assert.equal(nulCharacterPath({ ["k\u0000"]: 1 }, "output"), "output.k\u0000");
    assert.equal(nulCharacterPath("\u0000", "reason"), "reason");
  });

  it("passes values without one, whatever their shape", () => {
    for (const v of [null, 0, true, "", "text \\u0000 escaped", [], {}, { a: [{ b: "c" }] }])
      assert.equal(nulCharacterPath(v, "input"), undefined);
  });
});

describe("replaceNulCharacters", () => {
  it("replaces U+0000 with U+FFFD in strings and keys, leaving everything else as it was", () => {
    assert.deepEqual(replaceNulCharacters({ ["k\u0000"]: ["a\u0000b", 1, null, { c: "\u0000" }] }), {
      ["k\ufffd"]: ["a\ufffdb", 1, null, { c: "\ufffd" }],
    });
    assert.equal(replaceNulCharacters("plain"), "plain");
  });
});
