/** The session every page gets: the API client, what the token says, and a way to drop it. */
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Api, ArtifactsApi, ClusterApi, EventsApi, SchedulesApi } from "./api";
import { type TokenInfo, hasScope } from "./auth";

/** What every page gets: the API client, what the token says, and a way to ask for another. */
export interface Session {
  api: Api;
  artifacts: ArtifactsApi;
  cluster: ClusterApi;
  schedules: SchedulesApi;
  events: EventsApi;
  token: TokenInfo | undefined;
  /** Drops the token (it was refused) and shows the prompt with `reason`. */
  signOut: (reason?: string) => void;
}

/** Provides the {@link Session} to the pages (set by the app once there is a token). */
export const SessionContext = createContext<Session | undefined>(undefined);

/** The current session; only used below {@link App}, which always provides one. */
export function useSession(): Session {
  const session = useContext(SessionContext);
  if (session === undefined) throw new Error("useSession outside the app");
  return session;
}

/** Whether the session's token may change runs (shows the actions; the server decides). */
export function canWriteRuns(session: Session): boolean {
  return hasScope(session.token, "runs:write");
}
