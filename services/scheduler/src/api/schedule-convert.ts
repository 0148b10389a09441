/** ScheduleService messages to and from the scheduler's schedule model (schedules/). */
import { create } from "@bufbuild/protobuf";
import { type Duration, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ApiError, jsonToValue, valueToJsonChecked } from "@nexusflow/common";
import {
  CatchUpPolicy,
  FireOrigin,
  OverlapPolicy,
  type Schedule,
  ScheduleDeclarationSchema,
  ScheduleFireSchema,
  type ScheduleFire,
  ScheduleSchema,
  ScheduleSpecSchema,
  type ScheduleSpec as ScheduleSpecMessage,
} from "@nexusflow/gen";
import { nextFireTimes } from "../dag/cron.js";
import { cronOf, type ScheduleSpecInput, type ScheduleSpec } from "../dag/schedule-spec.js";
import type { FireRow } from "../schedules/fire-store.js";
import type { ScheduleRow } from "../schedules/store.js";

const OVERLAP: Record<OverlapPolicy, ScheduleSpec["overlapPolicy"] | undefined> = {
  [OverlapPolicy.UNSPECIFIED]: undefined,
  [OverlapPolicy.SKIP]: "SKIP",
  [OverlapPolicy.BUFFER_ONE]: "BUFFER_ONE",
  [OverlapPolicy.ALLOW_ALL]: "ALLOW_ALL",
  [OverlapPolicy.CANCEL_OTHER]: "CANCEL_OTHER",
  [OverlapPolicy.TERMINATE_OTHER]: "TERMINATE_OTHER",
};
const CATCH_UP: Record<CatchUpPolicy, ScheduleSpec["catchUpPolicy"] | undefined> = {
  [CatchUpPolicy.UNSPECIFIED]: undefined,
  [CatchUpPolicy.OFF]: "OFF",
  [CatchUpPolicy.LAST]: "LAST",
  [CatchUpPolicy.ALL]: "ALL",
};
const ORIGIN: Record<FireRow["origin"], FireOrigin> = {
  SCHEDULED: FireOrigin.SCHEDULED,
  TRIGGERED: FireOrigin.TRIGGERED,
  BACKFILL: FireOrigin.BACKFILL,
};

/** Milliseconds of a Duration, or INVALID_ARGUMENT naming `field`. */
function durationMs(d: Duration | undefined, field: string): number | undefined {
  if (d === undefined) return undefined;
  if (d.seconds < 0n || d.nanos < 0 || d.nanos > 999_999_999)
    throw ApiError.invalid(field, "must be a positive duration");
  if (d.seconds > 10n ** 12n) throw ApiError.invalid(field, "must be from 1 second to 366 days");
  return Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
}

/** The request's spec before defaults; INVALID_ARGUMENT naming a field for an unknown enum value. */
export function specInput(spec: ScheduleSpecMessage | undefined): ScheduleSpecInput {
  if (spec === undefined) throw ApiError.invalid("spec", "a spec (cron, workflow_name, ...) is required");
  if (!(spec.overlapPolicy in OVERLAP))
    throw ApiError.invalid("spec.overlap_policy", `unknown overlap policy ${spec.overlapPolicy}`);
  if (!(spec.catchUpPolicy in CATCH_UP))
    throw ApiError.invalid("spec.catch_up_policy", `unknown catch-up policy ${spec.catchUpPolicy}`);
  return {
    cron: spec.cron,
    timeZone: spec.timeZone,
    workflowName: spec.workflowName,
    workflowVersion: spec.workflowVersion,
    input: valueToJsonChecked(spec.input, "spec.input"),
    labels: { ...spec.labels },
    overlapPolicy: OVERLAP[spec.overlapPolicy],
    maxConcurrentRuns: spec.maxConcurrentRuns,
    catchUpPolicy: CATCH_UP[spec.catchUpPolicy],
    catchUpWindowMs: durationMs(spec.catchUpWindow, "spec.catch_up_window"),
  };
}

function enumOf<E extends number, N>(table: Record<E, N | undefined>, name: N): E {
  for (const [k, v] of Object.entries(table)) if (v === name) return Number(k) as E;
  return 0 as E;
}

/** A fire as the API shows it. */
export function fireView(fire: FireRow): ScheduleFire {
  return create(ScheduleFireSchema, {
    fireTime: timestampFromDate(fire.fireAt),
    runId: fire.runId ?? "",
    origin: ORIGIN[fire.origin],
    error: fire.runId === null && fire.status === "FAILED" ? (fire.error ?? "") : "",
  });
}

/** A schedule as the API shows it: its spec, state, next ten fire times and recent fires. */
export function scheduleView(row: ScheduleRow, recent: readonly FireRow[]): Schedule {
  const s = row.spec;
  const ts = (d: Date | null): ReturnType<typeof timestampFromDate> | undefined =>
    d === null ? undefined : timestampFromDate(d);
  return create(ScheduleSchema, {
    scheduleId: row.scheduleId,
    spec: create(ScheduleSpecSchema, {
      cron: s.cron,
      timeZone: s.timeZone,
      workflowName: s.workflowName,
      workflowVersion: s.workflowVersion,
      input: jsonToValue(s.input),
      labels: s.labels,
      overlapPolicy: enumOf(OVERLAP, s.overlapPolicy),
      maxConcurrentRuns: s.maxConcurrentRuns,
      catchUpPolicy: enumOf(CATCH_UP, s.catchUpPolicy),
      catchUpWindow: {
        seconds: BigInt(Math.floor(s.catchUpWindowMs / 1000)),
        nanos: (s.catchUpWindowMs % 1000) * 1e6,
      },
    }),
    paused: row.paused,
    note: row.note,
    // None while paused, or parked by the fire loop (an expression this runtime cannot evaluate).
    nextFireTimes:
      row.paused || row.nextFireAt === null
        ? []
        : nextFireTimes(cronOf(s), row.cursorAt, 10).map((d) => timestampFromDate(d)),
    lastFireTime: ts(row.lastFireAt),
    bufferedFireTime: ts(row.bufferedFireAt),
    startedCount: BigInt(row.startedCount),
    skippedCount: BigInt(row.skippedCount),
    missedCount: BigInt(row.missedCount),
    // A fire still STARTING has neither a run nor an error yet.
    recentFires: recent.filter((f) => f.status !== "STARTING").map(fireView),
    createTime: timestampFromDate(row.createdAt),
    updateTime: timestampFromDate(row.updatedAt),
    declaredBy:
      row.declaredVersion === null
        ? undefined
        : create(ScheduleDeclarationSchema, {
            workflowName: s.workflowName,
            workflowVersion: row.declaredVersion,
            id: row.scheduleId.slice(s.workflowName.length + 1),
          }),
  });
}
