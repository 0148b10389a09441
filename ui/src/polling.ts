/**
 * The schedule behind the pages' polling (hooks.ts usePolling): `load` now, then again
 * `intervalMs` after each call ends; while the page is hidden (another tab, a minimised window) no
 * call is made, and the next one goes as soon as the page is shown again. A page opened in the
 * background still loads once, so it has something to show.
 */

/** What {@link poll} needs of the page: document's visibility and its change event. */
export interface Visibility {
  readonly hidden: boolean;
  addEventListener(type: "visibilitychange", listener: () => void): void;
  removeEventListener(type: "visibilitychange", listener: () => void): void;
}

/** Starts polling; `signal` stops it (and is given to each call). */
export function poll(
  load: (signal: AbortSignal) => Promise<void>,
  intervalMs: number,
  signal: AbortSignal,
  page: Visibility,
): void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let inFlight = false;
  /** A call is due but the page is hidden: made when it is shown. */
  let due = false;
  const tick = (): void => {
    timer = undefined;
    if (signal.aborted) return;
    inFlight = true;
    load(signal)
      .catch(() => undefined)
      .finally(() => {
        inFlight = false;
        if (signal.aborted) return;
        if (page.hidden) due = true;
        else timer = setTimeout(next, intervalMs);
      });
  };
  const next = (): void => {
    timer = undefined;
    if (page.hidden) due = true;
    else tick();
  };
  const shown = (): void => {
    if (page.hidden || signal.aborted || inFlight || !due) return;
    due = false;
    tick();
  };
  page.addEventListener("visibilitychange", shown);
  signal.addEventListener(
    "abort",
    () => {
      page.removeEventListener("visibilitychange", shown);
      if (timer !== undefined) clearTimeout(timer);
    },
    { once: true },
  );
  tick();
}
