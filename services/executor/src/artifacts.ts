/**
 * What an attempt stores besides its log: files the handler saves through `ctx.artifacts` and,
 * when the output is large, the output itself (claim check). The executor then reports
 * `Completed.output_ref` instead of the output, so a multi-megabyte result travels neither
 * through the session stream nor through PostgreSQL.
 *
 * Keys follow the layout of `@nexusflow/common/artifacts`:
 * `runs/{run}/{step}/attempt-{n}/{name}` for files, `…/attempt-{n}/output.json` for the output;
 * an element of a map step has its own folder, `runs/{run}/{step}/element-{i}/attempt-{n}/…`
 * (its elements share the step id: in one folder their outputs would overwrite each other).
 */
import type { JsonValue } from "@bufbuild/protobuf";
import {
  type ArtifactStore,
  DEFAULT_OFFLOAD_THRESHOLD_BYTES,
  type TaskKindName,
  attemptPrefix,
  checkArtifactName,
  isArtifactError,
  offloadOutput,
} from "@nexusflow/common/artifacts";
import { nulCharacterPath } from "@nexusflow/common";
import type { ArtifactRef } from "@nexusflow/gen";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type { AttemptIdentity } from "./log-sink.js";
import { PayloadError, checkDepth, jsonTextHasNul, toJsonPayload } from "./payload.js";
import { TaskError } from "./handlers/task-error.js";
import type { TaskArtifacts } from "./handlers/types.js";

/** Largest output offloaded by default, in bytes (256 MiB). */
export const DEFAULT_MAX_OFFLOAD_BYTES = 256 * 1024 * 1024;

/**
 * An attempt's identity as the artifact layout needs it; `kind` defaults to STEP, `elementIndex`
 * is the lease's (set for an element of a map step only).
 */
export type ArtifactIdentity = Pick<AttemptIdentity, "runId" | "stepId" | "attempt"> & {
  readonly kind?: TaskKindName | undefined;
  readonly elementIndex?: number | undefined;
};

/** The folder of the attempt's objects (see the module comment). */
export function attemptFolder(identity: ArtifactIdentity): string {
  return attemptPrefix(
    identity.runId,
    identity.stepId,
    identity.attempt,
    identity.kind,
    identity.elementIndex,
  );
}

/** The `ctx.artifacts` of one attempt; without a store every put rejects `ARTIFACTS_UNAVAILABLE`. */
export function createTaskArtifacts(
  store: ArtifactStore | undefined,
  identity: ArtifactIdentity,
): TaskArtifacts {
  return {
    async put(name, data, options = {}) {
      if (store === undefined) {
        throw TaskError.terminal(
          TaskErrorType.ARTIFACTS_UNAVAILABLE,
          "this executor has no artifact store (set ExecutorOptions.artifacts, or S3_ENDPOINT / ARTIFACTS_DIR)",
        );
      }
      try {
        const key = `${attemptFolder(identity)}${checkArtifactName(name)}`;
        return await store.put(key, data, { contentType: options.contentType });
      } catch (e) {
        throw toTaskError(e, `could not save artifact ${JSON.stringify(name)}`);
      }
    },
  };
}

/** A store failure as the TaskError a handler (or the attempt) fails with. */
function toTaskError(e: unknown, what: string): TaskError {
  const message = `${what}: ${e instanceof Error ? e.message : String(e)}`;
  if (
    isArtifactError(e, "INVALID_KEY") ||
    isArtifactError(e, "INVALID_ARGUMENT") ||
    isArtifactError(e, "CONFLICT")
  )
    return TaskError.terminal(TaskErrorType.INVALID_ARTIFACT, message, { cause: e });
  return TaskError.retryable(TaskErrorType.ARTIFACT_STORE_UNAVAILABLE, message, { cause: e });
}

/** When and how outputs are offloaded. */
export interface OutputOffloadOptions {
  readonly store: ArtifactStore;
  /**
   * Outputs whose JSON is larger than this many bytes are offloaded.
   * @default 256 KiB
   */
  readonly thresholdBytes?: number | undefined;
  /**
   * Largest output offloaded; a larger one fails the attempt with OUTPUT_TOO_LARGE.
   * @default 256 MiB
   */
  readonly maxBytes?: number | undefined;
}

/** What a completed attempt reports: the output inline, or a claim check. */
export type SettledOutput =
  | { readonly output: JsonValue; readonly outputRef?: undefined }
  | { readonly output?: undefined; readonly outputRef: ArtifactRef };

/**
 * Turns a handler's return value into what Completed carries. Without `offload` (or at or below
 * its threshold) the JSON goes inline, limited to `maxPayloadBytes`; above the threshold (or above
 * `maxPayloadBytes`) it is stored as `output.json` and only its ref is reported. Throws
 * {@link PayloadError} (NOT_JSON, TOO_LARGE past the applicable limit, TOO_DEEP inline) and a retryable
 * TaskError `OUTPUT_OFFLOAD_FAILED` when the store cannot take it.
 */
export async function settleOutput(
  value: unknown,
  identity: ArtifactIdentity,
  maxPayloadBytes: number,
  offload?: OutputOffloadOptions,
): Promise<SettledOutput> {
  if (offload === undefined) return { output: toJsonPayload(value, maxPayloadBytes) };
  const threshold = Math.min(offload.thresholdBytes ?? DEFAULT_OFFLOAD_THRESHOLD_BYTES, maxPayloadBytes);
  const maxBytes = offload.maxBytes ?? DEFAULT_MAX_OFFLOAD_BYTES;
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value);
  } catch (e) {
    throw new PayloadError(
      "NOT_JSON",
      `not JSON-serialisable: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
      },
    );
  }
  if (text === undefined) throw new PayloadError("NOT_JSON", `not JSON-serialisable: a ${typeof value}`);
  const bytes = Buffer.byteLength(text, "utf8");
  // Inline, it goes through the session as a google.protobuf.Value: as deep as a report can carry.
  if (bytes <= threshold) return { output: checkDepth(JSON.parse(text) as JsonValue) };
  if (bytes > maxBytes)
    throw new PayloadError("TOO_LARGE", `${bytes} bytes of JSON, more than the offload limit of ${maxBytes}`);
  // Offloaded, it still reaches PostgreSQL through the templates of the steps after it.
  if (jsonTextHasNul(text)) {
    const at = nulCharacterPath(JSON.parse(text) as JsonValue, "output") ?? "output";
    throw new PayloadError("NUL", `holding a NUL character (U+0000) at ${at}, which cannot be stored`);
  }
  try {
    return { outputRef: await offloadOutput(offload.store, attemptFolder(identity), text) };
  } catch (e) {
    throw TaskError.retryable(
      TaskErrorType.OUTPUT_OFFLOAD_FAILED,
      `could not store the ${bytes}-byte output: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
}
