/**
 * Lifecycle event ids. An event's id is derived from what already names it, its run and its
 * sequence number in the run: a name-based UUID (version 5, RFC 9562) in a namespace of Nexusflow's
 * own. The outbox does not store it (36 random bytes per event that no compression shrinks); the
 * relay, `events tail` and anything else that reads the outbox put it back, and a republished event
 * gets the same id again.
 */
import { createHash } from "node:crypto";

/** The namespace of lifecycle event ids (a random UUID, fixed for good: changing it changes every id). */
const NAMESPACE = Buffer.from("3f6c1a0e9b4d4e7a8c2f5d1b7e9a0c46", "hex");

/** The id of the event `sequence` of run `runId`: the same wherever and whenever it is computed. */
export function lifecycleEventId(runId: string, sequence: number | bigint): string {
  const h = createHash("sha1").update(NAMESPACE).update(`${runId}/${sequence}`).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x50;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.toString("hex", 0, 16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/**
 * A LifecycleEvent encoding with `eventId` as its field 1 (`event_id`), put before the rest: a
 * parser reads fields in any order, and the encoding had no field 1 (the outbox leaves it out).
 */
export function withEventId(encoding: Uint8Array, eventId: string): Uint8Array {
  const id = Buffer.from(eventId, "utf8");
  if (id.length > 127) throw new RangeError("an event id is at most 127 bytes");
  const out = new Uint8Array(2 + id.length + encoding.length);
  out[0] = 0x0a; // field 1, length-delimited
  out[1] = id.length;
  out.set(id, 2);
  out.set(encoding, 2 + id.length);
  return out;
}
