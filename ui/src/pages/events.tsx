/**
 * Events (EventService): published events, newest first, filtered by key prefix (ListEvents); a
 * selected event (GetEvent) with its payload and each trigger it matched, linking to the run the
 * match started or saying why none started. Refreshed every two seconds. Read-only: publishing is
 * the API's, the CLI's and REST's.
 */
import { EventMatchStatus, type PublishedEvent } from "@nexusflow/gen";
import { useState } from "preact/hooks";
import { describeError, isAborted, isUnauthenticated } from "../api";
import { hasScope } from "../auth";
import { formatTime } from "../format";
import { usePolling } from "../hooks";
import { PagingNav, usePaging } from "../paging";
import { linkHandler, routePath } from "../router";
import { useSession } from "../session";
import { Json } from "./run";
import { RunLink } from "./run-waits";

const PAGE_SIZE = 100;
const REFRESH_MS = 2000;

/** The events page, with `selected`'s details when one is selected. */
export function EventsPage({ selected }: { selected: string | undefined }) {
  const { events, signOut, token } = useSession();
  const allowed = token === undefined || hasScope(token, "runs:read");
  const [prefix, setPrefix] = useState("");
  const paging = usePaging();
  const [list, setList] = useState<PublishedEvent[] | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(
    allowed ? undefined : "Listing events needs a token with the runs:read scope.",
  );
  const { pageToken } = paging;

  usePolling(
    async (signal) => {
      if (!allowed) return;
      try {
        const res = await events.listEvents(
          { keyPrefix: prefix.trim(), pageSize: PAGE_SIZE, pageToken },
          { signal },
        );
        setList(res.events);
        paging.setNext(res.nextPageToken);
        setError(undefined);
      } catch (e) {
        if (isAborted(e)) return;
        if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
        else setError(describeError(e));
      }
    },
    REFRESH_MS,
    [events, prefix, pageToken, allowed],
  );

  return (
    <section aria-labelledby="events-title">
      <h1 id="events-title">Events</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()} aria-label="Filter events">
        <div class="field">
          <label for="filter-event-key">Key prefix</label>
          <input
            id="filter-event-key"
            type="search"
            value={prefix}
            onInput={(e) => {
              setPrefix(e.currentTarget.value);
              paging.reset();
            }}
          />
        </div>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {list === undefined && error === undefined && <p aria-busy="true">Loading events…</p>}
      {list !== undefined && list.length === 0 && <p class="muted">No event.</p>}
      {list !== undefined && list.length > 0 && (
        <table class="events">
          <caption class="visually-hidden">Events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Event</th>
              <th scope="col">Key</th>
              <th scope="col">Published</th>
              <th scope="col">Runs started</th>
            </tr>
          </thead>
          <tbody>
            {list.map((ev) => {
              const route = { page: "events", eventId: ev.eventId } as const;
              return (
                <tr key={ev.eventId} data-event={ev.eventId}>
                  <td>
                    <a
                      class="mono"
                      href={routePath(route)}
                      onClick={linkHandler(route)}
                      aria-current={selected === ev.eventId ? "page" : undefined}
                    >
                      {ev.eventId}
                    </a>
                  </td>
                  <td class="mono">{ev.key}</td>
                  <td>{formatTime(ev.publishTime)}</td>
                  <td>
                    {ev.matches.filter((m) => m.runId !== "").length} of {ev.matches.length}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <PagingNav paging={paging} label="Event pages" />
      {selected !== undefined && allowed && <EventDetails key={selected} eventId={selected} />}
    </section>
  );
}

function EventDetails({ eventId }: { eventId: string }) {
  const { events, signOut } = useSession();
  const [event, setEvent] = useState<PublishedEvent | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  usePolling(
    async (signal) => {
      try {
        setEvent((await events.getEvent({ eventId }, { signal })).event);
        setError(undefined);
      } catch (e) {
        if (isAborted(e)) return;
        if (isUnauthenticated(e)) signOut(`The gateway refused the token: ${describeError(e)}`);
        else setError(describeError(e));
      }
    },
    REFRESH_MS,
    [events, eventId],
  );
  if (error !== undefined)
    return (
      <p class="error" role="alert">
        {error}
      </p>
    );
  if (event === undefined) return <p aria-busy="true">Loading event {eventId}…</p>;
  return (
    <section aria-labelledby="event-title" data-testid="event-details">
      <h2 id="event-title">
        Event <span class="mono">{event.eventId}</span>
      </h2>
      <dl class="summary">
        <dt>Key</dt>
        <dd class="mono">{event.key}</dd>
        <dt>Published</dt>
        <dd>{formatTime(event.publishTime)}</dd>
        <dt>Idempotency key</dt>
        <dd class="mono">{event.idempotencyKey || "—"}</dd>
      </dl>
      <table class="matches">
        <caption>Triggers matched</caption>
        <thead>
          <tr>
            <th scope="col">Workflow</th>
            <th scope="col">Trigger</th>
            <th scope="col">Status</th>
            <th scope="col">Run</th>
          </tr>
        </thead>
        <tbody>
          {event.matches.length === 0 && (
            <tr>
              <td colSpan={4} class="muted">
                No workflow's trigger matched this key.
              </td>
            </tr>
          )}
          {event.matches.map((m) => {
            const wf = { page: "workflows", name: m.workflowName } as const;
            return (
              <tr key={`${m.workflowName}-${m.triggerIndex}`}>
                <td>
                  <a href={routePath(wf)} onClick={linkHandler(wf)}>
                    {m.workflowName}
                  </a>{" "}
                  <span class="muted">v{m.workflowVersion}</span>
                </td>
                <td>#{m.triggerIndex + 1}</td>
                <td>{(EventMatchStatus[m.status] ?? "UNSPECIFIED").toLowerCase()}</td>
                <td>
                  {m.runId !== "" ? <RunLink runId={m.runId} /> : <span class="error">{m.error || "—"}</span>}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <Json title="Payload" value={event.payload} />
    </section>
  );
}
