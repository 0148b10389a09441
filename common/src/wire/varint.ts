/**
 * Protobuf varints written straight into a `Uint8Array` sized beforehand: for encoders that work
 * out a message's size first and write it in one pass (session frames, spans, outbox trace
 * contexts), where protobuf-es's BinaryWriter would build chunks and join them.
 */

/** Bytes of an unsigned 32-bit varint. */
export function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** Writes an unsigned 32-bit varint at `pos`; returns the position after it. */
export function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[pos++] = n;
  return pos;
}
