/**
 * RateLimitService over gRPC: an operator pauses or resumes a rate limit's key (stored before the
 * answer, so it survives a restart) and lists the buckets. Bad input is INVALID_ARGUMENT naming
 * the field.
 */
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, unary } from "@nexusflow/common";
import {
  ListRateLimitsResponseSchema,
  PauseRateLimitResponseSchema,
  RateLimitBucketSchema,
  ResumeRateLimitResponseSchema,
  type ListRateLimitsRequest,
  type PauseRateLimitRequest,
  type RateLimitBucket,
  type ResumeRateLimitRequest,
} from "@nexusflow/gen";
import { RATE_LIMIT_NAME_PATTERN } from "../dag/index.js";
import type { RateLimitAdmin, RateLimitView } from "../engine/rate-limit-admin.js";
import { type Listing, decodeToken, encodeToken, pageSizeOf } from "../persistence/page-token.js";
import { callPrincipal } from "./auth.js";

/** Longest pause an operator may set. */
export const MAX_OPERATOR_PAUSE_MS = 30 * 24 * 60 * 60 * 1000;
/** Longest note of a pause. */
export const MAX_PAUSE_NOTE_LENGTH = 500;
/** Longest key value. */
export const MAX_RATE_LIMIT_KEY_LENGTH = 1000;

/** A ListRateLimits page token: the last bucket of the page before (bound to the name listed). */
interface BucketPosition {
  n: string;
  k: string;
}

function isPosition(v: unknown): v is BucketPosition {
  const p = v as Partial<BucketPosition> | null;
  return typeof p === "object" && p !== null && typeof p.n === "string" && typeof p.k === "string";
}

function checkName(name: string): void {
  if (name === "") throw ApiError.invalid("name", "the rate limit's name is required");
  if (!RATE_LIMIT_NAME_PATTERN.test(name))
    throw ApiError.invalid(
      "name",
      `${JSON.stringify(name.slice(0, 100))} is no rate limit name: 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
}

function checkText(value: string, field: string, max: number): void {
  if (value.length > max) throw ApiError.invalid(field, `at most ${max} characters, got ${value.length}`);
  if (value.includes("\u0000")) throw ApiError.invalid(field, "contains a NUL character (U+0000)");
}

function untilOf(until: Timestamp | undefined, now: number): number {
  if (until === undefined) throw ApiError.invalid("until", "the time the pause ends is required");
  const ms = timestampDate(until).getTime();
  if (!Number.isFinite(ms)) throw ApiError.invalid("until", "is no time");
  if (ms <= now) throw ApiError.invalid("until", `${new Date(ms).toISOString()} is not in the future`);
  if (ms > now + MAX_OPERATOR_PAUSE_MS) throw ApiError.invalid("until", "at most 30 days ahead");
  return ms;
}

function bucketMessage(v: RateLimitView): RateLimitBucket {
  return create(RateLimitBucketSchema, {
    name: v.name,
    key: v.key,
    tokens: v.tokens,
    asOf: timestampFromMs(v.refilledAt),
    ...(v.pausedUntil === null ? {} : { pausedUntil: timestampFromMs(v.pausedUntil) }),
    pausedBy: v.pausedBy,
    pauseNote: v.pauseNote,
    waiting: v.waiting,
  });
}

/** The service's handlers over `engine`. */
export function rateLimitService(
  limits: Pick<RateLimitAdmin, "pause" | "list">,
): grpc.UntypedServiceImplementation {
  return {
    pauseRateLimit: unary(async (req: PauseRateLimitRequest, call) => {
      checkName(req.name);
      checkText(req.key, "key", MAX_RATE_LIMIT_KEY_LENGTH);
      checkText(req.note, "note", MAX_PAUSE_NOTE_LENGTH);
      const until = untilOf(req.until, Date.now());
      const by = callPrincipal(call.metadata)?.subject ?? "operator";
      const bucket = await limits.pause({ name: req.name, key: req.key, until, by, note: req.note });
      return create(PauseRateLimitResponseSchema, { bucket: bucketMessage(bucket) });
    }),
    resumeRateLimit: unary(async (req: ResumeRateLimitRequest) => {
      checkName(req.name);
      checkText(req.key, "key", MAX_RATE_LIMIT_KEY_LENGTH);
      const bucket = await limits.pause({
        name: req.name,
        key: req.key,
        until: null,
        by: "",
        note: "",
      });
      return create(ResumeRateLimitResponseSchema, { bucket: bucketMessage(bucket) });
    }),
    listRateLimits: unary(async (req: ListRateLimitsRequest) => {
      if (req.name !== "") checkName(req.name);
      const limit = pageSizeOf(req.pageSize);
      const listing: Listing = { filters: [req.name], names: "name" };
      let after: { name: string; key: string } | null = null;
      if (req.pageToken !== "") {
        const p = decodeToken(req.pageToken, isPosition, listing);
        after = { name: p.n, key: p.k };
      }
      const { buckets, more } = await limits.list({ name: req.name, after, limit });
      const last = buckets.at(-1);
      return create(ListRateLimitsResponseSchema, {
        buckets: buckets.map(bucketMessage),
        nextPageToken: more && last !== undefined ? encodeToken({ n: last.name, k: last.key }, listing) : "",
      });
    }),
  };
}
