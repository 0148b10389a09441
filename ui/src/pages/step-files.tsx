/**
 * A task's log (GetTaskLogs, followed while the task runs) and its artifacts (ListArtifacts,
 * downloaded through GetArtifact's chunks, since a plain link could not carry the token).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type ArtifactRef, type LogLine, TaskKind, type TaskRun, TaskStatus } from "@nexusflow/gen";
import { Code, ConnectError } from "@connectrpc/connect";
import { useEffect, useState } from "preact/hooks";
import { type ArtifactsApi, describeError, isAborted } from "../api";
import { useSession } from "../session";

/** Task statuses after which no more log lines come. */
const ENDED: ReadonlySet<TaskStatus> = new Set([
  TaskStatus.SUCCEEDED,
  TaskStatus.FAILED,
  TaskStatus.SKIPPED,
  TaskStatus.CANCELLED,
]);

/** The step id the artifact API takes for a task: `{step}.compensation` for a compensation. */
function apiStepId(task: TaskRun): string {
  const step = task.stepId.endsWith(".compensation")
    ? task.stepId.slice(0, -".compensation".length)
    : task.stepId;
  return task.kind === TaskKind.COMPENSATION ? `${step}.compensation` : step;
}

/** The log of a task's attempts, streamed; followed while the task has not ended. */
export function TaskLog({ runId, task }: { runId: string; task: TaskRun }) {
  const { artifacts } = useSession();
  const [lines, setLines] = useState<LogLine[]>([]);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [done, setDone] = useState(false);
  const stepId = apiStepId(task);
  const follow = !ENDED.has(task.status);
  const attempts = task.attempts.length;
  useEffect(() => {
    if (attempts === 0) return;
    const controller = new AbortController();
    setLines([]);
    setDone(false);
    setProblem(undefined);
    const read = async (): Promise<void> => {
      try {
        for await (const res of artifacts.getTaskLogs(
          { runId, stepId, attempt: 0, follow },
          { signal: controller.signal },
        ))
          setLines((prev) => [...prev, ...res.lines]);
        setDone(true);
      } catch (e) {
        if (isAborted(e)) return;
        setProblem(describeError(e));
        setDone(true);
      }
    };
    void read();
    return () => controller.abort();
    // A task that ends (follow turns false) is read once more, whole: no line is missed.
  }, [artifacts, runId, stepId, follow, attempts]);
  if (attempts === 0) return null;
  return (
    <figure class="log">
      <figcaption>Log{follow && !done ? " (following)" : ""}</figcaption>
      {problem !== undefined && <p class="muted">{problem}</p>}
      <pre role="log" aria-live="polite" tabIndex={0} data-testid="task-log">
        {lines.length === 0
          ? done
            ? "(no log lines)"
            : "…"
          : lines
              .map(
                (l) =>
                  `${l.time === undefined ? "" : logTime(timestampDate(l.time))} #${l.attempt} ${l.level || l.stream} ${l.text}`,
              )
              .join("\n")}
      </pre>
    </figure>
  );
}

/** The files a task stored, each downloadable. */
export function TaskArtifacts({ runId, task }: { runId: string; task: TaskRun }) {
  const { artifacts } = useSession();
  const [files, setFiles] = useState<ArtifactRef[] | undefined>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const stepId = apiStepId(task);
  const ended = ENDED.has(task.status);
  useEffect(() => {
    const controller = new AbortController();
    artifacts.listArtifacts({ runId, stepId }, { signal: controller.signal }).then(
      (res) => setFiles(res.artifacts.filter((a) => !a.key.endsWith("/logs.jsonl"))),
      (e: unknown) => {
        if (!isAborted(e)) setProblem(describeError(e));
      },
    );
    return () => controller.abort();
  }, [artifacts, runId, stepId, ended]);
  const download = async (ref: ArtifactRef): Promise<void> => {
    try {
      await downloadArtifact(artifacts, ref);
    } catch (e) {
      setProblem(describeError(e));
    }
  };
  if (problem === undefined && (files === undefined || files.length === 0)) return null;
  return (
    <div class="artifacts">
      <h4>Artifacts</h4>
      {problem !== undefined && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
      <ul>
        {(files ?? []).map((f) => (
          <li key={f.key}>
            <button type="button" class="link" onClick={() => void download(f)}>
              {f.name || f.key}
            </button>{" "}
            <span class="muted">
              {f.contentType || "binary"}, {formatBytes(Number(f.size))}
            </span>
          </li>
        ))}
      </ul>
    </div>
  );
}

/**
 * Saves an artifact (or an offloaded output, stored the same way) through GetArtifact: a presigned
 * URL when the store gives one, else the streamed chunks as a file.
 */
export async function downloadArtifact(artifacts: ArtifactsApi, ref: ArtifactRef): Promise<void> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for await (const res of artifacts.getArtifact({ key: ref.key, presign: true })) {
    if (res.url !== "") {
      // Only a web address is opened: a `javascript:` or `data:` one would run in this app's origin.
      const url = new URL(res.url, window.location.href);
      if (url.protocol !== "https:" && url.protocol !== "http:")
        throw new ConnectError(
          `GetArtifact gave a ${url.protocol} address for ${ref.key}, not http(s): not opened`,
          Code.Internal,
        );
      window.open(url.href, "_blank", "noopener");
      return;
    }
    if (res.chunk.length > 0) chunks.push(new Uint8Array(res.chunk));
  }
  const url = URL.createObjectURL(new Blob(chunks, { type: ref.contentType || "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = ref.name || ref.key.split("/").at(-1) || "artifact";
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** A log line's local time of day, to the millisecond. */
function logTime(d: Date): string {
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}
