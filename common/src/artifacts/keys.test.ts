import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isArtifactError } from "./errors.js";
import {
  artifactName,
  attemptPrefix,
  checkKey,
  parseArtifactKey,
  runPrefix,
  stepPrefix,
  taskPrefix,
} from "./keys.js";

const RUN = "0d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a";
const invalidKey = (e: unknown): boolean => isArtifactError(e, "INVALID_KEY");

describe("task key layout", () => {
  it("puts a step's attempts under runs/{run}/{step}/attempt-{n}/, a compensation's beside them", () => {
    assert.equal(runPrefix(RUN), `runs/${RUN}/`);
    assert.equal(stepPrefix(RUN, "build"), `runs/${RUN}/build/`);
    assert.equal(taskPrefix(RUN, "build"), `runs/${RUN}/build/`);
    assert.equal(attemptPrefix(RUN, "build", 2), `runs/${RUN}/build/attempt-2/`);
    assert.equal(attemptPrefix(RUN, "build", 1, "COMPENSATION"), `runs/${RUN}/build.compensation/attempt-1/`);
  });

  it("gives each element of a map step its own folder inside the step's", () => {
    assert.equal(taskPrefix(RUN, "fan", "STEP", 0), `runs/${RUN}/fan/element-0/`);
    assert.equal(attemptPrefix(RUN, "fan", 1, "STEP", 3), `runs/${RUN}/fan/element-3/attempt-1/`);
    assert.equal(
      attemptPrefix(RUN, "fan", 2, "COMPENSATION", 3),
      `runs/${RUN}/fan.compensation/element-3/attempt-2/`,
    );
    // Element 0 is an element (not the step itself).
    assert.notEqual(attemptPrefix(RUN, "fan", 1, "STEP", 0), attemptPrefix(RUN, "fan", 1));
    assert.ok(checkKey(`${attemptPrefix(RUN, "fan", 1, "STEP", 9999)}output.json`));
  });

  it("never makes an element's folder a prefix of another's, of the step's attempts or of another step's", () => {
    const folders = [
      attemptPrefix(RUN, "fan", 1),
      attemptPrefix(RUN, "fan", 10),
      ...[0, 1, 2, 10, 11, 100, 101].flatMap((i) => [
        attemptPrefix(RUN, "fan", 1, "STEP", i),
        attemptPrefix(RUN, "fan", 10, "STEP", i),
        attemptPrefix(RUN, "fan", 1, "COMPENSATION", i),
      ]),
      // Step ids that look like the element folders or the stored element id.
      attemptPrefix(RUN, "element-1", 1),
      attemptPrefix(RUN, "fan-1", 1),
      attemptPrefix(RUN, "fan_element-1", 1),
    ];
    assert.equal(new Set(folders).size, folders.length);
    for (const a of folders)
      for (const b of folders) if (a !== b) assert.ok(!b.startsWith(a), `${a} is a prefix of ${b}`);
    // The step's listing prefix takes in its elements' folders, no other step's.
    assert.ok(attemptPrefix(RUN, "fan", 1, "STEP", 10).startsWith(stepPrefix(RUN, "fan")));
    assert.ok(!attemptPrefix(RUN, "fan-1", 1).startsWith(stepPrefix(RUN, "fan")));
    assert.ok(!attemptPrefix(RUN, "fan", 1, "STEP", 10).startsWith(taskPrefix(RUN, "fan", "STEP", 1)));
  });

  it("refuses an element index that is not a non-negative integer", () => {
    for (const index of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])
      assert.throws(() => attemptPrefix(RUN, "fan", 1, "STEP", index), invalidKey, String(index));
    assert.throws(() => attemptPrefix(RUN, "fan", 0, "STEP", 1), invalidKey);
    assert.throws(() => attemptPrefix(RUN, "a/b", 1, "STEP", 1), invalidKey);
  });

  it("parses keys of the layout back, an element's with its index", () => {
    assert.deepEqual(parseArtifactKey(`runs/${RUN}/build/attempt-2/reports/a.csv`), {
      runId: RUN,
      stepId: "build",
      kind: "STEP",
      attempt: 2,
      name: "reports/a.csv",
    });
    assert.deepEqual(parseArtifactKey(`runs/${RUN}/fan/element-12/attempt-3/output.json`), {
      runId: RUN,
      stepId: "fan",
      kind: "STEP",
      elementIndex: 12,
      attempt: 3,
      name: "output.json",
    });
    assert.deepEqual(parseArtifactKey(`runs/${RUN}/fan.compensation/element-0/attempt-1/logs.jsonl`), {
      runId: RUN,
      stepId: "fan",
      kind: "COMPENSATION",
      elementIndex: 0,
      attempt: 1,
      name: "logs.jsonl",
    });
    // A handler's file under a plain step may be named like an element folder: it stays a name.
    assert.deepEqual(parseArtifactKey(`runs/${RUN}/s/attempt-1/element-3/attempt-1/x`), {
      runId: RUN,
      stepId: "s",
      kind: "STEP",
      attempt: 1,
      name: "element-3/attempt-1/x",
    });
    for (const key of [
      `runs/${RUN}/fan/element-03/attempt-1/x`,
      `runs/${RUN}/fan/element-/attempt-1/x`,
      `runs/${RUN}/fan/element-1/x`,
      `runs/${RUN}/fan/element-1/attempt-0/x`,
    ])
      assert.equal(parseArtifactKey(key), undefined, key);
    assert.equal(artifactName(`runs/${RUN}/fan/element-7/attempt-1/data/out.bin`), "data/out.bin");
  });

  it("round-trips every folder it makes", () => {
    for (const kind of ["STEP", "COMPENSATION"] as const)
      for (const elementIndex of [undefined, 0, 1, 10, 9999])
        for (const attempt of [1, 2, 10]) {
          const key = `${attemptPrefix(RUN, "fan_1-x", attempt, kind, elementIndex)}a/b.txt`;
          assert.deepEqual(parseArtifactKey(key), {
            runId: RUN,
            stepId: "fan_1-x",
            kind,
            ...(elementIndex === undefined ? {} : { elementIndex }),
            attempt,
            name: "a/b.txt",
          });
        }
  });
});
