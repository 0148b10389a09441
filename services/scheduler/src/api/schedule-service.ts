/** ScheduleService over gRPC: validates requests, keeps schedules in their store, wakes the fire loop. */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, Code, isApiError, unary } from "@nexusflow/common";
import {
  BackfillScheduleResponseSchema,
  CreateScheduleResponseSchema,
  DeleteScheduleResponseSchema,
  GetScheduleResponseSchema,
  ListSchedulesResponseSchema,
  PauseScheduleResponseSchema,
  ResumeScheduleResponseSchema,
  TriggerScheduleResponseSchema,
  type BackfillScheduleRequest,
  type CreateScheduleRequest,
  type DeleteScheduleRequest,
  type GetScheduleRequest,
  type ListSchedulesRequest,
  type PauseScheduleRequest,
  type ResumeScheduleRequest,
  type TriggerScheduleRequest,
} from "@nexusflow/gen";
import { ConcurrencyKeyError, workflowKeys } from "../core/index.js";
import { contentHash } from "../dag/index.js";
import { checkRunInput, type Definitions } from "../engine/definitions.js";
import { fireTimesBetween } from "../dag/cron.js";
import type { FireOutcome, FireStarter } from "../schedules/fires.js";
import { checkNote, checkScheduleId, checkScheduleRef, cronOf, normalizeSpec } from "../dag/schedule-spec.js";
import { type FireRow, type FireStore, timeFireKey } from "../schedules/fire-store.js";
import type { ScheduleRow, ScheduleStore } from "../schedules/store.js";
import { fireView, scheduleView, specInput } from "./schedule-convert.js";

/** Most fire times one BackfillSchedule call starts. */
export const MAX_BACKFILL_FIRES = 1000;
/** How many recent fires a schedule view carries. */
const RECENT_FIRES = 10;

/** What the service needs besides the store. */
export interface ScheduleServiceDeps {
  store: ScheduleStore;
  /** The schedules' fires. */
  fireStore: FireStore;
  definitions: Pick<Definitions, "resolve">;
  fires: Pick<FireStarter, "drive">;
  /** Makes the fire loop look again (a schedule was created, resumed or deleted). */
  wake(): void;
}

/** `e` (an engine error about a run's workflow or input) as one about the request's `spec.` fields. */
function aboutSpec(e: unknown): unknown {
  if (!isApiError(e)) return e;
  if (e.code === Code.NOT_FOUND)
    return new ApiError(Code.NOT_FOUND, `spec.workflow_name: ${e.message}`, [
      { field: "spec.workflow_name", description: e.message },
    ]);
  if (e.code !== Code.INVALID_ARGUMENT) return e;
  return new ApiError(
    e.code,
    `spec.${e.message}`,
    e.violations.map((v) => ({ field: `spec.${v.field}`, description: v.description })),
  );
}

