/**
 * Every shell, TypeScript and JSON example of every README in the repository, run as written
 * against a fresh dev stack (`nexusflow dev`, what `npm start` runs), in document order, the way a
 * newcomer copies them into one terminal: variables and the working directory carry from one
 * block to the next. What a block must print, its exit status, and the blocks that cannot run
 * here (with the reason) are HTML comments above it (see markdown-examples.ts).
 *
 * Two things differ from a newcomer's terminal, on purpose: the stack listens on free ports (the
 * documented 127.0.0.1:8080 and :50051 are replaced in the examples' text), and its data
 * directory is a temporary one (NEXUSFLOW_DATA_DIR), so that the test never meets a developer's
 * own `npm start`.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { cleanEnv } from "./clean-env.js";
import { type AddressMap, type Example, extractExamples, withAddresses } from "./markdown-examples.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "cli", "src", "bin.mjs");
const TSX = import.meta.resolve("tsx");
/** Longest a single block may take (a run it waits for included). */
const BLOCK_TIMEOUT_MS = 120_000;
const STACK_READY_TIMEOUT_MS = 180_000;

/** Every README.md of the repository (not of dependencies or generated output). */
async function readmes(dir = ROOT): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name.startsWith(".") || entry.name === "dist") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await readmes(path)));
    else if (entry.name === "README.md") out.push(path);
  }
  // The root README first: a newcomer starts there.
  return out.sort((a, b) =>
    a === join(ROOT, "README.md") ? -1 : b === join(ROOT, "README.md") ? 1 : a.localeCompare(b),
  );
}

interface Output {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A process with its output collected, and a way to wait for a pattern in it. */
class Proc {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<Output>;
  #waiters = new Set<() => void>();

