/** The app shell: the token prompt until there is a token, then the navigation and the page. */
import { useCallback, useMemo, useState } from "preact/hooks";
import { createApi, describeError } from "./api";
import { decodeToken, forgetToken, storeToken, storedToken } from "./auth";
import { type Route, linkHandler, routePath, useRoute } from "./router";
import { EventsPage } from "./pages/events";
import { ExecutorsPage } from "./pages/executors";
import { RunPage } from "./pages/run";
import { RunsPage } from "./pages/runs";
import { SchedulesPage } from "./pages/schedules";
import { TokenPrompt } from "./pages/token-prompt";
import { WorkflowsPage } from "./pages/workflows";
import { type Session, SessionContext, useSession } from "./session";

/** The root component. */
export function App() {
  const [token, setToken] = useState(storedToken);
  const [reason, setReason] = useState<string | undefined>(undefined);
  const signOut = useCallback((why?: string) => {
    forgetToken();
    setToken(undefined);
    setReason(why);
  }, []);
  const session = useMemo<Session | undefined>(() => {
    if (token === undefined) return undefined;
    // A call refused as unauthenticated, wherever on a page, asks for a token again; one of an
    // earlier token (answered after another was given) does not sign the new one out.
    const refused = (e: unknown): void => {
      if (storedToken() === token) signOut(`The gateway refused the token: ${describeError(e)}`);
    };
    return { ...createApi(token, refused), token: decodeToken(token), signOut };
  }, [token, signOut]);
  if (session === undefined)
    return (
      <TokenPrompt
        reason={reason}
        onToken={(t) => {
          storeToken(t);
          setReason(undefined);
          setToken(t);
        }}
      />
    );
  return (
    <SessionContext.Provider value={session}>
      <Shell />
    </SessionContext.Provider>
  );
}

function NavLink({ route, current, children }: { route: Route; current: boolean; children: string }) {
  return (
    <a href={routePath(route)} onClick={linkHandler(route)} aria-current={current ? "page" : undefined}>
      {children}
    </a>
  );
}

function Shell() {
  const route = useRoute();
  const session = useSession();
  const info = session.token;
  const scopes = info === undefined ? "not a JWT" : [...info.scopes].join(" ") || "no scopes";
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Nexusflow</span>
        <nav aria-label="Main">
          <NavLink route={{ page: "runs" }} current={route.page === "runs" || route.page === "run"}>
            Runs
          </NavLink>
          <NavLink route={{ page: "workflows", name: undefined }} current={route.page === "workflows"}>
            Workflows
          </NavLink>
          <NavLink route={{ page: "schedules", scheduleId: undefined }} current={route.page === "schedules"}>
            Schedules
          </NavLink>
          <NavLink route={{ page: "events", eventId: undefined }} current={route.page === "events"}>
            Events
          </NavLink>
          <NavLink route={{ page: "executors" }} current={route.page === "executors"}>
            Executors
          </NavLink>
        </nav>
        <div class="who" aria-label="Signed in as">
          <span class="subject" title={info?.subject}>
            {info?.subject ?? "token"}
          </span>{" "}
          <span class="scopes" data-testid="scopes">
            {scopes}
          </span>
          <button type="button" class="secondary" onClick={() => session.signOut()}>
            Forget token
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {route.page === "runs" && <RunsPage />}
        {route.page === "run" && <RunPage key={route.runId} runId={route.runId} />}
        {route.page === "workflows" && <WorkflowsPage selected={route.name} />}
        {route.page === "executors" && <ExecutorsPage />}
        {route.page === "schedules" && <SchedulesPage selected={route.scheduleId} />}
        {route.page === "events" && <EventsPage selected={route.eventId} />}
      </main>
    </>
  );
}
