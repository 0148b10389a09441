/**
 * `nexusflow artifacts list|get`: what the tasks of a run stored (ListArtifacts), and one of those
 * files (GetArtifact). The gateway answers GetArtifact with the artifact's metadata and then
 * either a presigned URL (S3 store), which is downloaded here with fetch, or the content in
 * chunks (filesystem store). Either way the bytes go to standard output, binary safe, or with
 * `-o FILE` to a temporary file beside FILE that is renamed into place once complete and checked
 * (size, SHA-256): an interrupted or failed download leaves no partial file, and an existing FILE
 * is only replaced with `--force`.
 */
import { createHash, randomBytes } from "node:crypto";
import { unlinkSync } from "node:fs";
import { type FileHandle, link, open, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Writable } from "node:stream";
import { toJson } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@nexusflow/client";
import {
  COMPENSATION_SUFFIX,
  type ParsedArtifactKey,
  type TaskKindName,
  attemptPrefix,
  isArtifactError,
  parseArtifactKey,
} from "@nexusflow/common/artifacts";
import { type ArtifactRef, type ArtifactService, ListArtifactsResponseSchema } from "@nexusflow/gen";
import { type CommandIo, UsageError, parse } from "./command.js";
import { withGateway } from "./gateway-client.js";
import { formatTable } from "./table.js";

/** What `artifacts` needs beyond the other operator commands. */
export interface ArtifactsIo extends CommandIo {
  /** Standard output as a byte stream: `get` writes the content there unless `-o FILE`. */
  binaryStdout: Writable;
}

/**
 * A task as the API names it (ListArtifacts, GetTaskLogs) and as `artifacts list` shows it: a step
 * id, `{step}.compensation` for its compensation, or `{step}[{i}]` for element i (0-based) of a
 * map step, whose files are in a folder of their own (`runs/{run}/{step}/element-{i}/`).
 */
export interface NamedTask {
  readonly stepId: string;
  readonly kind: TaskKindName;
  /** The element of a map step; absent for any other task. */
  readonly elementIndex?: number | undefined;
}

/** An element of a map step as the API names it, the index in canonical form. */
const ELEMENT_NAME = /^(.+)\[(0|[1-9]\d*)\]$/;

/** The task a step argument names (see {@link NamedTask}). */
export function namedTask(step: string): NamedTask {
  if (step.endsWith(COMPENSATION_SUFFIX))
    return { stepId: step.slice(0, -COMPENSATION_SUFFIX.length), kind: "COMPENSATION" };
  const element = ELEMENT_NAME.exec(step);
  return element === null
    ? { stepId: step, kind: "STEP" }
    : { stepId: element[1] as string, kind: "STEP", elementIndex: Number(element[2]) };
}

/** How the API names a task: `build`, `build.compensation`, `each[3]`. */
export function taskName(task: NamedTask): string {
  const element = task.elementIndex === undefined ? "" : `[${task.elementIndex}]`;
  return `${task.stepId}${element}${task.kind === "COMPENSATION" ? COMPENSATION_SUFFIX : ""}`;
}

/**
 * Where one stored object sits in the task layout of @nexusflow/common/artifacts:
 * `runs/{run}/{step}/attempt-{n}/{name}`, or `runs/{run}/{step}/element-{i}/attempt-{n}/{name}`.
 */
export interface ArtifactPlace {
  /** The task, as the API names it (see {@link NamedTask}): `build`, `build.compensation`, `each[3]`. */
  readonly step: string;
  readonly attempt: number;
  /** The path within the attempt folder. */
  readonly name: string;
}

/** Parses a key of the task layout; undefined for any other key. */
export function artifactPlace(key: string): ArtifactPlace | undefined {
  const parsed = parseArtifactKey(key);
  return parsed === undefined
    ? undefined
    : { step: taskName(parsed), attempt: parsed.attempt, name: parsed.name };
}

