/**
 * Object keys: what a key may contain (checked the same way by every back end, so a key accepted
 * by the filesystem store is accepted by S3 and the other way round) and the browsable layout of
 * what tasks store:
 *
 * ```text
 * runs/{run_id}/{step_id}/attempt-{n}/logs.jsonl        the attempt's log, once it ended (JSON Lines)
 * runs/{run_id}/{step_id}/attempt-{n}/logs/00001.jsonl  log chunks written while it runs (see ArtifactLogSink)
 * runs/{run_id}/{step_id}/attempt-{n}/output.json       an offloaded output (claim check)
 * runs/{run_id}/{step_id}/attempt-{n}/{name}            files saved by the handler (ctx.artifacts.put)
 * runs/{run_id}/{step_id}.compensation/attempt-{n}/...  the same for the step's compensation
 * runs/{run_id}/{step_id}/element-{i}/attempt-{n}/...   the same for element i (0-based) of a map step
 * ```
 *
 * Step ids cannot contain ".", so the compensation folder never collides with a step's. The
 * elements of a map step are tasks of their own that share the step id (the scheduler stores them
 * as `{step_id}[{i}]`): each has its own `element-{i}/` folder inside the step's, beside no
 * `attempt-{n}/` one (a map step's own task runs nothing), so no element's folder is another's,
 * a step's, or a prefix of either (`element-1/` ends where `element-10/` goes on), whatever
 * characters a step id holds.
 */
import { ArtifactError } from "./errors.js";

/** Step or compensation, as stored by the scheduler. */
export type TaskKindName = "STEP" | "COMPENSATION";

/** Suffix of the folder of a step's compensation tasks. */
export const COMPENSATION_SUFFIX = ".compensation";
/** Name of an attempt's complete log. */
export const LOGS_OBJECT = "logs.jsonl";
/** Folder (within an attempt) of the log chunks written while the attempt runs. */
export const LOG_CHUNKS_FOLDER = "logs/";
/** Name of an offloaded output. */
export const OUTPUT_OBJECT = "output.json";
/** Beginning of the name of a map element's folder within its step's: `element-{i}`. */
export const ELEMENT_FOLDER = "element-";

/** Longest key, in UTF-8 bytes (S3's limit). */
export const MAX_KEY_BYTES = 1024;
/** Longest key segment, in UTF-8 bytes (the usual filesystem name limit). */
const MAX_SEGMENT_BYTES = 255;
// Control characters (NUL included) and backslashes are refused: they break paths, logs and URLs.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f\\]/;

function invalid(what: string, value: string, why: string): ArtifactError {
  return new ArtifactError("INVALID_KEY", `invalid ${what} ${JSON.stringify(value)}: ${why}`, value);
}

