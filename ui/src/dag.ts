/**
 * A workflow's DAG as boxes and arrows (pure functions, no DOM): steps placed in columns by the
 * longest chain of dependencies before them (left to right), each column in definition order; and
 * the state a step is shown in, from its task and its compensation's task.
 */
import { type Run, type StepSpec, TaskKind, type TaskRun, TaskStatus } from "@nexusflow/gen";

/** Box size and spacing, in SVG user units. */
export const NODE_WIDTH = 168;
export const NODE_HEIGHT = 52;
const COLUMN_GAP = 64;
const ROW_GAP = 20;
const MARGIN = 12;

/** A step placed on the canvas. */
export interface DagNode {
  id: string;
  type: string;
  column: number;
  x: number;
  y: number;
}

/** An arrow from a dependency to its dependent. */
export interface DagEdge {
  from: string;
  to: string;
  /** SVG path data. */
  path: string;
}

/** A laid-out graph. */
export interface DagLayout {
  nodes: DagNode[];
  edges: DagEdge[];
  width: number;
  height: number;
}

/** The steps of a graph: an id, a type and what it depends on. */
export type DagStep = Pick<StepSpec, "id" | "type" | "dependsOn">;

/**
 * What a step of a definition does, for its box: its task type, or for the steps no executor runs
 * (which have none) "wait: SIGNAL", "wait: event PATTERN", "sleep" or "child: WORKFLOW"; a map step
 * "map: TYPE".
 */
export function stepKind(step: Pick<StepSpec, "type" | "wait" | "sleep" | "workflow" | "map">): string {
  if (step.map !== undefined) return `map: ${step.type}`;
  if (step.type !== "") return step.type;
  if (step.wait !== undefined)
    return step.wait.event !== "" ? `wait: event ${step.wait.event}` : `wait: ${step.wait.signal}`;
  if (step.sleep !== undefined) return "sleep";
  if (step.workflow !== undefined) return `child: ${step.workflow.name}`;
  return "";
}

/** A definition's steps as graph steps, each with its {@link stepKind} as its type. */
export function graphStepsOf(steps: readonly StepSpec[]): DagStep[] {
  return steps.map((s) => ({ id: s.id, type: stepKind(s), dependsOn: s.dependsOn }));
}

/**
 * Places `steps`. Dependencies on unknown steps are ignored, and a cycle (which registration
 * refuses) cannot hang it: a step on one is put in the column after the ones already placed.
 */
export function layoutDag(steps: readonly DagStep[]): DagLayout {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const columns = new Map<string, number>();
  const visiting = new Set<string>();
  const columnOf = (id: string): number => {
    const known = columns.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const step = byId.get(id);
    let column = 0;
    for (const dep of step?.dependsOn ?? []) {
      if (byId.has(dep)) column = Math.max(column, columnOf(dep) + 1);
    }
    visiting.delete(id);
    columns.set(id, column);
    return column;
  };
  const rows = new Map<number, number>();
  const nodes: DagNode[] = steps.map((s) => {
    const column = columnOf(s.id);
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    return {
      id: s.id,
      type: s.type,
      column,
      x: MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
      y: MARGIN + row * (NODE_HEIGHT + ROW_GAP),
    };
  });
  const placed = new Map(nodes.map((n) => [n.id, n]));
  const edges: DagEdge[] = [];
  for (const s of steps) {
    const to = placed.get(s.id);
    for (const dep of s.dependsOn) {
      const from = placed.get(dep);
      if (from === undefined || to === undefined) continue;
      const x1 = from.x + NODE_WIDTH;
      const y1 = from.y + NODE_HEIGHT / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_HEIGHT / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      edges.push({
        from: dep,
        to: s.id,
        path: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
      });
    }
  }
  const columnsUsed = Math.max(0, ...nodes.map((n) => n.column)) + 1;
  const rowsUsed = Math.max(1, ...rows.values());
  return {
    nodes,
    edges,
    width: 2 * MARGIN + columnsUsed * NODE_WIDTH + (columnsUsed - 1) * COLUMN_GAP,
    height: 2 * MARGIN + rowsUsed * NODE_HEIGHT + (rowsUsed - 1) * ROW_GAP,
  };
}

