/**
 * Lifecycle event ids. An event's id is derived from what already names it, its run and its
 * sequence number in the run: a name-based UUID (version 5, RFC 9562) in a namespace of Nexusflow's
 * own. The outbox does not store it (36 random bytes per event that no compression shrinks); the
 * relay, `events tail` and anything else that reads the outbox put it back, and a republished event
 * gets the same id again.
 */
import { hash } from "node:crypto";

/** The namespace of lifecycle event ids (a random UUID, fixed for good: changing it changes every id). */
const NAMESPACE = Buffer.from("3f6c1a0e9b4d4e7a8c2f5d1b7e9a0c46", "hex");

/**
 * The namespace then the name, hashed in one call: a run id and a sequence take ~60 bytes. Reused
 * by every call (nothing awaits in between); a longer name is hashed from a buffer of its own.
 */
const scratch = Buffer.alloc(256);
NAMESPACE.copy(scratch);

const HEX = "0123456789abcdef";

/**
 * The id of the event `sequence` of run `runId`: the same wherever and whenever it is computed. A
 * version-5 UUID (SHA-1 of the namespace and `<runId>/<sequence>`), formatted from the hash's hex
 * digits: the version digit is 5, and the variant's takes the two low bits of the digit it replaces.
 */
export function lifecycleEventId(runId: string, sequence: number | bigint): string {
  const name = `${runId}/${sequence}`;
  // At most three UTF-8 bytes per UTF-16 unit: a name that may not fit takes its own buffer.
  const data =
    name.length * 3 <= scratch.length - NAMESPACE.length
      ? scratch.subarray(0, NAMESPACE.length + scratch.write(name, NAMESPACE.length, "utf8"))
      : Buffer.concat([NAMESPACE, Buffer.from(name, "utf8")]);
  const x = hash("sha1", data, "hex");
  const variant = HEX[(parseInt(x.charAt(16), 16) & 0x3) | 0x8] as string;
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-5${x.slice(13, 16)}-${variant}${x.slice(17, 20)}-${x.slice(20, 32)}`;
}

/**
 * A LifecycleEvent encoding with `eventId` as its field 1 (`event_id`), put before the rest: a
 * parser reads fields in any order, and the encoding had no field 1 (the outbox leaves it out).
 * One buffer, taken from Node's pool when small (a view: read it through its offset), every byte
 * written.
 */
export function withEventId(encoding: Uint8Array, eventId: string): Uint8Array {
  const n = Buffer.byteLength(eventId, "utf8");
  if (n > 127) throw new RangeError("an event id is at most 127 bytes");
  const out = Buffer.allocUnsafe(2 + n + encoding.length);
  out[0] = 0x0a; // field 1, length-delimited
  out[1] = n;
  out.write(eventId, 2, "utf8");
  out.set(encoding, 2 + n);
  return out;
}