function checkSegment(what: string, value: string, segment: string): void {
  if (segment === "") throw invalid(what, value, "empty path segment");
  if (segment === "." || segment === "..") throw invalid(what, value, `"${segment}" segment`);
  if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES)
    throw invalid(what, value, `a segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
}

/**
 * Checks an object key and returns it. A key is relative ("a/b/c", no leading or trailing "/"),
 * at most 1024 bytes, without NUL or other control characters or "\", without empty, "." or ".."
 * segments, and does not begin with "." (names under a leading "." are the stores' own).
 * Throws {@link ArtifactError} `INVALID_KEY`.
 */
export function checkKey(key: string, what = "key"): string {
  if (typeof key !== "string" || key === "") throw invalid(what, String(key), "empty");
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw invalid(what, key, `longer than ${MAX_KEY_BYTES} bytes`);
  if (FORBIDDEN.test(key)) throw invalid(what, key, "control character, NUL or backslash");
  if (key.startsWith("/")) throw invalid(what, key, "absolute");
  if (key.endsWith("/")) throw invalid(what, key, "ends with /");
  if (key.startsWith(".")) throw invalid(what, key, 'begins with "."');
  for (const segment of key.split("/")) checkSegment(what, key, segment);
  return key;
}

/**
 * Checks a listing prefix and returns it: "" (everything) or the beginning of a key, e.g.
 * "runs/r1/" or "runs/r1/st". Throws {@link ArtifactError} `INVALID_KEY`.
 */
export function checkPrefix(prefix: string): string {
  if (prefix === "") return prefix;
  if (typeof prefix !== "string") throw invalid("prefix", String(prefix), "not a string");
  if (Buffer.byteLength(prefix) > MAX_KEY_BYTES)
    throw invalid("prefix", prefix, `longer than ${MAX_KEY_BYTES} bytes`);
  if (FORBIDDEN.test(prefix)) throw invalid("prefix", prefix, "control character, NUL or backslash");
  if (prefix.startsWith("/")) throw invalid("prefix", prefix, "absolute");
  if (prefix.startsWith(".")) throw invalid("prefix", prefix, 'begins with "."');
  const segments = prefix.split("/");
  const last = segments.pop() ?? "";
  for (const segment of segments) checkSegment("prefix", prefix, segment);
  if (last === "." || last === "..") throw invalid("prefix", prefix, `"${last}" segment`);
  return prefix;
}

function idSegment(what: string, id: string): string {
  if (typeof id !== "string" || id === "" || id.includes("/"))
    throw invalid(what, String(id), "not one segment");
  checkKey(id, what);
  return id;
}

function attemptNumber(attempt: number): number {
  if (!Number.isSafeInteger(attempt) || attempt < 1)
    throw new ArtifactError("INVALID_KEY", `invalid attempt number ${String(attempt)}: must be 1 or more`);
  return attempt;
}

function elementNumber(index: number): number {
  if (!Number.isSafeInteger(index) || index < 0)
    throw new ArtifactError("INVALID_KEY", `invalid map element index ${String(index)}: must be 0 or more`);
  return index;
}

/** The folder name of a step's tasks: the step id, or `{step_id}.compensation`. */
export function stepSegment(stepId: string, kind: TaskKindName = "STEP"): string {
  idSegment("step id", stepId);
  return kind === "COMPENSATION" ? `${stepId}${COMPENSATION_SUFFIX}` : stepId;
}

/** `runs/{run_id}/`: everything a run stored. */
export function runPrefix(runId: string): string {
  return `runs/${idSegment("run id", runId)}/`;
}

/**
 * `runs/{run_id}/{step}/`: every attempt of one step (or, with kind COMPENSATION, of its
 * compensation), those of its map elements included.
 */
export function stepPrefix(runId: string, stepId: string, kind: TaskKindName = "STEP"): string {
  return `${runPrefix(runId)}${stepSegment(stepId, kind)}/`;
}

/**
 * The folder of one task's attempts: {@link stepPrefix} for a step (or its compensation), and
 * `runs/{run_id}/{step}/element-{i}/` for element `elementIndex` (0-based) of a map step.
 */
export function taskPrefix(
  runId: string,
  stepId: string,
  kind: TaskKindName = "STEP",
  elementIndex?: number,
): string {
  const step = stepPrefix(runId, stepId, kind);
  return elementIndex === undefined ? step : `${step}${ELEMENT_FOLDER}${elementNumber(elementIndex)}/`;
}

/**
 * `runs/{run_id}/{step}/attempt-{n}/`: what one attempt stored; with `elementIndex`, an attempt of
 * that element of a map step, `runs/{run_id}/{step}/element-{i}/attempt-{n}/`.
 */
export function attemptPrefix(
  runId: string,
  stepId: string,
  attempt: number,
  kind: TaskKindName = "STEP",
  elementIndex?: number,
): string {
  return `${taskPrefix(runId, stepId, kind, elementIndex)}attempt-${attemptNumber(attempt)}/`;
}

/** Key of the `n`-th log chunk (1-based) under an attempt prefix: `…/logs/00001.jsonl`. */
export function logChunkKey(prefix: string, seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 1)
    throw new ArtifactError("INVALID_KEY", `invalid log chunk number ${String(seq)}`);
  return `${prefix}${LOG_CHUNKS_FOLDER}${String(seq).padStart(5, "0")}.jsonl`;
}

/** The number of a log chunk key (see {@link logChunkKey}), or undefined for any other key. */
export function logChunkSeq(key: string): number | undefined {
  const m = /\/logs\/(\d{5,})\.jsonl$/.exec(key);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

/** Names of an attempt folder that belong to the executor, not to handlers. */
const RESERVED_NAMES = [LOGS_OBJECT, OUTPUT_OBJECT];

/**
 * Checks the name of a file a handler saves (may contain "/" for sub-folders) and returns it.
 * `logs.jsonl`, `logs/…` and `output.json` are reserved. Throws {@link ArtifactError} `INVALID_KEY`.
 */
export function checkArtifactName(name: string): string {
  checkKey(name, "artifact name");
  if (RESERVED_NAMES.includes(name) || name.startsWith(LOG_CHUNKS_FOLDER))
    throw invalid("artifact name", name, "reserved for the executor (logs.jsonl, logs/, output.json)");
  return name;
}

/** What a key of the task layout says. */
export interface ParsedArtifactKey {
  readonly runId: string;
  readonly stepId: string;
  readonly kind: TaskKindName;
  /** The element (0-based) of a map step the key is of; absent for any other task. */
  readonly elementIndex?: number;
  readonly attempt: number;
  /** The rest of the key after the attempt folder, e.g. "logs.jsonl" or "reports/a.csv". */
  readonly name: string;
}

const LAYOUT = /^runs\/([^/]+)\/([^/]+)\/(?:element-(0|[1-9]\d{0,14})\/)?attempt-([1-9]\d*)\/(.+)$/;

/** Parses a key of the task layout; undefined for keys outside it. */
export function parseArtifactKey(key: string): ParsedArtifactKey | undefined {
  const m = LAYOUT.exec(key);
  if (m === null) return undefined;
  const [, runId, segment, element, attempt, name] = m as unknown as [
    string,
    string,
    string,
    string | undefined,
    string,
    string,
  ];
  const compensation = segment.endsWith(COMPENSATION_SUFFIX);
  return {
    runId,
    stepId: compensation ? segment.slice(0, -COMPENSATION_SUFFIX.length) : segment,
    kind: compensation ? "COMPENSATION" : "STEP",
    ...(element === undefined ? {} : { elementIndex: Number(element) }),
    attempt: Number(attempt),
    name,
  };
}

/** The display name of a key: its path within the attempt folder, or its last segment. */
export function artifactName(key: string): string {
  return parseArtifactKey(key)?.name ?? key.slice(key.lastIndexOf("/") + 1);
}
