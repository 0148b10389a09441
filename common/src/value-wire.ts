/**
 * google.protobuf.Value written by hand into a BinaryWriter, byte for byte as protobuf-es's
 * `toBinary` writes it (a oneof's member always, a map entry's key and value always), from a Value
 * message or straight from JSON. The services' hot encodings (a lease, an outbox event, a report)
 * write their Values with these instead of a generic walk and a writer per nested message;
 * value-wire.test.ts compares the bytes with toBinary's.
 */
import { toBinary } from "@bufbuild/protobuf";
import { type BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { type ListValue, type Struct, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { jsonToValue } from "./json-value.js";

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

/**
 * Writes a JSON value as the fields of a Value, as toBinary writes `jsonToValue(json)` (no Value
 * message made); anything but plain JSON (a non-finite number, a class instance, a bigint) takes
 * jsonToValue's own path, so it fails or converts exactly as there.
 */
export function writeJsonAsValue(w: BinaryWriter, json: unknown): void {
  switch (typeof json) {
    case "string":
      w.tag(3, LEN).string(json);
      return;
    case "number":
      if (!Number.isFinite(json)) break;
      w.tag(2, WireType.Bit64).double(json);
      return;
    case "boolean":
      w.tag(4, VARINT).bool(json);
      return;
    case "object": {
      if (json === null) {
        w.tag(1, VARINT).int32(0);
        return;
      }
      if (Array.isArray(json)) {
        w.tag(6, LEN).fork();
        for (const item of json as unknown[]) {
          w.tag(1, LEN).fork();
          writeJsonAsValue(w, item);
          w.join();
        }
        w.join();
        return;
      }
      const proto = Object.getPrototypeOf(json) as unknown;
      if (proto !== Object.prototype && proto !== null) break;
      const record = json as Record<string, unknown>;
      w.tag(5, LEN).fork();
      for (const key of Object.keys(record)) {
        w.tag(1, LEN).fork();
        w.tag(1, LEN).string(key);
        w.tag(2, LEN).fork();
        writeJsonAsValue(w, record[key]);
        w.join();
        w.join();
      }
      w.join();
      return;
    }
    default:
  }
  w.raw(toBinary(ValueSchema, jsonToValue(json)));
}
