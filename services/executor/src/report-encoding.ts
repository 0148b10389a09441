/**
 * Started and Completed, the two reports every task sends, encoded by hand into one writer kept
 * from one report to the next, byte for byte as `toBinary` encodes them (report-encoding.test.ts
 * compares the two for every field, and fails when one of these messages gains a field).
 *
 * Why: `toBinary` makes a BinaryWriter per message, whose buffer allocations cost more than the
 * encoding itself (see KeptWriter in @nexusflow/common). A Completed with its log's reference is
 * over 128 bytes: three allocations, 5-7 µs a report where this takes about one
 * (bench/notes/23-session-twenty-seven.md). Messages with unknown fields (none are made here) go
 * the generic way, which keeps them.
 */
import { toBinary } from "@bufbuild/protobuf";
import { type BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { KeptWriter, writeValueField } from "@nexusflow/common";
import {
  type ArtifactRef,
  type Completed,
  CompletedSchema,
  type LeaseKey,
  type LogRef,
  type Started,
  StartedSchema,
} from "@nexusflow/gen";

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;

/** The writer kept between reports (common's KeptWriter). */
const reportWriter = new KeptWriter();

/** A Started report, encoded. */
export function encodeStarted(m: Started): Uint8Array {
  if (m.$unknown !== undefined || m.key?.$unknown !== undefined) return toBinary(StartedSchema, m);
  return reportWriter.encode(writeStarted, m, undefined, undefined) ?? toBinary(StartedSchema, m);
}

/** A Completed report, encoded. */
export function encodeCompleted(m: Completed): Uint8Array {
  if (
    m.$unknown !== undefined ||
    m.key?.$unknown !== undefined ||
    m.outputRef?.$unknown !== undefined ||
    m.outputRef?.createTime?.$unknown !== undefined ||
    m.logs?.$unknown !== undefined
  )
    return toBinary(CompletedSchema, m);
  return reportWriter.encode(writeCompleted, m, undefined, undefined) ?? toBinary(CompletedSchema, m);
}

function writeStarted(w: BinaryWriter, m: Started): boolean {
  if (m.key !== undefined) writeLeaseKey(w, 1, m.key);
  return true;
}

function writeCompleted(w: BinaryWriter, m: Completed): boolean {
  if (m.key !== undefined) writeLeaseKey(w, 1, m.key);
  // writeValueField keeps a Value's unknown fields itself.
  if (m.output !== undefined) writeValueField(w, 2, m.output);
  if (m.outputRef !== undefined) writeArtifactRef(w, 3, m.outputRef);
  if (m.logs !== undefined) writeLogRef(w, 4, m.logs);
  return true;
}

function writeLeaseKey(w: BinaryWriter, no: number, k: LeaseKey): void {
  w.tag(no, LEN).fork();
  if (k.taskRunId !== "") w.tag(1, LEN).string(k.taskRunId);
  if (k.attempt !== 0) w.tag(2, VARINT).int32(k.attempt);
  if (k.fencingToken !== 0n) w.tag(3, VARINT).int64(k.fencingToken);
  if (k.runId !== "") w.tag(4, LEN).string(k.runId);
  w.join();
}

function writeArtifactRef(w: BinaryWriter, no: number, r: ArtifactRef): void {
  w.tag(no, LEN).fork();
  if (r.key !== "") w.tag(1, LEN).string(r.key);
  if (r.name !== "") w.tag(2, LEN).string(r.name);
  if (r.size !== 0n) w.tag(3, VARINT).int64(r.size);
  if (r.contentType !== "") w.tag(4, LEN).string(r.contentType);
  if (r.sha256 !== "") w.tag(5, LEN).string(r.sha256);
  const t = r.createTime;
  if (t !== undefined) {
    w.tag(6, LEN).fork();
    if (t.seconds !== 0n) w.tag(1, VARINT).int64(t.seconds);
    if (t.nanos !== 0) w.tag(2, VARINT).int32(t.nanos);
    w.join();
  }
  w.join();
}

function writeLogRef(w: BinaryWriter, no: number, l: LogRef): void {
  w.tag(no, LEN).fork();
  if (l.key !== "") w.tag(1, LEN).string(l.key);
  if (l.size !== 0n) w.tag(2, VARINT).int64(l.size);
  if (l.lines !== 0n) w.tag(3, VARINT).int64(l.lines);
  w.join();
}
