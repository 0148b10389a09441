/**
 * Cron expressions and time zones, the pure part: parsing with the field at fault named, and the
 * fire times of an expression after an instant. croner does the calendar arithmetic in the IANA
 * zone: a local time that a daylight-saving change skips fires at the change, a local time that
 * occurs twice fires once (the first time), and an interval expression (every 30 minutes) keeps
 * its pace in real time across both changes.
 */
import { ApiError } from "@nexusflow/common";
import { Cron } from "croner";

/** A parsed cron expression in its time zone. */
export interface CronSchedule {
  /** The expression as given. */
  readonly expression: string;
  /** The IANA zone (or "UTC"). */
  readonly timeZone: string;
  /** The first fire time strictly after `after`, or undefined when the expression has no more. */
  next(after: Date): Date | undefined;
}

/** Longest cron expression accepted. */
const MAX_EXPRESSION_LENGTH = 200;

/** Whether `zone` is an IANA time zone this runtime knows (ICU's list, plus aliases it accepts). */
export function isTimeZone(zone: string): boolean {
  if (zone === "" || zone.length > 64) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `expression` (five fields, or six with seconds first, or an @nickname) in `timeZone`
 * (empty means UTC): INVALID_ARGUMENT naming `cronField` or `zoneField` when either is wrong.
 */
export function parseCron(
  expression: string,
  timeZone: string,
  cronField = "cron",
  zoneField = "time_zone",
): CronSchedule {
  const zone = timeZone === "" ? "UTC" : timeZone;
  if (!isTimeZone(zone))
    throw ApiError.invalid(
      zoneField,
      `${JSON.stringify(timeZone)} is not an IANA time zone (e.g. Europe/Lisbon)`,
    );
  const text = expression.trim();
  if (text === "") throw ApiError.invalid(cronField, "a cron expression is required");
  if (text.length > MAX_EXPRESSION_LENGTH)
    throw ApiError.invalid(cronField, `at most ${MAX_EXPRESSION_LENGTH} characters`);
  const fields = text.split(/\s+/).length;
  if (!text.startsWith("@") && fields !== 5 && fields !== 6)
    throw ApiError.invalid(
      cronField,
      `expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first; got ${fields}`,
    );
  let cron: Cron;
  try {
    cron = new Cron(text, { timezone: zone, paused: true, mode: "5-or-6-parts" });
  } catch (e) {
    throw ApiError.invalid(cronField, `not a valid cron expression: ${(e as Error).message}`);
  }
  // Valid fields that never meet (February 30th) would make a schedule that never fires.
  if (cron.nextRun() === null) throw ApiError.invalid(cronField, "the expression never fires");
  // croner applies the fixed-time DST rules only when second, minute and hour each hold one value:
  // a list or range of fixed times ("30 2,14 * * *") is one fixed-time Cron per time of day.
  const parts = cron.getPattern() === undefined ? [] : fixedTimes(text);
  const crons =
    parts.length > 1
      ? parts.map((p) => new Cron(p, { timezone: zone, paused: true, mode: "6-part" }))
      : [cron];
  return {
    expression: text,
    timeZone: zone,
    next(after: Date): Date | undefined {
      let best: Date | undefined;
      for (const c of crons) {
        const t = c.nextRun(after);
        if (t !== null && (best === undefined || t.getTime() < best.getTime())) best = t;
      }
      return best;
    },
  };
}

/**
 * Six-field patterns, one per time of day, when the second, minute and hour fields are values,
 * lists or ranges (no `*` or `/`) of at most 64 times together; none otherwise.
 */
function fixedTimes(text: string): string[] {
  if (text.startsWith("@")) return [];
  const fields = text.split(/\s+/);
  const [sec = "", min = "", hour = "", ...rest] = fields.length === 6 ? fields : ["0", ...fields];
  const values = (field: string): number[] | undefined => {
    if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(field)) return undefined;
    return field.split(",").flatMap((part) => {
      const [from = 0, to = from] = part.split("-").map(Number);
      return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
    });
  };
  const [s, m, h] = [values(sec), values(min), values(hour)];
  if (s === undefined || m === undefined || h === undefined || s.length * m.length * h.length > 64) return [];
  return h.flatMap((hh) => m.flatMap((mm) => s.map((ss) => `${ss} ${mm} ${hh} ${rest.join(" ")}`)));
}

/** The next `n` fire times strictly after `after`. */
export function nextFireTimes(cron: CronSchedule, after: Date, n: number): Date[] {
  const out: Date[] = [];
  let at = after;
  while (out.length < n) {
    const next = cron.next(at);
    if (next === undefined) break;
    out.push(next);
    at = next;
  }
  return out;
}

/**
 * The fire times in (`after`, `until`], at most `limit` of them (the caller continues from the
 * last one when the limit is reached).
 */
export function fireTimesBetween(cron: CronSchedule, after: Date, until: Date, limit: number): Date[] {
  const out: Date[] = [];
  let at = after;
  while (out.length < limit) {
    const next = cron.next(at);
    if (next === undefined || next.getTime() > until.getTime()) break;
    out.push(next);
    at = next;
  }
  return out;
}
