/** A DAG as an SVG: one focusable box per step, coloured and labelled by its state. */
import { Component } from "preact";
import { useCallback, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import {
  NODE_HEIGHT,
  NODE_WIDTH,
  type DagLayout,
  type DagNode,
  type StepState,
  type Viewport,
  stateLabel,
  visiblePart,
} from "./dag";

/**
 * Above this many steps only the boxes and arrows in and near the scrolled-to part of the graph
 * are drawn (a workflow may have 5,000 steps: drawn whole, its first picture held the page's
 * thread for over 2 s). At or below it every box is drawn, each reachable with Tab.
 */
export const DRAW_ALL_UP_TO = 2000;

/** Props of {@link Dag}. */
export interface DagProps {
  layout: DagLayout;
  /**
   * The state of each step, by id; steps not in it are drawn as "not-started". Without it (a
   * definition, not a run) each box shows its step's type instead.
   */
  states?: ReadonlyMap<string, StepState>;
  /** Words after a step's state, by id (a retrying step's "at 14:05:31"). */
  notes?: ReadonlyMap<string, string>;
  selected?: string | undefined;
  onSelect?: (stepId: string) => void;
  label: string;
}

/** The graph, with keyboard and pointer selection of a step when `onSelect` is given. */
export function Dag({ layout, states, notes, selected, onSelect, label }: DagProps) {
  // One callback for every box, whatever the parent passes: a box re-renders only when its own
  // state or selection changes (a run of a thousand steps changes a few boxes at a time).
  const onSelectRef = useRef(onSelect);
  onSelectRef.current = onSelect;
  const select = useCallback((id: string) => onSelectRef.current?.(id), []);
  const scroller = useRef<HTMLDivElement>(null);
  const culled = layout.nodes.length > DRAW_ALL_UP_TO;
  const view = useScrolledView(scroller, culled);
  const drawn = useMemo(
    () =>
      culled
        ? // Before the first measure: the top left, as a page opens it.
          visiblePart(layout, view ?? { x: 0, y: 0, width: 1280, height: 800 }, selected)
        : { nodes: layout.nodes, edges: layout.edges },
    [layout, culled, view, selected],
  );
  return (
    <div
      class="dag-scroll"
      ref={scroller}
      // A large graph is scrolled to draw more of it: from the keyboard too.
      {...(culled ? { tabIndex: 0, role: "region", "aria-label": `${label} (scroll to see more)` } : {})}
    >
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
        <DagEdges edges={drawn.edges} />
        {drawn.nodes.map((n) => (
          <DagNodeView
            key={n.id}
            node={n}
            state={states?.get(n.id) ?? "not-started"}
            note={notes?.get(n.id)}
            showState={states !== undefined}
            selected={selected === n.id}
            select={onSelect === undefined ? undefined : select}
          />
        ))}
      </svg>
    </div>
  );
}

/**
 * The part of the graph `scroller` shows, in SVG units (which are CSS pixels), updated once a
 * frame as it scrolls or changes size; undefined when not `tracking`.
 */
function useScrolledView(
  scroller: { current: HTMLDivElement | null },
  tracking: boolean,
): Viewport | undefined {
  const [view, setView] = useState<Viewport | undefined>(undefined);
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!tracking || el === null) return;
    let frame: number | undefined;
    const measure = (): void => {
      frame = undefined;
      setView({ x: el.scrollLeft, y: el.scrollTop, width: el.clientWidth, height: el.clientHeight });
    };
    const later = (): void => {
      frame ??= requestAnimationFrame(measure);
    };
    measure();
    el.addEventListener("scroll", later, { passive: true });
    const resized = new ResizeObserver(later);
    resized.observe(el);
    return () => {
      el.removeEventListener("scroll", later);
      resized.disconnect();
      if (frame !== undefined) cancelAnimationFrame(frame);
    };
  }, [scroller, tracking]);
  return tracking ? view : undefined;
}

/** The arrows; rendered again only for a new layout. */
class DagEdges extends Component<{ edges: DagLayout["edges"] }> {
  override shouldComponentUpdate(next: { edges: DagLayout["edges"] }): boolean {
    return next.edges !== this.props.edges;
  }

  override render() {
    return (
      <g class="dag-edges">
        {this.props.edges.map((e) => (
          <path key={`${e.from}->${e.to}`} class="dag-edge" d={e.path} marker-end="url(#arrow)" />
        ))}
      </g>
    );
  }
}

interface DagNodeProps {
  node: DagNode;
  state: StepState;
  note: string | undefined;
  /** A run's graph (the state shown) rather than a definition's (the type shown). */
  showState: boolean;
  selected: boolean;
  select: ((stepId: string) => void) | undefined;
}

/** One box; rendered again only when one of its props changes. */
class DagNodeView extends Component<DagNodeProps> {
  override shouldComponentUpdate(next: DagNodeProps): boolean {
    const p = this.props;
    return (
      next.node !== p.node ||
      next.state !== p.state ||
      next.note !== p.note ||
      next.showState !== p.showState ||
      next.selected !== p.selected ||
      next.select !== p.select
    );
  }

  override render() {
    const { node: n, state, note, showState, selected, select } = this.props;
    const shown = note === undefined ? stateLabel(state) : `${stateLabel(state)} ${note}`;
    const activate = (): void => select?.(n.id);
    return (
      <g
        class={`dag-node state-${state}${selected ? " selected" : ""}`}
        data-step={n.id}
        data-state={state}
        transform={`translate(${n.x} ${n.y})`}
        {...(select !== undefined
          ? {
              role: "button",
              tabindex: 0,
              "aria-pressed": selected,
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
        aria-label={showState ? `${n.id} ${shown}, step type ${n.type}` : `${n.id} ${n.type}`}
      >
        <rect width={NODE_WIDTH} height={NODE_HEIGHT} rx="8" />
        <text x="12" y="21" class="dag-node-id">
          {truncate(n.id, 20)}
          {/* A space, so that the box's text reads "id state" (not "idstate") to assistive tools. */}{" "}
        </text>
        <text x="12" y="40" class="dag-node-state">
          {showState ? truncate(shown, 22) : truncate(n.type, 22)}
        </text>
      </g>
    );
  }
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
