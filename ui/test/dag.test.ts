/** The DAG layout and the state each step is drawn in (ui/src/dag.ts): pure functions. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { RunSchema, StepSpecSchema, TaskKind, type TaskRun, TaskRunSchema, TaskStatus } from "@nexusflow/gen";
import {
  NODE_HEIGHT,
  NODE_WIDTH,
  type DagStep,
  elementsProgress,
  layoutDag,
  stateLabel,
  stepKind,
  stepState,
  tasksByStep,
  visiblePart,
} from "../src/dag";

const step = (id: string, dependsOn: string[] = []): DagStep => ({ id, type: `t-${id}`, dependsOn });
const task = (stepId: string, status: TaskStatus, kind = TaskKind.STEP): TaskRun =>
  create(TaskRunSchema, { id: `${stepId}-${kind}`, stepId, status, kind });

describe("layoutDag", () => {
  it("puts each step one column after its deepest dependency, rows in definition order", () => {
    const layout = layoutDag([
      step("a"),
      step("b", ["a"]),
      step("c", ["a"]),
      step("d", ["b", "c"]),
      step("e"),
    ]);
    const at = Object.fromEntries(layout.nodes.map((n) => [n.id, [n.column, n.x, n.y]]));
    assert.equal(at["a"]?.[0], 0);
    assert.equal(at["e"]?.[0], 0);
    assert.equal(at["b"]?.[0], 1);
    assert.equal(at["c"]?.[0], 1);
    assert.equal(at["d"]?.[0], 2);
    // Same column, different rows; later columns further right.
    assert.ok((at["c"]?.[2] ?? 0) > (at["b"]?.[2] ?? 0));
    assert.ok((at["d"]?.[1] ?? 0) > (at["b"]?.[1] ?? 0));
    assert.deepEqual(
      layout.edges.map((e) => `${e.from}->${e.to}`),
      ["a->b", "a->c", "b->d", "c->d"],
    );
    // Everything fits in the canvas.
    for (const n of layout.nodes) {
      assert.ok(n.x + NODE_WIDTH <= layout.width && n.y + NODE_HEIGHT <= layout.height, n.id);
    }
  });

  it("ignores dependencies on unknown steps and does not hang on a cycle", () => {
    const layout = layoutDag([step("a", ["ghost"]), step("x", ["y"]), step("y", ["x"])]);
    assert.equal(layout.nodes.length, 3);
    assert.equal(layout.nodes.find((n) => n.id === "a")?.column, 0);
    assert.equal(layout.edges.filter((e) => e.from === "ghost").length, 0);
  });

  it("lays out an empty graph as an empty canvas", () => {
    const layout = layoutDag([]);
    assert.deepEqual([layout.nodes, layout.edges], [[], []]);
    assert.ok(layout.width > 0 && layout.height > 0);
  });
});

describe("stepState", () => {
  it("follows the step's task, then its compensation's", () => {
    assert.equal(stepState(undefined), "not-started");
    const states: [TaskStatus, string][] = [
      [TaskStatus.PENDING, "pending"],
      [TaskStatus.QUEUED, "queued"],
      [TaskStatus.LEASED, "leased"],
      [TaskStatus.RUNNING, "running"],
      [TaskStatus.RETRY_WAIT, "retrying"],
      [TaskStatus.SUCCEEDED, "succeeded"],
      [TaskStatus.FAILED, "failed"],
      [TaskStatus.SKIPPED, "skipped"],
      [TaskStatus.CANCELLED, "cancelled"],
      [TaskStatus.WAITING, "waiting"],
    ];
    for (const [status, state] of states)
      assert.equal(stepState({ step: task("s", status), compensation: undefined }), state);
    const done = task("s", TaskStatus.SUCCEEDED);
    const comp = (status: TaskStatus) => ({
      step: done,
      compensation: task("s", status, TaskKind.COMPENSATION),
    });
    assert.equal(stepState(comp(TaskStatus.QUEUED)), "compensating");
    assert.equal(stepState(comp(TaskStatus.RUNNING)), "compensating");
    assert.equal(stepState(comp(TaskStatus.SUCCEEDED)), "compensated");
    assert.equal(stepState(comp(TaskStatus.FAILED)), "compensation-failed");
    assert.equal(stateLabel("compensation-failed"), "compensation failed");
  });

  it("groups a run's tasks by step, compensations with their step (with or without the suffix)", () => {
    const run = create(RunSchema, {
      tasks: [
        task("flight", TaskStatus.SUCCEEDED),
        task("flight", TaskStatus.SUCCEEDED, TaskKind.COMPENSATION),
        task("hotel", TaskStatus.SUCCEEDED),
        { ...task("hotel.compensation", TaskStatus.RUNNING, TaskKind.COMPENSATION) },
        task("charge", TaskStatus.FAILED),
      ],
    });
    const byStep = tasksByStep(run);
    assert.deepEqual([...byStep.keys()], ["flight", "hotel", "charge"]);
    assert.equal(stepState(byStep.get("flight")), "compensated");
    assert.equal(stepState(byStep.get("hotel")), "compensating");
    assert.equal(stepState(byStep.get("charge")), "failed");
    assert.equal(tasksByStep(undefined).size, 0);
  });
});

describe("stepKind", () => {
  it("names a task step by its type and the steps no executor runs by what they do", () => {
    assert.equal(stepKind(create(StepSpecSchema, { id: "a", type: "charge-card" })), "charge-card");
    assert.equal(
      stepKind(create(StepSpecSchema, { id: "w", wait: { signal: "approved" } })),
      "wait: approved",
    );
    assert.equal(
      stepKind(create(StepSpecSchema, { id: "e", wait: { event: "payments.*", filter: "true" } })),
      "wait: event payments.*",
    );
    assert.equal(stepKind(create(StepSpecSchema, { id: "s", sleep: { for: "10m" } })), "sleep");
    assert.equal(stepKind(create(StepSpecSchema, { id: "c", workflow: { name: "child" } })), "child: child");
    assert.equal(
      stepKind(create(StepSpecSchema, { id: "m", type: "resize", map: { items: "input.files" } })),
      "map: resize",
    );
    assert.equal(stateLabel("not-started"), "not started");
  });
});

describe("map elements", () => {
  it("groups a map step's element tasks under it, in index order, with their progress", () => {
    const run = create(RunSchema, {
      tasks: [
        task("m", TaskStatus.WAITING),
        task("m[10]", TaskStatus.RUNNING),
        task("m[2]", TaskStatus.SUCCEEDED),
        task("m[1]", TaskStatus.FAILED),
        task("other", TaskStatus.PENDING),
      ],
    });
    const byStep = tasksByStep(run);
    assert.deepEqual([...byStep.keys()], ["m", "other"]);
    assert.deepEqual(
      byStep.get("m")?.elements?.map((t) => t.stepId),
      ["m[1]", "m[2]", "m[10]"],
    );
    assert.equal(stepState(byStep.get("m")), "waiting");
    assert.equal(elementsProgress(byStep.get("m")), "2 of 3 elements ended");
    assert.equal(elementsProgress(byStep.get("other")), undefined);
  });
});

describe("visiblePart", () => {
  it("keeps of a long chain the boxes and arrows near the view, and the selected box anywhere", () => {
    const chain = Array.from({ length: 5000 }, (_, i) => step(`s${i}`, i === 0 ? [] : [`s${i - 1}`]));
    const layout = layoutDag(chain);
    const view = { x: 0, y: 0, width: 1000, height: 600 };
    const near = visiblePart(layout, view);
    const ids = near.nodes.map((n) => n.id);
    assert.ok(ids.length > 4 && ids.length < 20, `${ids.length} boxes`);
    assert.deepEqual(
      ids,
      ids.map((_, i) => `s${i}`),
      "the first steps, in order",
    );
    assert.ok(near.edges.every((e) => ids.includes(e.from) || ids.includes(e.to)));
    assert.equal(near.edges.length, ids.length);
    // Scrolled to the end: the last steps; the selected first one is kept too.
    const end = visiblePart(layout, { ...view, x: layout.width - view.width }, "s0");
    assert.ok(end.nodes.some((n) => n.id === "s4999"));
    assert.ok(end.nodes.some((n) => n.id === "s0"));
    assert.ok(!end.nodes.some((n) => n.id === "s1"));
  });
});
