/**
 * How deep an API answer carries a run's values, and whether a JSON value would nest past what
 * protobuf decoders read by default there: shared by the API's answers (api/convert.ts) and the
 * paths that take values a run keeps (requests, Kafka records), so that no run holds a value its
 * answers could not carry.
 */
import { ApiError } from "@nexusflow/common";

/**
 * Most messages nested in an answer that protobuf decoders read by default (protobuf-es, C++,
 * Python: 100); a deeper answer fails to decode at the client, whatever its size.
 */
export const MAX_ANSWER_NESTING = 100;

/** Where an answer carries a run's input (GetRunResponse, Run, then the Value): runTooDeep's depth (api/convert.ts). */
export const RUN_INPUT_DEPTH = 3;
/** Where an answer carries a task's input or output (GetRunResponse, Run, TaskRun, then the Value). */
export const TASK_VALUE_DEPTH = 4;
/**
 * Where an answer carries a step's output at the deepest by default: in the run's output of a
 * workflow that declares none, `{<step id>: output}` (Run.output at {@link RUN_INPUT_DEPTH}).
 */
export const STEP_OUTPUT_DEPTH = RUN_INPUT_DEPTH + 2;
/**
 * Where an answer carries an event's payload at the deepest by default: as the output of a wait
 * it ended, `{eventId, key, payload, publishTime}`, in such a run output.
 */
export const EVENT_PAYLOAD_DEPTH = STEP_OUTPUT_DEPTH + 2;

/**
 * Whether `json`, carried as a Value message at nesting `depth` of an answer, takes a decoder past
 * {@link MAX_ANSWER_NESTING} (as api/convert.ts's valueTooDeep counts a Value: each level of a list or an
 * object is two messages). Stops at the first branch that does, so it never walks deeper.
 */
export function jsonTooDeep(json: unknown, depth: number): boolean {
  if (typeof json !== "object" || json === null) return depth > MAX_ANSWER_NESTING;
  if (depth + 1 > MAX_ANSWER_NESTING) return true;
  const children: unknown[] = Array.isArray(json) ? json : Object.values(json);
  return children.some((v) => jsonTooDeep(v, depth + 2));
}

/**
 * INVALID_ARGUMENT naming `field` for a value a request gives a run to keep that the run's answers
 * would carry at nesting `depth` ({@link RUN_INPUT_DEPTH}, {@link TASK_VALUE_DEPTH}) deeper than
 * clients decode: a request's own Value sits higher, so the decoder of the request let it through,
 * but the run taking it could then be read by no client (GetRun fails to decode).
 */
export function refuseTooDeep(json: unknown, depth: number, field: string): void {
  if (jsonTooDeep(json, depth)) {
    const levels = Math.floor((MAX_ANSWER_NESTING - depth) / 2);
    throw ApiError.invalid(
      field,
      `nests objects and arrays more than ${levels} levels deep, deeper than a run's answers can carry it (protobuf decoders stop at ${MAX_ANSWER_NESTING} nested messages)`,
    );
  }
}
