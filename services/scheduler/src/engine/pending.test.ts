import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { UnservedTypes, describeHold, holdOf, sameHold, type SessionView } from "./pending.js";

const session = (types: string[], credit: number, draining = false): SessionView => ({
  types: new Set(types),
  credit,
  draining,
});

describe("holds of ready tasks", () => {
  it("says why a type's tasks wait, from the sessions, in one line", () => {
    const reason = (sessions: SessionView[]): string => describeHold("x", holdOf("x", sessions));
    assert.equal(reason([]), 'no executor advertises type "x"');
    assert.equal(reason([session(["y"], 5)]), 'no executor advertises type "x"');
    assert.equal(reason([session(["x"], 0)]), 'the one executor for type "x" is busy (no credit)');
    assert.equal(
      reason([session(["x"], 0), session(["x", "y"], 0)]),
      'all 2 executors for type "x" are busy (no credit)',
    );
    assert.equal(reason([session(["x"], 3, true)]), 'the one executor for type "x" is draining');
    assert.equal(
      reason([session(["x"], 3, true), session(["x"], 0)]),
      'all 2 executors for type "x" are busy (no credit) or draining',
    );
    // One session that can take it is enough: not held.
    assert.equal(holdOf("x", [session(["x"], 0), session(["x"], 1)]), null);
    assert.equal(reason([session(["x"], 1)]), "");
  });

  it("compares holds by what they say", () => {
    assert.ok(sameHold(null, null));
    assert.ok(sameHold({ kind: "unadvertised" }, { kind: "unadvertised" }));
    assert.ok(!sameHold({ kind: "unadvertised" }, null));
    assert.ok(
      !sameHold({ kind: "busy", executors: 1, draining: 0 }, { kind: "busy", executors: 2, draining: 0 }),
    );
    assert.ok(
      sameHold({ kind: "busy", executors: 2, draining: 1 }, { kind: "busy", executors: 2, draining: 1 }),
    );
  });
});

describe("UnservedTypes", () => {
  /** A real pino logger writing into `lines`, and a clock the test moves. */
  const setup = () => {
    const lines: { level: number; msg: string; task_type: string; waiting: number }[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l) as never) });
    const clock = { now: 0 };
    const unserved = new UnservedTypes({ log, repeatMs: 60_000, now: () => clock.now });
    return { lines, clock, unserved };
  };
  const unadvertised = { kind: "unadvertised" } as const;

  it("warns once per type when it begins, then at most once per interval while it lasts", () => {
    const { lines, clock, unserved } = setup();
    unserved.update("x", unadvertised, () => 3);
    unserved.update("x", unadvertised, () => 4);
    unserved.tick(() => 5);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.task_type, l.waiting]),
      [[40, 'no executor advertises type "x"; 3 tasks waiting', "x", 3]],
    );
    clock.now = 59_999;
    unserved.tick(() => 5);
    assert.equal(lines.length, 1);
    clock.now = 60_000;
    unserved.tick(() => 1);
    assert.equal(lines.at(-1)?.msg, 'no executor advertises type "x"; 1 task waiting');
    assert.equal(lines.length, 2);
  });

  it("says when an executor for the type attaches, and a flapping type still warns at most once per interval", () => {
    const { lines, clock, unserved } = setup();
    unserved.update("x", unadvertised, () => 2);
    unserved.attached("exec-1", ["x", "y"], () => 2);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [
        [40, 'no executor advertises type "x"; 2 tasks waiting'],
        [30, 'executor "exec-1" advertises type "x"; 2 tasks waiting for it can be leased'],
      ],
    );
    // It leaves again at once: no second warning within the interval, one when it is due.
    unserved.update("x", { kind: "busy", executors: 1, draining: 0 }, () => 2);
    unserved.update("x", unadvertised, () => 2);
    assert.equal(lines.length, 2);
    clock.now = 60_000;
    unserved.tick(() => 2);
    assert.equal(lines.length, 3);
  });

  it("stays silent about a type whose tasks are gone, and during the quiet time after a restart", () => {
    const { lines, clock, unserved } = setup();
    unserved.quietFor(7_500);
    unserved.update("x", unadvertised, () => 2);
    unserved.update("y", unadvertised, () => 2);
    // Its executor reconnected within the quiet time: not a word about it.
    unserved.attached("exec-1", ["y"], () => 2);
    assert.equal(lines.length, 0);
    clock.now = 7_500;
    unserved.tick(() => 0);
    assert.equal(lines.length, 0, "no tasks left: nothing to warn about");
    unserved.update("x", unadvertised, () => 1);
    assert.equal(lines.at(-1)?.msg, 'no executor advertises type "x"; 1 task waiting');
  });
});