/**
 * The key of `name` saved by attempt `attempt` of `step` (as the API names a task: a step id,
 * `{step}.compensation` or `{step}[{i}]`). Throws the layout's ArtifactError (INVALID_KEY) for a
 * run or step id that cannot be part of a key.
 */
export function artifactKey(runId: string, step: string, attempt: number, name: string): string {
  const task = namedTask(step);
  return `${attemptPrefix(runId, task.stepId, attempt, task.kind, task.elementIndex)}${name}`;
}

/** Order of keys of the task layout: step, its compensation after it, element, attempt, name. */
function compareParsed(x: ParsedArtifactKey, y: ParsedArtifactKey): number {
  if (x.stepId !== y.stepId) return x.stepId < y.stepId ? -1 : 1;
  if (x.kind !== y.kind) return x.kind === "STEP" ? -1 : 1;
  if (x.elementIndex !== y.elementIndex) return (x.elementIndex ?? -1) - (y.elementIndex ?? -1);
  if (x.attempt !== y.attempt) return x.attempt - y.attempt;
  return x.name < y.name ? -1 : x.name > y.name ? 1 : 0;
}

/** "512 B", "1.5 KiB", "20.0 MiB". */
export function formatSize(bytes: bigint | number): string {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Rows of `artifacts list`, ordered by step, element (as a number), attempt (as a number) and name. */
export function artifactRows(refs: readonly ArtifactRef[]): string[][] {
  return refs
    .map((ref) => ({ ref, parsed: parseArtifactKey(ref.key) }))
    .sort((a, b) => {
      const [x, y] = [a.parsed, b.parsed];
      if (x === undefined || y === undefined) return a.ref.key < b.ref.key ? -1 : 1;
      return compareParsed(x, y);
    })
    .map(({ ref, parsed }) => [
      parsed === undefined ? "-" : taskName(parsed),
      parsed === undefined ? "-" : String(parsed.attempt),
      parsed?.name ?? ref.key,
      formatSize(ref.size),
      ref.contentType || "-",
    ]);
}

// ------------------------------------------------------------------------ where the bytes go

/** Where downloaded bytes go: written in order, then committed once complete, or aborted. */
export interface ByteSink {
  write(chunk: Uint8Array): Promise<void>;
  /** The download is complete and checked. */
  commit(): Promise<void>;
  /** The download failed or was interrupted: undo what can be undone. Never throws. */
  abort(): Promise<void>;
}

/** A file exists where `-o` points and `--force` was not given (or it is a directory). */
export class TargetExistsError extends Error {
  override name = "TargetExistsError";
}

function errno(e: unknown): string | undefined {
  return typeof e === "object" && e !== null && "code" in e ? String(e.code) : undefined;
}

async function writeAll(file: FileHandle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

/**
 * Writes to a temporary file beside `target` (`.{name}.{random}.part`) and, on commit, moves it
 * to `target`: replacing it only when `replace`, else failing with {@link TargetExistsError}
 * should it have appeared meanwhile (a hard link cannot overwrite). The temporary file is removed
 * on abort, and when the process exits before the commit (a second Ctrl-C exits at once).
 */
export async function openFileSink(target: string, replace: boolean): Promise<ByteSink> {
  const existing = await stat(target).catch((e: unknown) => {
    if (errno(e) === "ENOENT") return undefined;
    throw e;
  });
  if (existing?.isDirectory() === true) throw new TargetExistsError(`${target} is a directory`);
  if (existing !== undefined && !replace)
    throw new TargetExistsError(`${target} exists (--force replaces it)`);
  const temp = join(dirname(target), `.${basename(target)}.${randomBytes(4).toString("hex")}.part`);
  const file = await open(temp, "wx", 0o666);
  const removeOnExit = (): void => {
    try {
      unlinkSync(temp);
    } catch {
      // Already gone.
    }
  };
  process.on("exit", removeOnExit);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await file.close();
  };
  return {
    write: (chunk) => writeAll(file, chunk),
    async commit() {
      try {
        await file.sync();
        await close();
        if (replace) await rename(temp, target);
        else {
          try {
            await link(temp, target);
          } catch (e) {
            if (errno(e) === "EEXIST") throw new TargetExistsError(`${target} exists (--force replaces it)`);
            // A file system without hard links: a rename, which would replace a file created
            // since the check above.
            if (
              await stat(target).then(
                () => true,
                () => false,
              )
            )
              throw new TargetExistsError(`${target} exists (--force replaces it)`);
            await rename(temp, target);
          }
          await unlink(temp).catch(() => undefined);
        }
      } catch (e) {
        await unlink(temp).catch(() => undefined);
        throw e;
      } finally {
        process.off("exit", removeOnExit);
      }
    },
    async abort() {
      await close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      process.off("exit", removeOnExit);
    },
  };
}

/** Writes to a stream (standard output), waiting until each chunk is handed to the system. */
export function streamSink(out: Writable): ByteSink {
  // A reader that goes away (`| head`) makes writes fail with EPIPE; that is reported through the
  // write callback, and must not also end the process as an unhandled 'error' event.
  const ignore = (): void => {};
  out.on("error", ignore);
  const done = (): Promise<void> => {
    out.off("error", ignore);
    return Promise.resolve();
  };
  return {
    write: (chunk) =>
      new Promise((resolve, reject) => {
        out.write(chunk, (e) => (e === null || e === undefined ? resolve() : reject(e)));
      }),
    commit: done,
    abort: done,
  };
}

// ------------------------------------------------------------------------ downloading

/** A download that did not deliver the artifact as stored. */
export class DownloadError extends Error {
  override name = "DownloadError";
}

/**
 * Downloads `key` into `sink`: asks for a presigned URL unless `stream`, fetches it when the
 * gateway hands one out, else writes the chunks of the stream. Checks size and SHA-256 against
 * the artifact's metadata; resolves to that metadata. Does not commit the sink.
 */
export async function downloadArtifact(
  artifacts: Client<typeof ArtifactService>,
  key: string,
  sink: ByteSink,
  options: { stream: boolean; signal: AbortSignal },
): Promise<ArtifactRef> {
  const hash = createHash("sha256");
  let size = 0;
  const take = async (chunk: Uint8Array): Promise<void> => {
    hash.update(chunk);
    size += chunk.length;
    await sink.write(chunk);
  };
  let ref: ArtifactRef | undefined;
  let url = "";
  for await (const message of artifacts.getArtifact(
    { key, presign: !options.stream },
    { signal: options.signal },
  )) {
    if (message.artifact !== undefined) {
      ref = message.artifact;
      url = message.url;
      // The URL is all this call had to say; leaving the loop ends it.
      if (url !== "") break;
    }
    if (message.chunk.length > 0) await take(message.chunk);
  }
  if (ref === undefined) throw new DownloadError(`the gateway sent no metadata for ${key}`);
  if (url !== "") {
    const host = URL.canParse(url) ? new URL(url).host : "?";
    let res: Response;
    try {
      res = await fetch(url, { signal: options.signal });
    } catch (e) {
      if (options.signal.aborted) throw e;
      const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : String(e);
      throw new DownloadError(
        `cannot download ${key} from its presigned URL at ${host}: ${cause} ` +
          "(--stream downloads it through the gateway instead)",
        { cause: e },
      );
    }
    if (!res.ok || res.body === null) {
      await res.body?.cancel().catch(() => undefined);
      throw new DownloadError(
        `the presigned URL of ${key} at ${host} answered HTTP ${res.status} ${res.statusText}` +
          " (--stream downloads it through the gateway instead)",
      );
    }
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) await take(chunk);
  }
  if (BigInt(size) !== ref.size)
    throw new DownloadError(`downloaded ${size} bytes of ${key}, but it has ${ref.size}`);
  if (ref.sha256 !== "" && hash.digest("hex") !== ref.sha256)
    throw new DownloadError(`the downloaded ${key} does not match its SHA-256`);
  return ref;
}

