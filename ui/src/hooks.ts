/** Small hooks the pages share. */
import { useEffect, useRef } from "preact/hooks";

/**
 * Calls `load` now and then every `intervalMs` after the previous call ended, until the component
 * unmounts or `deps` change; each call gets a signal aborted then.
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = (): void => {
      loadRef
        .current(controller.signal)
        .catch(() => undefined)
        .finally(() => {
          if (!controller.signal.aborted) timer = setTimeout(tick, intervalMs);
        });
    };
    tick();
    return () => {
      controller.abort();
      if (timer !== undefined) clearTimeout(timer);
    };
  }, deps);
}
