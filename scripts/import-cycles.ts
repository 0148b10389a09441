/**
 * Import cycles between folders. Every folder of the workspace's TypeScript sources is a node, and
 * a relative import (`import`/`export ... from "./x.js"`, `import("./x.js")`) in a file of folder A
 * of a file in another folder B is an edge A -> B; a folder and its sub-folder are two folders.
 * A cycle means two folders cannot be read, tested or moved one without the other. Test files
 * (`*.test.ts`) are left out: nothing imports them, and they may reach into any folder.
 * Imports of packages by name are not followed: npm workspaces cannot depend on each other in a
 * circle anyway.
 */
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

/** Relative module specifiers of static imports and re-exports, side-effect imports and `import()`. */
const IMPORT_PATTERN =
  /\bfrom\s*["'](\.{1,2}\/[^"']+)["']|\bimport\s*["'](\.{1,2}\/[^"']+)["']|\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

/** Folders never scanned: dependencies and generated code. */
const SKIPPED_FOLDERS = new Set(["node_modules", "gen", "dist"]);

/** The folders of the workspace whose imports are checked, relative to the repository root. */
export const CHECKED_ROOTS = [
  "common/src",
  "services/scheduler/src",
  "services/scheduler/test",
  "services/executor/src",
  "services/gateway/src",
  "services/gateway/test",
  "cli/src",
  "cli/test",
  "client/src",
  "client/test",
  "bench",
];

/** Folder -> folder it imports -> the imports that make the edge ("a/x.ts imports b/y.ts"). */
export type FolderGraph = Map<string, Map<string, string[]>>;

/** The `.ts` files under `dir` (skipping dependencies, generated code and tests), relative to `root`. */
function sourceFiles(root: string, dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(join(root, dir), { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory())
      return SKIPPED_FOLDERS.has(e.name) || e.name.startsWith(".") ? [] : sourceFiles(root, path);
    return e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [path] : [];
  });
}

/** Relative specifiers imported by `source`. */
export function relativeImports(source: string): string[] {
  return [...source.matchAll(IMPORT_PATTERN)].map((m) => (m[1] ?? m[2] ?? m[3]) as string);
}

/** The folder graph of the sources under `roots` (relative to `root`), paths with "/". */
export function folderGraph(root: string, roots: readonly string[]): FolderGraph {
  const graph: FolderGraph = new Map();
  const posix = (p: string): string => p.split(sep).join("/");
  for (const file of roots.flatMap((r) => sourceFiles(root, r))) {
    const from = dirname(file);
    for (const spec of relativeImports(readFileSync(join(root, file), "utf8"))) {
      const target = relative(root, resolve(root, from, spec)).replace(/\.js$/, ".ts");
      const to = dirname(target);
      if (to === from) continue;
      const edges = graph.get(posix(from)) ?? new Map<string, string[]>();
      graph.set(posix(from), edges);
      const why = edges.get(posix(to)) ?? [];
      edges.set(posix(to), why);
      why.push(`${posix(file)} imports ${posix(target)}`);
    }
  }
  return graph;
}

/** The shortest path of edges from `start` back to `start`, as folders (first = last). */
function shortestCycle(graph: FolderGraph, start: string, within: ReadonlySet<string>): string[] {
  const previous = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    const node = queue[i] as string;
    for (const next of graph.get(node)?.keys() ?? []) {
      if (!within.has(next)) continue;
      if (next === start) {
        const path = [start];
        for (let at = node; at !== start; at = previous.get(at) as string) path.splice(1, 0, at);
        return [...path, start];
      }
      if (previous.has(next)) continue;
      previous.set(next, node);
      queue.push(next);
    }
  }
  return [];
}

/** The strongly connected groups of more than one folder (Tarjan), each sorted. */
function stronglyConnected(graph: FolderGraph): string[][] {
  const nodes = new Set<string>([...graph.keys(), ...[...graph.values()].flatMap((e) => [...e.keys()])]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: string[][] = [];
  let counter = 0;
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        group.push(w);
      } while (w !== v);
      if (group.length > 1) groups.push(group.sort());
    }
  };
  for (const v of [...nodes].sort()) if (!index.has(v)) visit(v);
  return groups.sort((a, b) => (a[0] as string).localeCompare(b[0] as string));
}

/** One cycle between folders: the folders in import order (first = last), and one import per edge. */
export interface FolderCycle {
  folders: string[];
  imports: string[];
}

/** One cycle per group of folders that import each other, shortest first through its first folder. */
export function folderCycles(graph: FolderGraph): FolderCycle[] {
  return stronglyConnected(graph).map((group) => {
    const folders = shortestCycle(graph, group[0] as string, new Set(group));
    const imports = folders.slice(1).map((to, i) => graph.get(folders[i] as string)?.get(to)?.[0] ?? "");
    return { folders, imports };
  });
}

/** A cycle as text: `a -> b -> a` and the import behind each arrow. */
export function describeCycle(cycle: FolderCycle): string {
  return [cycle.folders.join(" -> "), ...cycle.imports.map((i) => `  ${i}`)].join("\n");
}