// ------------------------------------------------------------------------ the command

function expect(list: readonly string[], want: readonly string[], optional: number, usage: string): void {
  if (list.length > want.length || list.length < want.length - optional) {
    throw new UsageError(
      `${usage}: expected ${want.map((w, i) => (i >= want.length - optional ? `[<${w}>]` : `<${w}>`)).join(" ")}` +
        (list.length > want.length ? `, got extra ${JSON.stringify(list.slice(want.length))}` : ""),
    );
  }
}

const GATEWAY_OPTIONS = { address: { type: "string" }, token: { type: "string" } } as const;

/** `nexusflow artifacts list <run-id> [<step-id>]`. */
async function listCommand(args: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parse({
    args,
    allowPositionals: true,
    options: { ...GATEWAY_OPTIONS, output: { type: "string", short: "o" } },
  });
  expect(positionals, ["run-id", "step-id"], 1, "artifacts list");
  const [runId = "", stepId = ""] = positionals;
  const output = values.output ?? "table";
  if (output !== "table" && output !== "json")
    throw new UsageError(`--output must be table or json, got ${JSON.stringify(output)}`);
  return withGateway(io, "artifacts list", values, async ({ artifacts }) => {
    const res = await artifacts.listArtifacts({ runId, stepId }, { signal: io.signal });
    if (output === "json") {
      io.stdout(`${JSON.stringify(toJson(ListArtifactsResponseSchema, res), null, 2)}\n`);
      return 0;
    }
    if (res.artifacts.length === 0) {
      io.stderr(
        `nexusflow: artifacts list: ${stepId === "" ? "" : `step ${stepId} of `}run ${runId} stored nothing\n`,
      );
      return 0;
    }
    io.stdout(
      `${formatTable(["STEP", "ATTEMPT", "NAME", "SIZE", "CONTENT TYPE"], artifactRows(res.artifacts))}\n`,
    );
    return 0;
  });
}

