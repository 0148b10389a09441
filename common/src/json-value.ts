/** Conversions between plain JSON and `google.protobuf.Value` messages (protobuf-es keeps Value boxed). */
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";

/** JSON (undefined counts as null) to a Value message. */
export function jsonToValue(json: unknown): Value {
  return fromJson(ValueSchema, (json ?? null) as JsonValue);
}

/** A Value message (or its absence) to JSON; absent is null. */
export function valueToJson(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}

/** The ErrorInfo-like object with details converted to a Value. */
export function errorToProto<
  E extends { type: string; message: string; retryable: boolean; details?: unknown },
>(error: E): { type: string; message: string; retryable: boolean; details?: Value } {
  return {
    type: error.type,
    message: error.message,
    retryable: error.retryable,
    ...(error.details === undefined ? {} : { details: jsonToValue(error.details) }),
  };
}
