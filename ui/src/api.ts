/**
 * The gateway's WorkflowService, ArtifactService, ClusterService, ScheduleService and EventService over Connect (binary protobuf over HTTP), every call with
 * the bearer token.
 */
import { Code, ConnectError, type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  ArtifactService,
  ClusterService,
  EventService,
  ScheduleService,
  WorkflowService,
} from "@nexusflow/gen";

/** A typed WorkflowService client. */
export type Api = Client<typeof WorkflowService>;
/** A typed ArtifactService client (artifacts, task logs). */
export type ArtifactsApi = Client<typeof ArtifactService>;
/** A typed ClusterService client (executor sessions). */
export type ClusterApi = Client<typeof ClusterService>;

/** A typed ScheduleService client (cron schedules). */
export type SchedulesApi = Client<typeof ScheduleService>;
/** A typed EventService client (published events and the runs they started). */
export type EventsApi = Client<typeof EventService>;

/**
 * Clients of the gateway this page was served by, sending `token` with every call. Any call the
 * gateway refuses as unauthenticated (an expired or revoked token, in the middle of a session),
 * whichever part of a page made it and whether it fails at once or within a stream, is reported
 * to `onUnauthenticated` (which asks for a token again) before the caller sees its error.
 */
export function createApi(
  token: string,
  onUnauthenticated: (e: ConnectError) => void = () => undefined,
): {
  api: Api;
  artifacts: ArtifactsApi;
  cluster: ClusterApi;
  schedules: SchedulesApi;
  events: EventsApi;
} {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const report = (e: unknown): void => {
    if (isUnauthenticated(e)) onUnauthenticated(e as ConnectError);
  };
  async function* reported<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
    try {
      yield* messages;
    } catch (e) {
      report(e);
      throw e;
    }
  }
  const refused: Interceptor = (next) => async (req) => {
    try {
      const res = await next(req);
      return res.stream ? { ...res, message: reported(res.message) } : res;
    } catch (e) {
      report(e);
      throw e;
    }
  };
  // Binary protobuf: a WatchRun message carries the whole run, and a run of a thousand tasks
  // decodes several times faster from binary than from JSON.
  const transport = createConnectTransport({
    baseUrl: window.location.origin,
    interceptors: [refused, auth],
    useBinaryFormat: true,
  });
  return {
    api: createClient(WorkflowService, transport),
    artifacts: createClient(ArtifactService, transport),
    cluster: createClient(ClusterService, transport),
    schedules: createClient(ScheduleService, transport),
    events: createClient(EventService, transport),
  };
}

/** A call's error as one line for the page, with its code. */
export function describeError(e: unknown): string {
  const err = ConnectError.from(e);
  return `${Code[err.code]}: ${err.rawMessage}`;
}

/** Whether `e` says the token is missing, invalid or expired. */
export function isUnauthenticated(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Unauthenticated;
}

/** Whether `e` is a call cut short by our own abort (a page left, a filter changed). */
export function isAborted(e: unknown): boolean {
  return (
    (e instanceof ConnectError && e.code === Code.Canceled) ||
    (e instanceof DOMException && e.name === "AbortError")
  );
}

/**
 * Whether asking again cannot help: the thing is gone (NotFound: a run deleted by retention), the
 * token may not see it, or the request itself is refused. A stream ended by such an error is not
 * opened again.
 */
export function isFinal(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return false;
  return [
    Code.NotFound,
    Code.PermissionDenied,
    Code.InvalidArgument,
    Code.FailedPrecondition,
    Code.OutOfRange,
    Code.Unimplemented,
  ].includes(e.code);
}