function time(ts: Timestamp | undefined, field: string): Date {
  if (ts === undefined) throw ApiError.invalid(field, "a time is required");
  if (ts.nanos < 0 || ts.nanos > 999_999_999 || ts.seconds < 0n || ts.seconds > 253_402_300_799n)
    throw ApiError.invalid(field, "must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
  return timestampDate(ts);
}

/**
 * The field of the stored spec a refused run faults: the engine names its own request's fields
 * (`input`), which the caller of TriggerSchedule or BackfillSchedule never sent.
 */
function specFieldOf(cause: unknown): string {
  if (!isApiError(cause)) return "spec";
  if (cause.code === Code.NOT_FOUND) return "spec.workflow_name";
  const field = cause.violations[0]?.field ?? "";
  return field === "input" || field.startsWith("input.") || field.startsWith("input[")
    ? `spec.${field}`
    : "spec";
}

/**
 * The run of a driven fire, or the error to answer with: UNAVAILABLE when it could not start for
 * now (it stays STARTING and the fire loop starts it), FAILED_PRECONDITION when the engine refused
 * it for good (the request was fine; the schedule's stored spec no longer fits its workflow).
 */
function runOf(scheduleId: string, outcome: FireOutcome | undefined): { runId: string; created: boolean } {
  if (outcome === undefined) throw new ApiError(Code.INTERNAL, "the fire was not driven");
  if ("runId" in outcome) return outcome;
  if (outcome.retry)
    throw new ApiError(
      Code.UNAVAILABLE,
      `the run could not be started now (${outcome.error}); the scheduler starts it as soon as it can`,
    );
  throw refused(scheduleId, [outcome]);
}

/** FAILED_PRECONDITION for fires the engine refused for good, naming the stored spec's field. */
function refused(scheduleId: string, outcomes: readonly { error: string; cause?: unknown }[]): ApiError {
  const first = outcomes[0];
  const why = `${specFieldOf(first?.cause)}: ${first?.error ?? "refused"}`;
  const id = JSON.stringify(scheduleId);
  const head =
    outcomes.length === 1
      ? `schedule ${id} cannot start its run: ${why}; the fire is recorded as failed`
      : `schedule ${id} cannot start the runs of ${outcomes.length} fires (the first: ${why}); they are recorded as failed`;
  return new ApiError(
    Code.FAILED_PRECONDITION,
    `${head} (schedules get shows them); register a workflow version that accepts the spec, or create the schedule again`,
  );
}

/** The ScheduleService implementation for grpc-js. */
export function scheduleService(deps: ScheduleServiceDeps): grpc.UntypedServiceImplementation {
  const { store, fireStore } = deps;
  const view = async (row: ScheduleRow): Promise<ReturnType<typeof scheduleView>> =>
    scheduleView(row, await fireStore.recentFires(row.uid, RECENT_FIRES));
  const pending = (row: ScheduleRow, fires: readonly FireRow[]) =>
    fires.map((f) => ({ ...f, scheduleId: row.scheduleId, spec: row.spec }));

  return {
    createSchedule: unary(async (req: CreateScheduleRequest) => {
      checkScheduleId(req.scheduleId);
      const { spec, cron } = normalizeSpec(specInput(req.spec));
      checkNote(req.note);
      try {
        const def = await deps.definitions.resolve(spec.workflowName, spec.workflowVersion);
        checkRunInput(def.workflow, spec.input);
        // The workflow's concurrency keys over the input, as StartRun checks them at every fire.
        workflowKeys({ id: "", workflow: def.workflow, input: spec.input });
      } catch (e) {
        if (e instanceof ConcurrencyKeyError) throw ApiError.invalid("spec.input", e.message);
        throw aboutSpec(e);
      }
      const now = new Date();
      const { row, created } = await store.insert({
        scheduleId: req.scheduleId,
        uid: randomUUID(),
        spec,
        paused: req.paused,
        note: req.note,
        cursorAt: now,
        lastFireAt: null,
        nextFireAt: req.paused ? null : (cron.next(now) ?? null),
        bufferedFireAt: null,
        startedCount: 0,
        skippedCount: 0,
        missedCount: 0,
        createdAt: now,
        updatedAt: now,
      });
      if (!created && contentHash(row.spec) !== contentHash(spec))
        throw new ApiError(
          Code.ALREADY_EXISTS,
          `schedule ${JSON.stringify(req.scheduleId)} exists with another spec; delete it first or use another id`,
        );
      if (created) deps.wake();
      return create(CreateScheduleResponseSchema, { schedule: await view(row), created });
    }),

    getSchedule: unary(async (req: GetScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      return create(GetScheduleResponseSchema, { schedule: await view(await store.get(req.scheduleId)) });
    }),

    listSchedules: unary(async (req: ListSchedulesRequest) => {
      if (req.workflowName.includes("\u0000"))
        throw ApiError.invalid("workflow_name", "contains a NUL character (U+0000)");
      const page = await store.list(req.workflowName, req.pageSize, req.pageToken);
      const schedules = await Promise.all(page.rows.map((row) => view(row)));
      return create(ListSchedulesResponseSchema, { schedules, nextPageToken: page.nextPageToken });
    }),

    deleteSchedule: unary(async (req: DeleteScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      const row = await store.get(req.scheduleId);
      if (row.declaredVersion !== null)
        throw new ApiError(
          Code.FAILED_PRECONDITION,
          `schedule ${JSON.stringify(req.scheduleId)} is declared by workflow ${row.spec.workflowName} v${row.declaredVersion}: register a version of the workflow without it (or pause it)`,
        );
      await store.delete(req.scheduleId);
      deps.wake();
      return create(DeleteScheduleResponseSchema, {});
    }),

    pauseSchedule: unary(async (req: PauseScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      checkNote(req.note);
      const row = await store.setPaused(req.scheduleId, true, req.note, new Date(), () => null);
      return create(PauseScheduleResponseSchema, { schedule: await view(row) });
    }),

    resumeSchedule: unary(async (req: ResumeScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      checkNote(req.note);
      const row = await store.setPaused(
        req.scheduleId,
        false,
        req.note,
        new Date(),
        (r) => cronOf(r.spec).next(r.cursorAt) ?? null,
      );
      deps.wake();
      return create(ResumeScheduleResponseSchema, { schedule: await view(row) });
    }),

    triggerSchedule: unary(async (req: TriggerScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      if (req.idempotencyKey.length > 100)
        throw ApiError.invalid("idempotency_key", "at most 100 characters");
      if (req.idempotencyKey.includes("\u0000"))
        throw ApiError.invalid("idempotency_key", "contains a NUL character (U+0000)");
      const row = await store.get(req.scheduleId);
      const key = `trigger:${req.idempotencyKey === "" ? randomUUID() : req.idempotencyKey}`;
      const [fire] = await fireStore.insertFires(
        row.uid,
        [{ fireKey: key, fireAt: new Date(), origin: "TRIGGERED" }],
        new Date(),
      );
      const [outcome] = await deps.fires.drive(pending(row, fire === undefined ? [] : [fire]));
      const { runId, created } = runOf(row.scheduleId, outcome);
      return create(TriggerScheduleResponseSchema, {
        fire: fireView({ ...(fire as FireRow), runId }),
        created,
      });
    }),

    backfillSchedule: unary(async (req: BackfillScheduleRequest) => {
      checkScheduleRef(req.scheduleId);
      const start = time(req.startTime, "start_time");
      const end = time(req.endTime, "end_time");
      if (end.getTime() <= start.getTime()) throw ApiError.invalid("end_time", "must be after start_time");
      const now = new Date();
      if (end.getTime() > now.getTime()) throw ApiError.invalid("end_time", "must not be in the future");
      const row = await store.get(req.scheduleId);
      // [start, end): strictly after the instant before start, up to the instant before end.
      const times = fireTimesBetween(
        cronOf(row.spec),
        new Date(start.getTime() - 1),
        new Date(end.getTime() - 1),
        MAX_BACKFILL_FIRES + 1,
      );
      if (times.length > MAX_BACKFILL_FIRES)
        throw ApiError.invalid(
          "end_time",
          `the range holds more than ${MAX_BACKFILL_FIRES} fire times; backfill it in smaller ranges`,
        );
      const fires = await fireStore.insertFires(
        row.uid,
        times.map((t) => ({ fireKey: timeFireKey(t), fireAt: t, origin: "BACKFILL" as const })),
        now,
      );
      const outcomes = await deps.fires.drive(pending(row, fires));
      // Fires that could not start for now first (UNAVAILABLE: a retry answers them all), then
      // those refused for good (the others started, and a retry answers them).
      for (const o of outcomes) if ("retry" in o && o.retry) runOf(row.scheduleId, o);
      const failed = outcomes.flatMap((o) => ("error" in o ? [o] : []));
      if (failed.length > 0) throw refused(row.scheduleId, failed);
      const runs = outcomes.map((o) => runOf(row.scheduleId, o));
      return create(BackfillScheduleResponseSchema, {
        fires: fires.map((f, i) => fireView({ ...f, runId: runs[i]?.runId ?? null })),
        startedCount: runs.filter((r) => r.created).length,
      });
    }),
  };
}
