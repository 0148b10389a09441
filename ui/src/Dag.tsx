/** A DAG as an SVG: one focusable box per step, coloured and labelled by its state. */
import { NODE_HEIGHT, NODE_WIDTH, type DagLayout, type StepState, stateLabel } from "./dag";

/** Props of {@link Dag}. */
export interface DagProps {
  layout: DagLayout;
  /**
   * The state of each step, by id; steps not in it are drawn as "waiting". Without it (a
   * definition, not a run) each box shows its step's type instead.
   */
  states?: ReadonlyMap<string, StepState>;
  selected?: string | undefined;
  onSelect?: (stepId: string) => void;
  label: string;
}

/** The graph, with keyboard and pointer selection of a step when `onSelect` is given. */
export function Dag({ layout, states, selected, onSelect, label }: DagProps) {
  return (
    <div class="dag-scroll">
      <svg
        class="dag"
        role="group"
        aria-label={label}
        width={layout.width}
        height={layout.height}
        viewBox={`0 0 ${layout.width} ${layout.height}`}
      >
        <defs>
          <marker
            id="arrow"
            viewBox="0 0 10 10"
            refX="10"
            refY="5"
            markerWidth="8"
            markerHeight="8"
            orient="auto"
          >
            <path d="M 0 0 L 10 5 L 0 10 z" class="dag-arrowhead" />
          </marker>
        </defs>
        {layout.edges.map((e) => (
          <path key={`${e.from}->${e.to}`} class="dag-edge" d={e.path} marker-end="url(#arrow)" />
        ))}
        {layout.nodes.map((n) => {
          const state = states?.get(n.id) ?? "waiting";
          const interactive = onSelect !== undefined;
          const activate = (): void => onSelect?.(n.id);
          return (
            <g
              key={n.id}
              class={`dag-node state-${state}${selected === n.id ? " selected" : ""}`}
              data-step={n.id}
              data-state={state}
              transform={`translate(${n.x} ${n.y})`}
              {...(interactive
                ? {
                    role: "button",
                    tabindex: 0,
                    "aria-pressed": selected === n.id,
                    onClick: activate,
                    onKeyDown: (e: KeyboardEvent) => {
                      if (e.key === "Enter" || e.key === " ") {
                        e.preventDefault();
                        activate();
                      }
                    },
                  }
                : { role: "img" })}
              // The visible text first (WCAG 2.5.3, label in name), then the type.
              aria-label={
                states === undefined
                  ? `${n.id} ${n.type}`
                  : `${n.id} ${stateLabel(state)}, step type ${n.type}`
              }
            >
              <rect width={NODE_WIDTH} height={NODE_HEIGHT} rx="8" />
              <text x="12" y="21" class="dag-node-id">
                {truncate(n.id, 20)}
                {/* A space, so that the box's text reads "id state" (not "idstate") to assistive tools. */}{" "}
              </text>
              <text x="12" y="40" class="dag-node-state">
                {states === undefined ? truncate(n.type, 22) : stateLabel(state)}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