/** "a, b, c" or "a, b, c, d, e and 3 more". */
function some(items: readonly string[]): string {
  const shown = items.slice(0, 5).join(", ");
  return `${shown}${items.length > 5 ? ` and ${items.length - 5} more` : ""}`;
}

/** What is known when an artifact was not found, for the one line that says so. */
function notFoundLine(
  runId: string,
  step: string,
  name: string,
  attempt: number | undefined,
  listed: readonly ArtifactRef[] | undefined,
  url: string,
  why = "",
): string {
  let text = `no artifact ${JSON.stringify(name)} of step ${step}${attempt === undefined ? "" : ` attempt ${attempt}`} in run ${runId}`;
  if (listed !== undefined) {
    const places = listed
      .map((r) => parseArtifactKey(r.key))
      .filter((p) => p !== undefined)
      .sort(compareParsed)
      .map((p) => ({ step: taskName(p), attempt: p.attempt, name: p.name }));
    // The listing of a map step holds its elements' files, which are theirs, not the step's.
    const own = places.filter((p) => p.step === step);
    const attempts = [...new Set(own.filter((p) => p.name === name).map((p) => p.attempt))];
    const elsewhere = [
      ...new Set(places.filter((p) => p.step !== step && p.name === name).map((p) => p.step)),
    ];
    const names = [...new Set((own.length > 0 ? own : places).map((p) => p.name))].sort();
    if (attempts.length > 0) text += ` (attempt ${attempts.join(", ")} has it)`;
    else if (elsewhere.length > 0)
      text += ` (${some(elsewhere)} ${elsewhere.length === 1 ? "has" : "have"} it: name an element of the map step, e.g. ${elsewhere[0]})`;
    else if (names.length === 0) text += " (the step stored nothing)";
    else text += ` (${own.length > 0 ? "it has" : "its elements have"} ${some(names)})`;
  }
  return `${text}${why}; asked the gateway at ${url}`;
}