/** A rectangle of the canvas: the part of a graph scrolled to. */
export interface Viewport {
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * The boxes and arrows of `layout` in or near `view` (within one view's size of it each way, so
 * that a scroll shows drawn boxes before the next measure), and the box of `selected` wherever it
 * is. An arrow is kept when the rectangle between its ends meets that area.
 */
export function visiblePart(
  layout: DagLayout,
  view: Viewport,
  selected?: string,
): { nodes: DagNode[]; edges: DagEdge[] } {
  const left = view.x - view.width;
  const right = view.x + 2 * view.width;
  const top = view.y - view.height;
  const bottom = view.y + 2 * view.height;
  const meets = (x1: number, y1: number, x2: number, y2: number): boolean =>
    x2 >= left && x1 <= right && y2 >= top && y1 <= bottom;
  const nodes = layout.nodes.filter(
    (n) => n.id === selected || meets(n.x, n.y, n.x + NODE_WIDTH, n.y + NODE_HEIGHT),
  );
  const byId = new Map(layout.nodes.map((n) => [n.id, n]));
  const edges = layout.edges.filter((e) => {
    const from = byId.get(e.from);
    const to = byId.get(e.to);
    if (from === undefined || to === undefined) return false;
    return meets(
      Math.min(from.x, to.x),
      Math.min(from.y, to.y),
      Math.max(from.x, to.x) + NODE_WIDTH,
      Math.max(from.y, to.y) + NODE_HEIGHT,
    );
  });
  return { nodes, edges };
}

/**
 * How a step is shown: its task's state, or, once a compensation of it exists, that
 * compensation's progress. "not-started" is a step with no task yet; "waiting" is a wait or sleep
 * step waiting for its signal or its time (TASK_STATUS_WAITING), or a child workflow step for its
 * child run.
 */
export type StepState =
  | "not-started"
  | "waiting"
  | "pending"
  | "queued"
  | "leased"
  | "running"
  | "retrying"
  | "succeeded"
  | "failed"
  | "skipped"
  | "cancelled"
  | "compensating"
  | "compensated"
  | "compensation-failed";

/** The tasks of one step: its own and its compensation's (each the latest, if several). */
export interface StepTasks {
  step: TaskRun | undefined;
  compensation: TaskRun | undefined;
  /** A map step's element tasks (stored as `step[index]`), in index order. */
  elements?: TaskRun[];
}

/** A map element's task's step id, `step[index]` (step ids have no brackets). */
const ELEMENT = /^(.+)\[(\d+)\]$/;

const COMPENSATION_SUFFIX = ".compensation";

/** The tasks of each step of `run`, by step id. */
export function tasksByStep(run: Run | undefined): Map<string, StepTasks> {
  const map = new Map<string, StepTasks>();
  for (const task of run?.tasks ?? []) {
    const element = task.kind === TaskKind.COMPENSATION ? null : ELEMENT.exec(task.stepId);
    if (element !== null && element[1] !== undefined) {
      const entry = map.get(element[1]) ?? { step: undefined, compensation: undefined };
      (entry.elements ??= []).push(task);
      map.set(element[1], entry);
      continue;
    }
    const compensation = task.kind === TaskKind.COMPENSATION;
    const stepId =
      compensation && task.stepId.endsWith(COMPENSATION_SUFFIX)
        ? task.stepId.slice(0, -COMPENSATION_SUFFIX.length)
        : task.stepId;
    const entry = map.get(stepId) ?? { step: undefined, compensation: undefined };
    if (compensation) entry.compensation = task;
    else entry.step = task;
    map.set(stepId, entry);
  }
  const index = (t: TaskRun): number => Number(ELEMENT.exec(t.stepId)?.[2] ?? 0);
  for (const entry of map.values()) entry.elements?.sort((a, b) => index(a) - index(b));
  return map;
}

function taskState(status: TaskStatus): StepState {
  switch (status) {
    case TaskStatus.PENDING:
      return "pending";
    case TaskStatus.QUEUED:
      return "queued";
    case TaskStatus.LEASED:
      return "leased";
    case TaskStatus.RUNNING:
      return "running";
    case TaskStatus.RETRY_WAIT:
      return "retrying";
    case TaskStatus.SUCCEEDED:
      return "succeeded";
    case TaskStatus.FAILED:
      return "failed";
    case TaskStatus.SKIPPED:
      return "skipped";
    case TaskStatus.CANCELLED:
      return "cancelled";
    case TaskStatus.WAITING:
      return "waiting";
    default:
      return "not-started";
  }
}

/** How far a map step's elements are: "3 of 10 elements ended", or undefined for other steps. */
export function elementsProgress(tasks: StepTasks | undefined): string | undefined {
  const elements = tasks?.elements;
  if (elements === undefined || elements.length === 0) return undefined;
  const ended = elements.filter(
    (t) =>
      t.status === TaskStatus.SUCCEEDED ||
      t.status === TaskStatus.FAILED ||
      t.status === TaskStatus.CANCELLED ||
      t.status === TaskStatus.SKIPPED,
  ).length;
  return `${ended} of ${elements.length} elements ended`;
}

/** The state a step is drawn in. */
export function stepState(tasks: StepTasks | undefined): StepState {
  if (tasks?.compensation !== undefined) {
    switch (tasks.compensation.status) {
      case TaskStatus.SUCCEEDED:
        return "compensated";
      case TaskStatus.FAILED:
      case TaskStatus.CANCELLED:
        return "compensation-failed";
      default:
        return "compensating";
    }
  }
  return tasks?.step === undefined ? "not-started" : taskState(tasks.step.status);
}

/** A state as words for people and screen readers. */
export function stateLabel(state: StepState): string {
  return state.replace(/-/g, " ");
}
