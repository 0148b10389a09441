/**
 * PendingChanges, the collection and flush scheduling both engine stores share: changes marked in
 * one turn share a commit, one commit runs at a time, a flush made while a commit settles is not
 * stranded, a failed commit's changes go back in front, and closing rejects what waits.
 */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { describe, it } from "node:test";
import { lifecycleEvent } from "./outbox.js";
import { PendingChanges, WriterClosedError, type Changes, type Waiter } from "./pending-changes.js";
import { newRunState, newTaskState, type RunState } from "../model/run-state.js";
import type { CompiledWorkflow } from "../dag/index.js";

/** A store whose commits are recorded, and held open until the test lets them finish. */
class Recorder extends PendingChanges {
  readonly commits: { changes: Changes; waiters: Waiter[] }[] = [];
  inFlight = 0;
  maxRunning = 0;
  /** Put back instead of committing (a failed commit) while true. */
  failing = false;
  private release: (() => void) | undefined;
  private gate: Promise<void> | undefined;

  constructor() {
    super("the recorder");
  }

  /** The next commits wait until {@link open} is called. */
  hold(): void {
    this.gate = new Promise((resolve) => (this.release = resolve));
  }

  open(): void {
    this.release?.();
    this.gate = undefined;
  }

  protected async drain(): Promise<void> {
    this.inFlight++;
    this.maxRunning = Math.max(this.maxRunning, this.inFlight);
    const changes = this.takeChanges();
    const waiters = this.takeWaiters();
    if (this.gate !== undefined) await this.gate;
    this.inFlight--;
    if (this.failing) {
      this.putBack(changes);
      this.putBackWaiters(waiters);
      return;
    }
    this.commits.push({ changes, waiters });
    for (const w of waiters) w.resolve();
  }

  pending(): number {
    return this.hasWork() ? 1 : 0;
  }

  drop(runId: string): void {
    this.dropRun(runId);
  }

  close(): void {
    this.closePending();
  }
}

const workflow = { name: "w", version: 1, timeoutMs: 60_000 } as unknown as CompiledWorkflow;
const run = (): RunState =>
  newRunState({
    definitionId: 1,
    workflow,
    input: null,
    idempotencyKey: null,
    requestHash: null,
    labels: {},
    now: new Date(),
  });

void describe("PendingChanges", () => {
  void it("commits what is marked in one turn together, and a run marked twice once", async () => {
    const r = new Recorder();
    const a = run();
    const b = run();
    r.markRun(a);
    r.markRun(b);
    r.markRun(a);
    r.markTask(newTaskState(a.id, "s", "STEP", "t", 0, new Date()));
    r.addEvent(lifecycleEvent(a, { case: "runStarted", value: {} }));
    await Promise.all([r.flush(), r.flush()]);
    assert.equal(r.commits.length, 1);
    const [commit] = r.commits;
    assert.deepEqual([...(commit?.changes.runs.keys() ?? [])], [a.id, b.id]);
    assert.equal(commit?.changes.tasks.size, 1);
    assert.equal(commit?.changes.events.length, 1);
    assert.equal(commit?.waiters.length, 2);
    assert.equal(r.pending(), 0);
  });

  void it("commits in the async context it was made in, not in that of the call that marked the change", async () => {
    const calls = new AsyncLocalStorage<string>();
    const seen: (string | undefined)[] = [];
    const r = new (class extends Recorder {
      protected override drain(): Promise<void> {
        seen.push(calls.getStore());
        return super.drain();
      }
    })();
    // A call's context (with tracing on: its span, whose trace the commit's queries would join).
    await calls.run("StartRun #1", async () => {
      r.markRun(run());
      await r.flush();
    });
    await calls.run("StartRun #2", () => {
      r.markRun(run());
      return r.flush();
    });
    assert.deepEqual(seen, [undefined, undefined]);
    assert.equal(r.commits.length, 2);
  });

  void it("runs one commit at a time; what is marked meanwhile goes with the next", async () => {
    const r = new Recorder();
    r.hold();
    r.markRun(run());
    const first = r.flush();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(r.inFlight, 1, "the first commit is running");
    const later = run();
    r.markRun(later);
    const second = r.flush();
    r.open();
    await Promise.all([first, second]);
    assert.equal(r.maxRunning, 1);
    assert.equal(r.commits.length, 2);
    assert.deepEqual([...(r.commits[1]?.changes.runs.keys() ?? [])], [later.id]);
  });

  void it("a flush made by a waiter of the commit that just ended is committed too", async () => {
    const r = new Recorder();
    r.markRun(run());
    const chained = await r.flush().then(() => {
      r.markRun(run());
      return r.flush();
    });
    assert.equal(chained, undefined);
    assert.equal(r.commits.length, 2);
  });

  void it("a failed commit's changes and waiters go back in front of newer ones", async () => {
    const r = new Recorder();
    const a = run();
    r.failing = true;
    r.markRun(a);
    let done = false;
    const waiting = r.flush().then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(done, false);
    assert.equal(r.pending(), 1, "its changes are pending again");
    const b = run();
    r.markRun(b);
    r.failing = false;
    await r.flush();
    await waiting;
    assert.deepEqual([...(r.commits[0]?.changes.runs.keys() ?? [])], [a.id, b.id]);
  });

  void it("drops what is marked for one run only", async () => {
    const r = new Recorder();
    const a = run();
    const b = run();
    r.markRun(a);
    r.markRun(b);
    r.markTask(newTaskState(a.id, "s", "STEP", "t", 0, new Date()));
    r.addEvent(lifecycleEvent(a, { case: "runStarted", value: {} }));
    r.addEvent(lifecycleEvent(b, { case: "runStarted", value: {} }));
    r.drop(a.id);
    await r.flush();
    const [commit] = r.commits;
    assert.deepEqual([...(commit?.changes.runs.keys() ?? [])], [b.id]);
    assert.equal(commit?.changes.tasks.size, 0);
    assert.deepEqual(
      commit?.changes.events.map((e) => e.message.runId),
      [b.id],
    );
  });

  void it("closed: a flush is refused, and one whose commit fails meanwhile is rejected", async () => {
    const r = new Recorder();
    r.failing = true;
    r.hold();
    r.markRun(run());
    const waiting = r.flush();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(r.inFlight, 1, "its commit is in flight");
    r.close();
    await assert.rejects(r.flush(), (e) => e instanceof WriterClosedError && /is closed/.test(e.message));
    r.open();
    await assert.rejects(waiting, (e) => e instanceof WriterClosedError && /closed before/.test(e.message));
  });
});