/** `nexusflow artifacts get <run-id> <step-id> <name> [--attempt N] [-o FILE] [--force] [--stream]`. */
async function getCommand(args: string[], io: ArtifactsIo): Promise<number> {
  const { values, positionals } = parse({
    args,
    allowPositionals: true,
    options: {
      ...GATEWAY_OPTIONS,
      output: { type: "string", short: "o" },
      attempt: { type: "string" },
      force: { type: "boolean" },
      stream: { type: "boolean" },
    },
  });
  expect(positionals, ["run-id", "step-id", "name"], 0, "artifacts get");
  const [runId = "", step = "", name = ""] = positionals;
  let attempt: number | undefined;
  if (values.attempt !== undefined) {
    if (!/^\d+$/.test(values.attempt) || Number(values.attempt) < 1 || Number(values.attempt) > 2 ** 31 - 1)
      throw new UsageError(
        `--attempt must be an attempt number (1 or more), got ${JSON.stringify(values.attempt)}`,
      );
    attempt = Number(values.attempt);
  }
  let attemptKey: string | undefined;
  try {
    if (attempt !== undefined) attemptKey = artifactKey(runId, step, attempt, name);
  } catch (e) {
    if (isArtifactError(e)) throw new UsageError(`artifacts get: ${e.message}`);
    throw e;
  }
  const target =
    values.output === undefined || values.output === "-" ? undefined : resolve(io.cwd, values.output);
  return withGateway(io, "artifacts get", values, async ({ artifacts }, url) => {
    const list = (): Promise<ArtifactRef[]> =>
      artifacts.listArtifacts({ runId, stepId: step }, { signal: io.signal }).then((r) => r.artifacts);
    const notFound = (listed: readonly ArtifactRef[] | undefined, why = ""): number => {
      io.stderr(`nexusflow: artifacts get: ${notFoundLine(runId, step, name, attempt, listed, url, why)}\n`);
      return 1;
    };

    let key: string;
    if (attemptKey !== undefined) key = attemptKey;
    else {
      let listed: ArtifactRef[];
      try {
        listed = await list();
      } catch (e) {
        if (e instanceof ConnectError && e.code === Code.NotFound)
          return notFound(undefined, ` (${e.rawMessage})`);
        throw e;
      }
      // The latest attempt's file: what a retry saved replaces what an earlier attempt did. Only
      // the task's own: the listing of a map step holds its elements' files too.
      const latest = listed
        .map((r) => ({ key: r.key, place: artifactPlace(r.key) }))
        .filter((r) => r.place?.step === step && r.place.name === name)
        .sort((a, b) => (b.place?.attempt ?? 0) - (a.place?.attempt ?? 0))[0];
      if (latest === undefined) return notFound(listed);
      key = latest.key;
    }

    let sink: ByteSink;
    try {
      sink =
        target === undefined
          ? streamSink(io.binaryStdout)
          : await openFileSink(target, values.force === true);
    } catch (e) {
      if (e instanceof TargetExistsError) {
        io.stderr(`nexusflow: artifacts get: ${e.message}\n`);
        return 1;
      }
      throw e;
    }
    let ref: ArtifactRef;
    try {
      ref = await downloadArtifact(artifacts, key, sink, {
        stream: values.stream === true,
        signal: io.signal,
      });
      await sink.commit();
    } catch (e) {
      await sink.abort();
      if (e instanceof TargetExistsError) {
        io.stderr(`nexusflow: artifacts get: ${e.message}\n`);
        return 1;
      }
      if (e instanceof ConnectError && e.code === Code.NotFound && !io.signal.aborted)
        return notFound(await list().catch(() => undefined));
      throw e;
    }
    if (target !== undefined)
      io.stderr(`nexusflow: artifacts get: wrote ${ref.key} (${formatSize(ref.size)}) to ${values.output}\n`);
    return 0;
  });
}

/** `nexusflow artifacts <list|get> ...`. */
export async function artifactsCommand(args: string[], io: ArtifactsIo): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "list":
      return listCommand(rest, io);
    case "get":
      return getCommand(rest, io);
    case undefined:
      throw new UsageError("artifacts: expected list or get");
    default:
      throw new UsageError(`artifacts: unknown subcommand ${JSON.stringify(sub)} (list, get)`);
  }
}
