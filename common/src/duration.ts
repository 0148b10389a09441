/**
 * Durations as people write them in workflow definitions and configuration: "250ms", "5s",
 * "1m30s", "1.5h". Parsed to whole milliseconds; anything else is rejected with a reason.
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/** Largest duration accepted anywhere (30 days), so arithmetic on deadlines never overflows timers. */
export const MAX_DURATION_MS = 30 * 86_400_000;

/** Thrown by {@link parseDuration} for text that is not a duration. */
export class DurationError extends Error {
  override name = "DurationError";
}

/**
 * Parses a duration such as "1m30s" into milliseconds, at most `maxMs` (retentions may allow more
 * than timers). Throws {@link DurationError}.
 */
export function parseDuration(text: string, maxMs = MAX_DURATION_MS): number {
  if (typeof text !== "string" || text.length === 0) {
    throw new DurationError(
      `expected a duration such as "500ms", "5s" or "1m30s", got ${JSON.stringify(text)}`,
    );
  }
  let total = 0;
  PART.lastIndex = 0;
  let at = 0;
  while (at < text.length) {
    PART.lastIndex = at;
    const match = PART.exec(text);
    if (match === null) {
      throw new DurationError(
        `invalid duration ${JSON.stringify(text)}: use a number followed by ms, s, m, h or d (e.g. "1m30s")`,
      );
    }
    total += Number(match[1]) * (UNIT_MS[match[2] as string] as number);
    at = PART.lastIndex;
  }
  if (total > maxMs) {
    throw new DurationError(
      `duration ${JSON.stringify(text)} is longer than the maximum of ${Math.floor(maxMs / 86_400_000)}d`,
    );
  }
  return Math.round(total);
}

/** Formats milliseconds compactly ("1m30s", "250ms"), the inverse of {@link parseDuration}. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const parts: string[] = [];
  let rest = Math.round(ms);
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1_000],
    ["ms", 1],
  ] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
  }
  return parts.join("");
}
