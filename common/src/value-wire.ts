/**
 * google.protobuf.Value written by hand into a BinaryWriter, byte for byte as protobuf-es's
 * `toBinary` writes it (a oneof's member always, a map entry's key and value always), from a Value
 * message or straight from JSON. The services' hot encodings (a lease, an outbox event, a report)
 * write their Values with these instead of a generic walk and a writer per nested message;
 * value-wire.test.ts compares the bytes with toBinary's.
 */
import { toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type ListValue, type Struct, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;

/** Writes field `no` holding `value` (a Value message), as toBinary does for a set message field. */
export function writeValueField(w: BinaryWriter, no: number, value: Value): void {
  w.tag(no, LEN).fork();
  writeValue(w, value);
  w.join();
}

/** Writes the fields of a Value message. */
export function writeValue(w: BinaryWriter, v: Value): void {
  const kind = v.kind;
  // Unknown fields (a Value decoded from a newer peer's bytes) are kept, as toBinary keeps them.
  if (
    v.$unknown !== undefined ||
    ((kind.case === "structValue" || kind.case === "listValue") && kind.value.$unknown !== undefined)
  ) {
    w.raw(toBinary(ValueSchema, v));
    return;
  }
  switch (kind.case) {
    case "nullValue":
      w.tag(1, VARINT).int32(kind.value);
      break;
    case "numberValue":
      w.tag(2, WireType.Bit64).double(kind.value);
      break;
    case "stringValue":
      w.tag(3, LEN).string(kind.value);
      break;
    case "boolValue":
      w.tag(4, VARINT).bool(kind.value);
      break;
    case "structValue":
      w.tag(5, LEN).fork();
      writeStruct(w, kind.value);
      w.join();
      break;
    case "listValue":
      w.tag(6, LEN).fork();
      writeList(w, kind.value);
      w.join();
      break;
    default:
  }
}

function writeStruct(w: BinaryWriter, s: Struct): void {
  const fields = s.fields;
  for (const key of Object.keys(fields)) {
    w.tag(1, LEN).fork();
    w.tag(1, LEN).string(key);
    writeValueField(w, 2, fields[key] as Value);
    w.join();
  }
}

function writeList(w: BinaryWriter, l: ListValue): void {
  for (const v of l.values) writeValueField(w, 1, v);
}

/** Nesting past which {@link writeJsonAsValue} leaves a value to jsonToValue (which limits it). */
const MAX_JSON_DEPTH = 32;

/**
 * Writes a JSON value as the fields of a Value, as toBinary writes `jsonToValue(json)`, without
 * making a Value message. Returns false, having written part of it, for anything it leaves to the
 * caller's generic path (jsonToValue, then toBinary, which convert or fail as they do): a
 * non-finite number, `undefined` (at the top or inside), a class instance, a bigint, or nesting
 * deeper than {@link MAX_JSON_DEPTH}. The caller then discards its writer.
 */
export function writeJsonAsValue(w: BinaryWriter, json: unknown, depth = 0): boolean {
  switch (typeof json) {
    case "string":
      w.tag(3, LEN).string(json);
      return true;
    case "number":
      if (!Number.isFinite(json)) return false;
      w.tag(2, WireType.Bit64).double(json);
      return true;
    case "boolean":
      w.tag(4, VARINT).bool(json);
      return true;
    case "object": {
      if (json === null) {
        w.tag(1, VARINT).int32(0);
        return true;
      }
      if (depth >= MAX_JSON_DEPTH) return false;
      if (Array.isArray(json)) {
        w.tag(6, LEN).fork();
        // Indexed, not iterated: a hole is `undefined` here, as jsonToValue sees it.
        for (let i = 0; i < json.length; i++) {
          w.tag(1, LEN).fork();
          if (!writeJsonAsValue(w, json[i], depth + 1)) return false;
          w.join();
        }
        w.join();
        return true;
      }
      const proto = Object.getPrototypeOf(json) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      const record = json as Record<string, unknown>;
      w.tag(5, LEN).fork();
      for (const key of Object.keys(record)) {
        w.tag(1, LEN).fork();
        w.tag(1, LEN).string(key);
        w.tag(2, LEN).fork();
        if (!writeJsonAsValue(w, record[key], depth + 1)) return false;
        w.join();
        w.join();
      }
      w.join();
      return true;
    }
    default:
      return false;
  }
}

/**
 * One BinaryWriter kept from one message to the next, for the hot hand encodings (a lease, a
 * report). A BinaryWriter has no buffer until its first byte, then allocates 128 bytes and doubles
 * (copying) whenever the message outgrows it, and `finish()` allocates the bytes it returns: three
 * allocations outside the JS heap for a message of 129-256 bytes, each dearer than the encoding.
 * Kept, its buffer grows once for all and `finish()` empties it; a write that throws half-way leaves
 * it mid-message, so it is replaced then.
 */
export class KeptWriter {
  #w = new BinaryWriter();

  /**
   * `write(w, a, b, c)` into the kept writer: the bytes written, or undefined when `write` returns
   * false (a message it leaves to the generic way; the writer is emptied either way).
   */
  encode<A, B, C>(
    write: (w: BinaryWriter, a: A, b: B, c: C) => boolean,
    a: A,
    b: B,
    c: C,
  ): Uint8Array | undefined {
    const w = this.#w;
    let finished = false;
    try {
      const whole = write(w, a, b, c);
      const bytes = w.finish(); // empties it, open forks included
      finished = true;
      return whole ? bytes : undefined;
    } finally {
      if (!finished) this.#w = new BinaryWriter();
    }
  }
}
