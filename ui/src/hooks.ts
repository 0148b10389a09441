/** Small hooks the pages share. */
import { useEffect, useRef } from "preact/hooks";
import { poll } from "./polling";

/**
 * Calls `load` now and then every `intervalMs` after the previous call ended, not while the page
 * is hidden (polling.ts), until the component unmounts or `deps` change; each call gets a signal
 * aborted then.
 */
export function usePolling(
  load: (signal: AbortSignal) => Promise<void>,
  intervalMs: number,
  deps: readonly unknown[],
): void {
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    const controller = new AbortController();
    poll((signal) => loadRef.current(signal), intervalMs, controller.signal, document);
    return () => controller.abort();
  }, deps);
}
