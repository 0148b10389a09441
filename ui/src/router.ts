/** Client-side routes under /ui/ (the gateway answers each with index.html). */
import { useEffect, useState } from "preact/hooks";

/** The app's pages. */
export type Route =
  | { page: "runs" }
  | { page: "run"; runId: string }
  | { page: "workflows"; name: string | undefined }
  | { page: "executors" }
  | { page: "schedules"; scheduleId: string | undefined }
  | { page: "events"; eventId: string | undefined };

const BASE = "/ui";

/** A path segment percent-decoded; as it is when its escapes are broken (`%E0%A4%A`, `100%`). */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * The route of a pathname; unknown paths show the runs. Never throws: an address typed or pasted
 * with a broken escape still opens the app (its id as it is, which the API will not find).
 */
export function parseRoute(pathname: string): Route {
  const rest = pathname.startsWith(`${BASE}/`) ? pathname.slice(BASE.length + 1) : "";
  const [first, second] = rest.split("/").map(decodeSegment);
  if (first === "runs" && second !== undefined && second !== "") return { page: "run", runId: second };
  if (first === "executors") return { page: "executors" };
  if (first === "schedules")
    return { page: "schedules", scheduleId: second === undefined || second === "" ? undefined : second };
  if (first === "events")
    return { page: "events", eventId: second === undefined || second === "" ? undefined : second };
  if (first === "workflows")
    return { page: "workflows", name: second === undefined || second === "" ? undefined : second };
  return { page: "runs" };
}

/** The path of a route. */
export function routePath(route: Route): string {
  switch (route.page) {
    case "runs":
      return `${BASE}/runs`;
    case "run":
      return `${BASE}/runs/${encodeURIComponent(route.runId)}`;
    case "executors":
      return `${BASE}/executors`;
    case "schedules":
      return route.scheduleId === undefined
        ? `${BASE}/schedules`
        : `${BASE}/schedules/${encodeURIComponent(route.scheduleId)}`;
    case "events":
      return route.eventId === undefined
        ? `${BASE}/events`
        : `${BASE}/events/${encodeURIComponent(route.eventId)}`;
    case "workflows":
      return route.name === undefined
        ? `${BASE}/workflows`
        : `${BASE}/workflows/${encodeURIComponent(route.name)}`;
  }
}

const listeners = new Set<() => void>();

/** Goes to `route`, adding a history entry. */
export function navigate(route: Route): void {
  window.history.pushState(null, "", routePath(route));
  for (const l of listeners) l();
}

/** The current route, updated on navigation and on back/forward. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.pathname));
  useEffect(() => {
    const update = (): void => setRoute(parseRoute(window.location.pathname));
    listeners.add(update);
    window.addEventListener("popstate", update);
    return () => {
      listeners.delete(update);
      window.removeEventListener("popstate", update);
    };
  }, []);
  return route;
}

/** An onClick for links to app routes: navigates in place unless a modifier asks for a new tab. */
export function linkHandler(route: Route): (e: MouseEvent) => void {
  return (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(route);
  };
}
