/**
 * The pages' polling (ui/src/polling.ts): every interval after the previous call ended, none while
 * the page is hidden, one at once when it is shown again. Before, a hidden tab polled for ever.
 * Time is node:test's mock timers: nothing here waits on the clock.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { poll, type Visibility } from "../src/polling";

/** A page whose visibility the test sets. */
class Page implements Visibility {
  hidden = false;
  readonly listeners = new Set<() => void>();
  addEventListener(_type: "visibilitychange", listener: () => void): void {
    this.listeners.add(listener);
  }
  removeEventListener(_type: "visibilitychange", listener: () => void): void {
    this.listeners.delete(listener);
  }
  set(hidden: boolean): void {
    this.hidden = hidden;
    for (const l of [...this.listeners]) l();
  }
}

/** Lets the settled load's `finally` run (promise callbacks, not timers). */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe("polling", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
  afterEach(() => mock.timers.reset());

  it("polls every interval while shown, not while hidden, and at once when shown again", async () => {
    const page = new Page();
    const controller = new AbortController();
    let calls = 0;
    poll(() => Promise.resolve(void calls++), 1000, controller.signal, page);
    await settle();
    assert.equal(calls, 1, "at once");
    mock.timers.tick(1000);
    await settle();
    assert.equal(calls, 2, "after the interval");
    page.set(true);
    for (let i = 0; i < 10; i++) {
      mock.timers.tick(1000);
      await settle();
    }
    assert.equal(calls, 2, "none while hidden");
    page.set(false);
    await settle();
    assert.equal(calls, 3, "at once when shown");
    mock.timers.tick(1000);
    await settle();
    assert.equal(calls, 4);
    controller.abort();
    mock.timers.tick(5000);
    await settle();
    page.set(true);
    page.set(false);
    await settle();
    assert.equal(calls, 4, "none after the signal");
    assert.equal(page.listeners.size, 0, "its listener removed");
  });

  it("loads once when opened hidden, then waits to be shown; a call in flight is not doubled", async () => {
    const page = new Page();
    page.hidden = true;
    const controller = new AbortController();
    let calls = 0;
    let release: () => void = () => undefined;
    poll(
      () => {
        calls++;
        return new Promise<void>((resolve) => (release = resolve));
      },
      1000,
      controller.signal,
      page,
    );
    assert.equal(calls, 1, "a page opened in the background has something to show");
    page.set(false);
    page.set(true);
    page.set(false);
    assert.equal(calls, 1, "shown while the call is in flight: no second call");
    release();
    await settle();
    mock.timers.tick(1000);
    await settle();
    assert.equal(calls, 2);
    controller.abort();
  });
});
