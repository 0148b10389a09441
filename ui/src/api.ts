/** The gateway's WorkflowService over Connect (JSON over HTTP), every call with the bearer token. */
import { Code, ConnectError, type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { WorkflowService } from "@nexusflow/gen";

/** A typed WorkflowService client. */
export type Api = Client<typeof WorkflowService>;

/** A client of the gateway this page was served by, sending `token` with every call. */
export function createApi(token: string): Api {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(
    WorkflowService,
    createConnectTransport({ baseUrl: window.location.origin, interceptors: [auth] }),
  );
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
