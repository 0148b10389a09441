/** Workflows: every registered definition and version, its DAG and JSON, and a form to start a run. */
import { fromJson, toJson } from "@bufbuild/protobuf";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { type WorkflowDefinition, WorkflowSpecSchema } from "@nexusflow/gen";
import { useEffect, useMemo, useState } from "preact/hooks";
import { describeError, isAborted, isUnauthenticated } from "../api";
import { hasScope } from "../auth";
import { canWriteRuns, useSession } from "../session";
import { Dag } from "../Dag";
import { graphStepsOf, layoutDag } from "../dag";
import { formatTime } from "../format";
import { linkHandler, navigate, routePath } from "../router";
import { Json } from "./run";

const PAGE_SIZE = 100;

/** The workflows page; `selected` is a workflow name from the URL. */
export function WorkflowsPage({ selected }: { selected: string | undefined }) {
  const { api, signOut, token } = useSession();
  const allowed = token === undefined || hasScope(token, "workflows:read");
  const [definitions, setDefinitions] = useState<WorkflowDefinition[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [version, setVersion] = useState<number | undefined>(undefined);

  useEffect(() => {
    // A call the token's scopes say will be refused is not made (the browser would log the 403).
    if (!allowed) {
      setError("Listing workflows needs a token with the workflows:read scope.");
      return;
    }
    const controller = new AbortController();
    const load = async (): Promise<void> => {
      const all: WorkflowDefinition[] = [];
      // Tokens already asked with: a server whose token does not advance must not loop the page.
      const asked = new Set<string>();
      let pageToken = "";
      do {
        asked.add(pageToken);
        const res = await api.listWorkflows(
          { pageSize: PAGE_SIZE, pageToken },
          { signal: controller.signal },
        );
        all.push(...res.workflows);
        pageToken = res.nextPageToken;
        if (asked.has(pageToken) && pageToken !== "") {
          setError(
            `The list stops at ${all.length} definitions: ListWorkflows gave page token "${pageToken.slice(0, 40)}" again.`,
          );
          break;
        }
      } while (pageToken !== "");
      setDefinitions(all);
    };
    load().catch((e: unknown) => {
      if (isAborted(e)) return;
      if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
      else setError(describeError(e));
    });
    return () => controller.abort();
  }, [api, signOut, allowed]);

  // Names in order, each with its versions, newest first.
  const byName = useMemo(() => {
    const map = new Map<string, WorkflowDefinition[]>();
    for (const d of definitions ?? []) map.set(d.name, [...(map.get(d.name) ?? []), d]);
    for (const list of map.values()) list.sort((a, b) => b.version - a.version);
    return new Map([...map.entries()].sort(([a], [b]) => a.localeCompare(b)));
  }, [definitions]);

  useEffect(() => setVersion(undefined), [selected]);
  const versions = selected === undefined ? undefined : byName.get(selected);
  const definition = versions?.find((d) => d.version === version) ?? versions?.[0];

  return (
    <section aria-labelledby="workflows-title" class="workflows">
      <h1 id="workflows-title">Workflows</h1>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {definitions === undefined && error === undefined && <p aria-busy="true">Loading…</p>}
      <div class="split">
        <nav aria-label="Workflow definitions" class="workflow-list">
          <ul>
            {[...byName.entries()].map(([name, list]) => {
              const route = { page: "workflows", name } as const;
              return (
                <li key={name}>
                  <a
                    href={routePath(route)}
                    onClick={linkHandler(route)}
                    aria-current={name === selected ? "page" : undefined}
                  >
                    {name}
                  </a>{" "}
                  <span class="muted">v{list[0]?.version}</span>
                </li>
              );
            })}
          </ul>
          {definitions !== undefined && byName.size === 0 && <p>No workflows registered yet.</p>}
        </nav>
        <div class="workflow-detail">
          {selected !== undefined && definitions !== undefined && definition === undefined && (
            <p class="error" role="alert">
              No workflow named {selected}.
            </p>
          )}
          {selected === undefined && definitions !== undefined && byName.size > 0 && (
            <p>Choose a workflow.</p>
          )}
          {definition !== undefined && versions !== undefined && (
            <WorkflowDetail
              key={`${definition.name}@${definition.version}`}
              definition={definition}
              versions={versions}
              onVersion={setVersion}
            />
          )}
        </div>
      </div>
    </section>
  );
}

function WorkflowDetail({
  definition,
  versions,
  onVersion,
}: {
  definition: WorkflowDefinition;
  versions: WorkflowDefinition[];
  onVersion: (version: number) => void;
}) {
  const session = useSession();
  const spec = definition.spec;
  const layout = useMemo(() => layoutDag(graphStepsOf(spec?.steps ?? [])), [spec]);
  const specJson = useMemo(() => (spec === undefined ? undefined : toJson(WorkflowSpecSchema, spec)), [spec]);
  return (
    <article aria-labelledby="workflow-title">
      <h2 id="workflow-title">
        {definition.name} <span class="muted">v{definition.version}</span>
      </h2>
      {spec?.description !== undefined && spec.description !== "" && <p>{spec.description}</p>}
      <p class="muted">
        Registered {formatTime(definition.createTime)}; content hash{" "}
        <span class="mono">{definition.contentHash}</span>
      </p>
      {versions.length > 1 && (
        <label>
          Version{" "}
          <select
            value={String(definition.version)}
            onChange={(e) => onVersion(Number(e.currentTarget.value))}
          >
            {versions.map((v) => (
              <option key={v.version} value={String(v.version)}>
                v{v.version}
              </option>
            ))}
          </select>
        </label>
      )}
      <h3>Graph</h3>
      <Dag layout={layout} label={`Steps of workflow ${definition.name} v${definition.version}`} />
      {canWriteRuns(session) ? (
        <StartRunForm definition={definition} />
      ) : (
        <p class="muted">Starting a run needs a token with the runs:write scope.</p>
      )}
      <Json title="Definition" value={specJson} />
    </article>
  );
}

/** A starting input from the definition's input schema: its properties with empty values. */
function sampleInput(schema: JsonObject | undefined): JsonObject {
  const properties = schema?.["properties"];
  if (typeof properties !== "object" || properties === null || Array.isArray(properties)) return {};
  const sample: JsonObject = {};
  for (const [name, prop] of Object.entries(properties)) {
    const type = typeof prop === "object" && prop !== null && !Array.isArray(prop) ? prop["type"] : undefined;
    sample[name] =
      type === "number" || type === "integer"
        ? 0
        : type === "boolean"
          ? false
          : type === "object"
            ? {}
            : type === "array"
              ? []
              : "";
  }
  return sample;
}

function StartRunForm({ definition }: { definition: WorkflowDefinition }) {
  const { api } = useSession();
  const [input, setInput] = useState(() => JSON.stringify(sampleInput(definition.spec?.input), null, 2));
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const start = async (e: Event): Promise<void> => {
    e.preventDefault();
    let value: JsonValue;
    try {
      value = JSON.parse(input) as JsonValue;
    } catch (err) {
      setProblem(`The input is not JSON: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    setBusy(true);
    try {
      const res = await api.startRun({
        workflowName: definition.name,
        workflowVersion: definition.version,
        input: fromJson(ValueSchema, value),
      });
      setProblem(undefined);
      if (res.run !== undefined) navigate({ page: "run", runId: res.run.id });
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="start-run" onSubmit={(e) => void start(e)} aria-labelledby="start-title">
      <h3 id="start-title">Start a run</h3>
      <label for="run-input">Input (JSON)</label>
      <textarea
        id="run-input"
        name="input"
        rows={8}
        spellcheck={false}
        value={input}
        onInput={(e) => setInput(e.currentTarget.value)}
      />
      {problem !== undefined && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
      <button type="submit" disabled={busy}>
        Start run
      </button>
    </form>
  );
}
