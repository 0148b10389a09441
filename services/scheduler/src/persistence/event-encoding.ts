/**
 * The outbox's LifecycleEventBatch encoding, written by hand for the envelope and the events every
 * task and run has (RunStarted, TaskLeased, TaskStarted, TaskSucceeded, RunCompleted, and the
 * google.protobuf.Value in them), into one BinaryWriter; any other event, and the rare messages
 * inside these (an output's ArtifactRef, a run's TaskError), goes through `toBinary`.
 *
 * The bytes are exactly `toBinary`'s (fields in number order, zero values of implicit presence left
 * out, a oneof's member and a map entry's key and value always written): lifecycle-event.test.ts
 * compares both for every event with every field set, and fails when one of these messages gains a
 * field this file does not write. Why by hand: five events per no-op task, and protobuf-es's
 * generic writer (a closure and a presence check per field, a writer per nested toBinary) cost
 * ~13 us per task, a tenth of the scheduler's thread in a drain.
 */
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { writeValueField } from "@nexusflow/common";
import {
  ArtifactRefSchema,
  type LifecycleEvent,
  LifecycleEventSchema,
  type RunCompleted,
  type RunStarted,
  TaskErrorSchema,
  type TaskLeased,
  type TaskStarted,
  type TaskSucceeded,
} from "@nexusflow/gen";

const LEN = WireType.LengthDelimited;
const VARINT = WireType.Varint;

/** Field numbers each hand-written message writes (checked against the schemas by the test). */
export const HAND_WRITTEN_FIELDS = {
  "nexusflow.v1.LifecycleEvent": [1, 2, 3, 4, 5, 6, 7],
  "google.protobuf.Timestamp": [1, 2],
  "nexusflow.v1.RunStarted": [1, 2, 3, 4, 5],
  "nexusflow.v1.TaskLeased": [1, 2, 3, 4, 5, 6],
  "nexusflow.v1.TaskStarted": [1, 2, 3, 4, 5],
  "nexusflow.v1.TaskSucceeded": [1, 2, 3, 4, 5, 6, 7],
  "nexusflow.v1.RunCompleted": [1, 2, 3],
} as const;

/** The message and field number of each case of LifecycleEvent's `event` oneof. */
export const EVENT_FIELDS: ReadonlyMap<string | undefined, { schema: DescMessage; no: number }> = new Map(
  LifecycleEventSchema.fields.flatMap((f) =>
    f.oneof?.name === "event" && f.message !== undefined
      ? [[f.localName, { schema: f.message, no: f.number }]]
      : [],
  ),
);

/** The LifecycleEventBatch encoding of `events` (toBinary's bytes). */
export function encodeEventBatch(events: readonly LifecycleEvent[]): Uint8Array {
  const w = new BinaryWriter();
  for (const e of events) {
    w.tag(1, LEN).fork();
    writeEvent(w, e);
    w.join();
  }
  return w.finish();
}

function writeEvent(w: BinaryWriter, m: LifecycleEvent): void {
  // Unknown fields are kept, as toBinary keeps them (none in events made by lifecycleEventAt).
  if (m.$unknown !== undefined || m.time?.$unknown !== undefined) {
    w.raw(toBinary(LifecycleEventSchema, m));
    return;
  }
  if (m.eventId !== "") w.tag(1, LEN).string(m.eventId);
  if (m.runId !== "") w.tag(2, LEN).string(m.runId);
  if (m.sequence !== 0n) w.tag(3, VARINT).int64(m.sequence);
  if (m.time !== undefined) {
    w.tag(4, LEN).fork();
    if (m.time.seconds !== 0n) w.tag(1, VARINT).int64(m.time.seconds);
    if (m.time.nanos !== 0) w.tag(2, VARINT).int32(m.time.nanos);
    w.join();
  }
  if (m.workflowName !== "") w.tag(5, LEN).string(m.workflowName);
  if (m.workflowVersion !== 0) w.tag(6, VARINT).int32(m.workflowVersion);
  if (m.truncated) w.tag(7, VARINT).bool(true);
  const event = m.event;
  if (event.case === undefined) return;
  const field = EVENT_FIELDS.get(event.case);
  if (field === undefined) return;
  w.tag(field.no, LEN).fork();
  if (event.value.$unknown !== undefined) {
    w.raw(toBinary(field.schema, event.value)).join();
    return;
  }
  switch (event.case) {
    case "runStarted":
      writeRunStarted(w, event.value);
      break;
    case "taskLeased":
      writeTaskLeased(w, event.value);
      break;
    case "taskStarted":
      writeTaskStarted(w, event.value);
      break;
    case "taskSucceeded":
      writeTaskSucceeded(w, event.value);
      break;
    case "runCompleted":
      writeRunCompleted(w, event.value);
      break;
    default:
      w.raw(toBinary(field.schema, event.value));
  }
  w.join();
}