  constructor(
    command: string,
    args: readonly string[],
    options: { cwd: string; env: Record<string, string> },
  ) {
    // Its own process group, so that stopping it stops what it started (npx, tsx, node).
    this.child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"], detached: true });
    for (const [stream, key] of [
      [this.child.stdout, "stdout"],
      [this.child.stderr, "stderr"],
    ] as const) {
      stream?.setEncoding("utf8").on("data", (chunk: string) => {
        this[key] += chunk;
        for (const w of this.#waiters) w();
      });
    }
    this.exited = new Promise((resolveExit, reject) => {
      this.child.once("error", reject);
      this.child.once("close", (code, signal) => {
        for (const w of this.#waiters) w();
        resolveExit({ code, signal, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once stdout or stderr matches; rejects if the process ends first or time runs out. */
  waitFor(pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolveWait, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`${what}: no ${String(pattern)} within ${timeoutMs} ms\n${this.transcript()}`));
      }, timeoutMs);
      const check = (): void => {
        if (pattern.test(this.stdout) || pattern.test(this.stderr)) {
          this.#waiters.delete(check);
          clearTimeout(timer);
          resolveWait();
        } else if (!this.running) {
          this.#waiters.delete(check);
          clearTimeout(timer);
          reject(new Error(`${what}: ended before ${String(pattern)}\n${this.transcript()}`));
        }
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Ends it and everything it started: SIGTERM to its group, SIGKILL if it lingers. */
  async stop(graceMs = 15_000): Promise<Output> {
    const pid = this.child.pid;
    if (pid !== undefined && this.running) {
      signalGroup(pid, "SIGTERM");
      const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exited;
  }

  transcript(): string {
    return `--- stdout ---\n${this.stdout}--- stderr ---\n${this.stderr}`;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Runs a process to its end (or kills it after the block timeout). */
async function runToEnd(proc: Proc): Promise<Output> {
  const pid = proc.child.pid;
  const timer = setTimeout(() => pid !== undefined && signalGroup(pid, "SIGKILL"), BLOCK_TIMEOUT_MS);
  try {
    return await proc.exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One terminal: the environment and directory that the blocks of one README share, and the
 * servers they started.
 */
class Terminal {
  env: Record<string, string>;
  cwd = ROOT;
  readonly background: Proc[] = [];
  /** Every process started, each the leader of its group: what they left running is stopped at the end. */
  readonly #started: Proc[] = [];

  constructor(
    private readonly startEnv: Record<string, string>,
    private readonly scratch: string,
    private readonly addresses: AddressMap,
  ) {
    this.env = { ...startEnv };
  }

  /** Runs one example and checks what its comments say about it. */
  async run(example: Example): Promise<void> {
    const where = `${relative(ROOT, example.file)}:${example.line}`;
    if (example.newTerminal) {
      this.env = { ...this.startEnv };
      this.cwd = ROOT;
    }
    const code = withAddresses(example.code, this.addresses);
    if (example.writeTo !== undefined) {
      const target = resolve(this.cwd, example.writeTo);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, `${code}\n`);
      return;
    }
    if (example.kind === "json") {
      const parsed: unknown = JSON.parse(code);
      assert.ok(parsed !== null && typeof parsed === "object", `${where}: not a JSON object`);
      if (example.definition) await this.#apply(where, code);
      return;
    }
    const proc = example.kind === "shell" ? this.#shell(where, code) : await this.#typescript(where, code);
    this.#started.push(proc);
    if (example.background !== undefined) {
      this.background.push(proc);
      await proc.waitFor(example.background, BLOCK_TIMEOUT_MS, where);
      return;
    }
    const out = await runToEnd(proc);
    const shown = `${where}:\n${code}\n${proc.transcript()}`;
    assert.equal(
      out.code,
      example.exit,
      `${where} exited ${out.code ?? out.signal}, documented ${example.exit}\n${shown}`,
    );
    for (const pattern of example.expect)
      assert.match(`${out.stdout}${out.stderr}`, pattern, `${where}: output should match\n${shown}`);
    if (example.kind === "shell") await this.#carry();
  }

  /** Bash with every assignment exported (so it reaches the next block) and its state saved at exit. */
  #shell(where: string, code: string): Proc {
    const script = [
      `trap 'env -0 > "$NF_EXAMPLE_STATE/env"; pwd > "$NF_EXAMPLE_STATE/cwd"' EXIT`,
      "set -a -e -o pipefail",
      code,
    ].join("\n");
    return new Proc("bash", ["-c", script, where], {
      cwd: this.cwd,
      env: { ...this.env, NF_EXAMPLE_STATE: this.scratch },
    });
  }

  /** A TypeScript example as a module of its own beside the repository's packages, run with tsx. */
  async #typescript(where: string, code: string): Promise<Proc> {
    const dir = join(ROOT, "node_modules", ".cache", "readme-examples");
    await mkdir(dir, { recursive: true });
    const file = join(dir, `${where.replace(/[^\w.-]+/g, "_")}.mts`);
    await writeFile(file, `${code}\n`);
    return new Proc(process.execPath, ["--import", TSX, file], { cwd: this.cwd, env: this.env });
  }

  async #carry(): Promise<void> {
    const env: Record<string, string> = {};
    for (const entry of (await readFile(join(this.scratch, "env"), "utf8")).split("\0")) {
      const eq = entry.indexOf("=");
      if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
    delete env["NF_EXAMPLE_STATE"];
    delete env["_"];
    delete env["SHLVL"];
    delete env["OLDPWD"];
    delete env["PWD"];
    this.env = env;
    this.cwd = (await readFile(join(this.scratch, "cwd"), "utf8")).trim();
  }

  async #apply(where: string, json: string): Promise<void> {
    const file = join(this.scratch, "definition.json");
    await writeFile(file, json);
    const proc = new Proc(process.execPath, [BIN, "apply", file], { cwd: this.cwd, env: this.env });
    const out = await runToEnd(proc);
    assert.equal(out.code, 0, `${where}: the definition is not accepted\n${proc.transcript()}`);
  }

  /** Stops the servers it started, then whatever a block left running in the background (`cmd &`). */
  async close(): Promise<void> {
    for (const proc of this.background.reverse()) await proc.stop();
    for (const proc of this.#started) {
      const pid = proc.child.pid;
      if (pid !== undefined) signalGroup(pid, "SIGTERM");
    }
  }
}

const READMES = await readmes();

describe("every README example, as written, against a fresh dev stack", { timeout: 900_000 }, () => {
  let work: string;
  let dataDir: string;
  let stackEnv: Record<string, string>;
  let dev: Proc | undefined;
  let addresses: AddressMap;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-readme-"));
    dataDir = join(work, "data");
    stackEnv = {
      ...cleanEnv(),
      NEXUSFLOW_DATA_DIR: dataDir,
      // The stack records itself here (dev-state.ts), where the examples' CLI finds it.
      XDG_RUNTIME_DIR: join(work, "runtime"),
    };
    dev = new Proc(process.execPath, [BIN, "dev"], {
      cwd: ROOT,
      env: { ...stackEnv, GATEWAY_PORT: "0", SCHEDULER_PORT: "0" },
    });
    await dev.waitFor(/Nexusflow is running at/, STACK_READY_TIMEOUT_MS, "nexusflow dev");
    // The box it prints: "gateway    http://127.0.0.1:PORT   gRPC, ..." and "scheduler  127.0.0.1:PORT   gRPC, internal".
    const gateway = /^\W*gateway\s+http:\/\/(\S+)\s+gRPC/m.exec(dev.stdout)?.[1];
    const scheduler = /^\W*scheduler\s+(\S+:\d+)\s+gRPC/m.exec(dev.stdout)?.[1];
    assert.ok(gateway !== undefined && scheduler !== undefined, dev.transcript());
    addresses = { gateway, scheduler };
  });

  after(async () => {
    if (dev !== undefined) {
      const out = await dev.stop(30_000);
      assert.equal(out.code, 0, `nexusflow dev did not stop cleanly\n${dev.transcript()}`);
    }
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it("finds the READMEs and their examples", async () => {
    assert.ok(READMES.includes(join(ROOT, "README.md")));
    const runnable = (
      await Promise.all(READMES.map(async (f) => extractExamples(f, await readFile(f, "utf8"))))
    ).flat();
    assert.ok(runnable.filter((e) => e.skip === undefined && e.kind !== "json").length >= 8);
  });

  for (const file of READMES) {
    it(relative(ROOT, file), async () => {
      const examples = extractExamples(file, await readFile(file, "utf8"));
      const scratch = await mkdtemp(join(work, "terminal-"));
      const terminal = new Terminal(stackEnv, scratch, addresses);
      try {
        for (const example of examples) {
          if (example.skip !== undefined) continue;
          await terminal.run(example);
        }
      } finally {
        await terminal.close();
      }
    });
  }
});
