import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { TaskError } from "./task-error.js";
import { type ShellOutput, createShellHandler } from "./shell.js";
import { createTestContext, processAlive, waitFor } from "./test-context.js";

const shell = createShellHandler({ killGraceMs: 300 });
const node = (script: string): string[] => [process.execPath, "-e", script];

function taskError(type: string, retryable: boolean, extra: (e: TaskError) => boolean = () => true) {
  return (e: unknown) => {
    assert.ok(e instanceof TaskError, `expected a TaskError, got ${String(e)}`);
    assert.equal(e.type, type, e.message);
    assert.equal(e.retryable, retryable);
    return extra(e);
  };
}

/** A child that starts a grandchild in its own process group, prints both pids, then waits. */
const PARENT_OF_GRANDCHILD = `
  const { spawn } = require("node:child_process");
  const grandchild = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  console.log(JSON.stringify({ child: process.pid, grandchild: grandchild.pid }));
  setInterval(() => {}, 1000);
`;

async function pidsFrom(written: () => string): Promise<{ child: number; grandchild: number }> {
  const line = await waitFor(
    () =>
      written()
        .split("\n")
        .find((l) => l.startsWith("{")),
    "the pids line",
  );
  return JSON.parse(line) as { child: number; grandchild: number };
}

describe("shell handler", () => {
  it("captures stdout and stderr and streams them as they arrive", async () => {
    const t = createTestContext();
    // The child prints, then waits for SIGUSR2: output must reach the log before the command ends.
    const running = Promise.resolve(
      shell(
        {
          command: node(`
            process.on("SIGUSR2", () => { process.stdout.write("second\\n"); process.stderr.write("err2\\n"); process.exit(0); });
            process.stdout.write("first\\n" + process.pid + "\\n");
            process.stderr.write("err1\\n");
            setInterval(() => {}, 1000);
          `),
        },
        t.ctx,
      ),
    );
    const pid = Number(
      await waitFor(() => /^first\n(\d+)\n/.exec(t.written("stdout"))?.[1], "the first output"),
    );
    await waitFor(() => t.written("stderr") === "err1\n", "the first stderr chunk");
    process.kill(pid, "SIGUSR2");
    const out = await running;
    assert.deepEqual(out, {
      exitCode: 0,
      signal: null,
      stdout: `first\n${pid}\nsecond\n`,
      stderr: "err1\nerr2\n",
      stdoutTruncated: false,
      stderrTruncated: false,
    } satisfies ShellOutput);
    assert.equal(t.written("stdout"), out.stdout);
    assert.equal(t.written("stderr"), out.stderr);
  });

  it("passes stdin, env merged over the base environment, and cwd", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nexusflow-shell-"));
    try {
      const { ctx } = createTestContext();
      const out = await shell(
        {
          command: node(`
            let input = "";
            process.stdin.on("data", (c) => (input += c)).on("end", () =>
              console.log(JSON.stringify({ input, foo: process.env.FOO, base: process.env.BASE_ONLY, cwd: process.cwd() })));
          `),
          stdin: "hello",
          env: { FOO: "bar" },
          cwd: dir,
        },
        ctx,
      );
      const withBase = createShellHandler({ baseEnv: { ...process.env, BASE_ONLY: "kept" } });
      const out2 = await withBase({ command: node("console.log(process.env.BASE_ONLY)") }, ctx);
      assert.deepEqual(JSON.parse(out.stdout), { input: "hello", foo: "bar", cwd: dir });
      assert.equal(out2.stdout, "kept\n");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("fails with EXIT_CODE, retryable by default, on a non-zero exit", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(
        shell(
          {
            command: node(
              `process.stdout.write("partial"); process.stderr.write("boom: disk full\\n"); process.exit(3)`,
            ),
          },
          ctx,
        ),
      ),
      taskError("EXIT_CODE", true, (e) => {
        assert.match(e.message, /exited with code 3: boom: disk full$/);
        const details = e.details as ShellOutput;
        assert.deepEqual(
          [details.exitCode, details.stdout, details.stderr],
          [3, "partial", "boom: disk full\n"],
        );
        return true;
      }),
    );
  });

  it("fails retryably with EXIT_CODE when the command dies from a signal", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(shell({ command: node(`process.kill(process.pid, "SIGKILL")`) }, ctx)),
      taskError("EXIT_CODE", true, (e) => {
        assert.match(e.message, /was killed by SIGKILL$/);
        const details = e.details as ShellOutput;
        assert.deepEqual([details.exitCode, details.signal], [null, "SIGKILL"]);
        return true;
      }),
    );
  });

  it("fails terminally for exit codes listed in terminalExitCodes, retryably for the others", async () => {
    const { ctx } = createTestContext();
    const exit = (code: number) => ({
      command: node(`process.stderr.write("code ${code}\\n"); process.exit(${code})`),
      terminalExitCodes: [2, 64],
    });
    for (const code of [2, 64]) {
      await assert.rejects(
        Promise.resolve(shell(exit(code), ctx)),
        taskError("EXIT_CODE", false, (e) => {
          assert.match(e.message, new RegExp(`exited with code ${code}: code ${code}$`));
          assert.equal((e.details as ShellOutput).exitCode, code);
          return true;
        }),
      );
    }
    await assert.rejects(
      Promise.resolve(shell(exit(1), ctx)),
      taskError("EXIT_CODE", true, (e) => (e.details as ShellOutput).exitCode === 1),
    );
  });

  it("with retryOnExitCodes, retries only the listed codes (a signal death is terminal)", async () => {
    const { ctx } = createTestContext();
    const only75 = (script: string) => ({ command: node(script), retryOnExitCodes: [75] });
    await assert.rejects(
      Promise.resolve(shell(only75("process.exit(75)"), ctx)),
      taskError("EXIT_CODE", true, (e) => (e.details as ShellOutput).exitCode === 75),
    );
    await assert.rejects(
      Promise.resolve(shell(only75("process.exit(1)"), ctx)),
      taskError("EXIT_CODE", false, (e) => (e.details as ShellOutput).exitCode === 1),
    );
    await assert.rejects(
      Promise.resolve(shell(only75(`process.kill(process.pid, "SIGKILL")`), ctx)),
      taskError("EXIT_CODE", false, (e) => (e.details as ShellOutput).signal === "SIGKILL"),
    );
    // Both lists together: terminal wins for its codes, the rest follows retryOnExitCodes.
    await assert.rejects(
      Promise.resolve(shell({ ...only75("process.exit(3)"), terminalExitCodes: [3] }, ctx)),
      taskError("EXIT_CODE", false),
    );
    // An empty retry list means no exit is retried.
    await assert.rejects(
      Promise.resolve(shell({ command: node("process.exit(75)"), retryOnExitCodes: [] }, ctx)),
      taskError("EXIT_CODE", false),
    );
  });

  it("passes numbers and booleans in command and env as their JSON text", async () => {
    const { ctx } = createTestContext();
    const out = await shell(
      {
        command: [
          ...node(
            `console.log(JSON.stringify({ argv: process.argv.slice(1), n: process.env.N, b: process.env.B }))`,
          ),
          3,
          true,
          false,
          -1.5,
          "text",
        ],
        env: { N: 42, B: false },
      },
      ctx,
    );
    assert.deepEqual(JSON.parse(out.stdout), {
      argv: ["3", "true", "false", "-1.5", "text"],
      n: "42",
      b: "false",
    });
  });

  it("keeps the tail of long output and flags the truncation", async () => {
    const { ctx } = createTestContext();
    const small = createShellHandler({ maxOutputChars: 10 });
    const out = await small(
      { command: node(`for (let i = 0; i < 100; i++) process.stdout.write(i + ",")`) },
      ctx,
    );
    assert.deepEqual(
      [out.stdout, out.stdoutTruncated, out.stderrTruncated],
      ["5,96,97,98,99,".slice(-10), true, false],
    );
  });

  it("cuts a tail whose JSON takes more than maxOutputBytes (wide characters, control characters)", async () => {
    const { ctx } = createTestContext();
    const tight = createShellHandler({ maxOutputChars: 1000, maxOutputBytes: 300 });
    // 1,000 characters of three UTF-8 bytes each, then 1,000 control characters (six bytes escaped).
    const out = await tight(
      {
        command: node(`process.stdout.write("€".repeat(1000)); process.stderr.write("\\u0001".repeat(1000))`),
      },
      ctx,
    );
    for (const [text, flag] of [
      [out.stdout, out.stdoutTruncated],
      [out.stderr, out.stderrTruncated],
    ] as const) {
      assert.ok(Buffer.byteLength(JSON.stringify(text)) <= 300, `${text.length} characters kept`);
      assert.ok(text.length > 30, "most of what fits is kept");
      assert.equal(flag, true);
    }
    assert.match(out.stdout, /^€+$/);
    assert.equal(out.stderr, "\u0001".repeat(out.stderr.length));
  });

  it("reports a missing executable as terminal COMMAND_NOT_FOUND and a missing cwd as CWD_NOT_FOUND", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(shell({ command: ["nexusflow-no-such-command-xyz"] }, ctx)),
      taskError("COMMAND_NOT_FOUND", false),
    );
    await assert.rejects(
      Promise.resolve(shell({ command: node("1"), cwd: "/nonexistent/nexusflow" }, ctx)),
      taskError("CWD_NOT_FOUND", false),
    );
  });

  it("on cancel, kills the command and its grandchild before settling", async () => {
    const t = createTestContext();
    const running = Promise.resolve(shell({ command: node(PARENT_OF_GRANDCHILD) }, t.ctx));
    const pids = await pidsFrom(() => t.written("stdout"));
    assert.ok(processAlive(pids.grandchild));
    t.controller.abort();
    await assert.rejects(running, taskError("CANCELLED", false));
    assert.equal(processAlive(pids.child), false, "child still running");
    assert.equal(processAlive(pids.grandchild), false, "grandchild still running");
  });

  it("on timeout, kills the group (SIGKILL for processes ignoring SIGTERM) and fails retryably", async () => {
    const t = createTestContext();
    const running = Promise.resolve(
      shell(
        { command: node(`process.on("SIGTERM", () => {}); ${PARENT_OF_GRANDCHILD}`), timeout: "300ms" },
        t.ctx,
      ),
    );
    const pids = await pidsFrom(() => t.written("stdout"));
    await assert.rejects(
      running,
      taskError("TIMEOUT", true, (e) => (e.details as ShellOutput).signal === "SIGKILL"),
    );
    assert.equal(processAlive(pids.child), false, "child still running");
    assert.equal(processAlive(pids.grandchild), false, "grandchild still running");
  });

  it("stops what a finished command left running in its process group", async () => {
    const t = createTestContext();
    const out = await shell(
      {
        command: node(`
          const { spawn } = require("node:child_process");
          const bg = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
          bg.unref();
          console.log(bg.pid);
        `),
      },
      t.ctx,
    );
    assert.equal(out.exitCode, 0);
    assert.equal(processAlive(Number(out.stdout.trim())), false, "background process still running");
  });

  it("refuses a command string, explaining to use an argv array", async () => {
    const { ctx } = createTestContext();
    await assert.rejects(
      Promise.resolve(shell({ command: "ls -l | wc -l" }, ctx)),
      taskError("INVALID_INPUT", false, (e) => {
        assert.match(e.message, /^command: must be an argv array such as \["ls", "-l"\], not a string/);
        assert.match(e.message, /\["sh", "-c", "ls -l \| wc -l"\]/);
        return true;
      }),
    );
  });

  it("refuses other bad input naming the field", async () => {
    const { ctx } = createTestContext();
    const cases: [unknown, RegExp][] = [
      [{}, /^command: is required/],
      [{ command: [] }, /^command: must not be empty/],
      [{ command: ["ls", null] }, /^command\[1\]: expected a string, number or boolean, got null/],
      [{ command: ["ls", "-l", {}] }, /^command\[2\]: expected a string, number or boolean, got object/],
      [{ command: [["ls"]] }, /^command\[0\]: expected a string, number or boolean, got array/],
      [{ command: ["ls", "a\0b"] }, /^command\[1\]: must not contain NUL/],
      [{ command: ["ls"], env: { A: null } }, /^env\.A: expected a string, number or boolean, got null/],
      [{ command: ["ls"], env: { A: [1] } }, /^env\.A: expected a string, number or boolean, got array/],
      [{ command: ["ls"], env: { A: "x\0" } }, /^env\.A: must not contain NUL/],
      [{ command: ["ls"], env: [] }, /^env: expected an object/],
      [{ command: ["ls"], retryOnExitCodes: 3 }, /^retryOnExitCodes: expected an array of exit codes/],
      [
        { command: ["ls"], retryOnExitCodes: [1, 256] },
        /^retryOnExitCodes\[1\]: expected an exit code \(an integer 0-255\), got 256/,
      ],
      [{ command: ["ls"], retryOnExitCodes: [-1] }, /^retryOnExitCodes\[0\]: expected an exit code .*got -1/],
      [
        { command: ["ls"], terminalExitCodes: [1.5] },
        /^terminalExitCodes\[0\]: expected an exit code .*got 1\.5/,
      ],
      [
        { command: ["ls"], terminalExitCodes: ["2"] },
        /^terminalExitCodes\[0\]: expected an exit code .*got string/,
      ],
      [{ command: ["ls"], terminalExitCodes: null }, /^terminalExitCodes: expected an array .*got null/],
      [
        { command: ["ls"], retryOnExitCodes: [1, 2, 3], terminalExitCodes: [4, 3] },
        /^terminalExitCodes\[1\]: exit code 3 is also in retryOnExitCodes/,
      ],
      [{ command: ["ls"], env: { "A=B": "x" } }, /^env\.A=B: is not a valid/],
      [{ command: ["ls"], timeout: "forever" }, /^timeout: invalid duration/],
      [{ command: ["ls"], stdin: 5 }, /^stdin: expected a string/],
      [{ command: ["ls"], shell: true }, /^shell: unknown field/],
    ];
    for (const [input, message] of cases) {
      await assert.rejects(
        Promise.resolve(shell(input, ctx)),
        taskError("INVALID_INPUT", false, (e) => message.test(e.message)),
      );
    }
  });

  it("runs nothing when the input is bad, and names the field in the error's details", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nexusflow-shell-"));
    try {
      const { ctx } = createTestContext();
      const marker = join(dir, "ran");
      const writesMarker = node(`require("node:fs").writeFileSync(${JSON.stringify(marker)}, "x")`);
      for (const [extra, field] of [
        [{ retryOnExitCodes: [1, 300] }, "retryOnExitCodes[1]"],
        [{ retryOnExitCodes: [7], terminalExitCodes: [7] }, "terminalExitCodes[0]"],
        [{ env: { A: { nested: true } } }, "env.A"],
      ] as const) {
        await assert.rejects(
          Promise.resolve(shell({ command: writesMarker, ...extra }, ctx)),
          taskError("INVALID_INPUT", false, (e) => {
            assert.deepEqual(e.details, { field });
            return true;
          }),
        );
      }
      await assert.rejects(
        Promise.resolve(shell({ command: [...writesMarker, null] }, ctx)),
        taskError("INVALID_INPUT", false, (e) => (e.details as { field: string }).field === "command[3]"),
      );
      assert.equal(existsSync(marker), false, "the command ran despite bad input");
      // The same command with good input does run, so the check above can fail.
      await shell({ command: writesMarker, retryOnExitCodes: [1], terminalExitCodes: [2] }, ctx);
      assert.equal(existsSync(marker), true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("does not start a command when the task is cancelled while its cwd is checked", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nf-shell-cwd-"));
    try {
      const marker = join(dir, "ran");
      const { ctx, controller } = createTestContext();
      const running = Promise.resolve(
        shell(
          { command: node(`require("node:fs").writeFileSync(${JSON.stringify(marker)}, "x")`), cwd: dir },
          ctx,
        ),
      );
      controller.abort(); // the handler awaits the cwd's stat now
      await assert.rejects(running, taskError("CANCELLED", false));
      assert.equal(existsSync(marker), false, "the command ran");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("does not start a command when the task is already cancelled", async () => {
    const { ctx, controller } = createTestContext();
    controller.abort();
    await assert.rejects(Promise.resolve(shell({ command: node("1") }, ctx)), taskError("CANCELLED", false));
  });
});