function writeRunStarted(w: BinaryWriter, m: RunStarted): void {
  if (m.input !== undefined) writeValueField(w, 1, m.input);
  if (m.idempotencyKey !== "") w.tag(2, LEN).string(m.idempotencyKey);
  for (const key of Object.keys(m.labels)) {
    w.tag(3, LEN).fork();
    w.tag(1, LEN).string(key);
    w.tag(2, LEN).string(m.labels[key] as string);
    w.join();
  }
  if (m.rerunOf !== "") w.tag(4, LEN).string(m.rerunOf);
  if (m.rerunFromStep !== "") w.tag(5, LEN).string(m.rerunFromStep);
}

/** Fields 1-3 of TaskLeased, TaskStarted and TaskSucceeded: which attempt of which task. */
function writeAttemptOf(w: BinaryWriter, m: TaskLeased | TaskStarted | TaskSucceeded): void {
  if (m.taskRunId !== "") w.tag(1, LEN).string(m.taskRunId);
  if (m.stepId !== "") w.tag(2, LEN).string(m.stepId);
  if (m.attempt !== 0) w.tag(3, VARINT).int32(m.attempt);
}

function writeTaskLeased(w: BinaryWriter, m: TaskLeased): void {
  writeAttemptOf(w, m);
  if (m.executorId !== "") w.tag(4, LEN).string(m.executorId);
  if (m.fencingToken !== 0n) w.tag(5, VARINT).int64(m.fencingToken);
  if ((m.kind as number) !== 0) w.tag(6, VARINT).int32(m.kind);
}

function writeTaskStarted(w: BinaryWriter, m: TaskStarted): void {
  writeAttemptOf(w, m);
  if (m.executorId !== "") w.tag(4, LEN).string(m.executorId);
  if ((m.kind as number) !== 0) w.tag(5, VARINT).int32(m.kind);
}

function writeTaskSucceeded(w: BinaryWriter, m: TaskSucceeded): void {
  writeAttemptOf(w, m);
  if (m.output !== undefined) writeValueField(w, 4, m.output);
  if (m.outputRef !== undefined) writeOther(w, 5, ArtifactRefSchema, m.outputRef);
  if ((m.kind as number) !== 0) w.tag(6, VARINT).int32(m.kind);
  if (m.reusedFrom !== "") w.tag(7, LEN).string(m.reusedFrom);
}

function writeRunCompleted(w: BinaryWriter, m: RunCompleted): void {
  if ((m.status as number) !== 0) w.tag(1, VARINT).int32(m.status);
  if (m.output !== undefined) writeValueField(w, 2, m.output);
  if (m.error !== undefined) writeOther(w, 3, TaskErrorSchema, m.error);
}

/** A message field this file does not write by hand, through toBinary. */
function writeOther<D extends DescMessage>(w: BinaryWriter, no: number, schema: D, m: MessageShape<D>): void {
  w.tag(no, LEN).bytes(toBinary(schema, m));
}
