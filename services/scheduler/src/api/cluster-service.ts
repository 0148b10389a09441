/**
 * ClusterService over gRPC: the executor sessions attached to this scheduler, from the engine's
 * live state (engine/executors.ts), a page at a time.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import { ApiError, unary } from "@nexusflow/common";
import { checkTokenFilters, filterDigest, isDigest, pageSizeOf } from "../persistence/page-token.js";
import {
  type ExecutorSession,
  ExecutorSessionSchema,
  type ListExecutorsRequest,
  ListExecutorsResponseSchema,
} from "@nexusflow/gen";
import { type ExecutorView, compareKeys } from "../engine/executors.js";

/** The task type names executors may advertise (as the session's Attach checks them). */
const TYPE_NAME = /^[a-z][a-z0-9._-]{0,62}$/;
/** Longest page token we hand out: two ids of at most 200 characters, JSON, base64url. */
const MAX_PAGE_TOKEN = 2048;

/** What ClusterService reads from the engine. */
export interface ClusterSource {
  /** The attached sessions, ordered by executor id then session id. */
  executors(): ExecutorView[];
}

/** The position after `view` in the listing of `taskType`'s sessions, as next_page_token. */
export function executorPageToken(view: { executorId: string; sessionId: string }, taskType: string): string {
  return Buffer.from(
    JSON.stringify([view.executorId, view.sessionId, filterDigest([taskType])]),
    "utf8",
  ).toString("base64url");
}

/** The position a page token names; INVALID_ARGUMENT naming page_token when it is not one of ours. */
export function parseExecutorPageToken(token: string): {
  executorId: string;
  sessionId: string;
  /** Digest of the task type listed (filterDigest); absent in tokens from before it was bound. */
  f: string | undefined;
} {
  const bad = (): ApiError =>
    ApiError.invalid("page_token", "not a token from a previous ListExecutors response");
  if (token.length > MAX_PAGE_TOKEN || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (
    !Array.isArray(parsed) ||
    (parsed.length !== 2 && parsed.length !== 3) ||
    typeof parsed[0] !== "string" ||
    typeof parsed[1] !== "string" ||
    !isDigest(parsed[2])
  )
    throw bad();
  return { executorId: parsed[0], sessionId: parsed[1], f: parsed[2] };
}

/** One page of `views` (already ordered) as the request asks; bad fields are INVALID_ARGUMENT. */
export function executorsPage(
  views: readonly ExecutorView[],
  req: Pick<ListExecutorsRequest, "taskType" | "pageSize" | "pageToken">,
): { executors: ExecutorView[]; nextPageToken: string } {
  if (req.taskType !== "" && !TYPE_NAME.test(req.taskType))
    throw ApiError.invalid(
      "task_type",
      `${JSON.stringify(req.taskType.slice(0, 100))} is not a task type (lower case letters, digits, '.', '_', '-'; at most 63 characters)`,
    );
  const size = pageSizeOf(req.pageSize);
  const after = req.pageToken === "" ? undefined : parseExecutorPageToken(req.pageToken);
  if (after !== undefined) checkTokenFilters(after.f, [req.taskType], "task_type");
  const matching = views.filter(
    (v) =>
      (req.taskType === "" || v.taskTypes.some((t) => t.name === req.taskType)) &&
      (after === undefined || compareKeys(v, after) > 0),
  );
  const executors = matching.slice(0, size);
  const last = executors.at(-1);
  return {
    executors,
    nextPageToken: matching.length > size && last !== undefined ? executorPageToken(last, req.taskType) : "",
  };
}

/** A view as the ExecutorSession message. */
export function executorSession(view: ExecutorView): ExecutorSession {
  return create(ExecutorSessionSchema, {
    executorId: view.executorId,
    sessionId: view.sessionId,
    ...(view.attachedAt === undefined ? {} : { attachTime: timestampFromMs(view.attachedAt) }),
    protocolVersion: view.protocolVersion,
    taskTypes: view.taskTypes.map((t) => ({ name: t.name, slotsInUse: t.slotsInUse, queued: t.queued })),
    slots: view.slots,
    slotsInUse: view.slotsInUse,
    credit: view.credit,
    draining: view.draining,
    labels: { ...view.labels },
    version: view.version,
    lastSeenTime: timestampFromMs(view.lastSeenAt),
  });
}

/**
 * Most bytes of sessions one ListExecutors answer carries (a session larger goes alone): a page of
 * sessions that each advertise many types stays well under gRPC's usual 4 MiB receive limit, and
 * next_page_token goes on from the last one carried.
 */
export const LIST_EXECUTORS_PAGE_BYTES = 1024 * 1024;

/** The page's sessions as messages, cut at {@link LIST_EXECUTORS_PAGE_BYTES}. */
export function executorsMessages(
  page: { executors: ExecutorView[]; nextPageToken: string },
  taskType: string,
): {
  executors: ExecutorSession[];
  nextPageToken: string;
} {
  const executors: ExecutorSession[] = [];
  let bytes = 0;
  for (const view of page.executors) {
    const message = executorSession(view);
    const size = toBinary(ExecutorSessionSchema, message).length;
    if (executors.length > 0 && bytes + size > LIST_EXECUTORS_PAGE_BYTES) {
      const last = page.executors[executors.length - 1] as ExecutorView;
      return { executors, nextPageToken: executorPageToken(last, taskType) };
    }
    executors.push(message);
    bytes += size;
  }
  return { executors, nextPageToken: page.nextPageToken };
}

/** The ClusterService implementation for grpc-js. */
export function clusterService(source: ClusterSource): grpc.UntypedServiceImplementation {
  return {
    listExecutors: unary((req: ListExecutorsRequest) => {
      try {
        const page = executorsMessages(executorsPage(source.executors(), req), req.taskType);
        return Promise.resolve(
          create(ListExecutorsResponseSchema, {
            executors: page.executors,
            nextPageToken: page.nextPageToken,
          }),
        );
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }),
  };
}
