import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { TaskError } from "./task-error.js";
import {
  BUILTIN_TASK_TYPES,
  HandlerModuleError,
  HandlerRegistrationError,
  HandlerRegistry,
  loadHandlerModule,
  registerBuiltins,
} from "./registry.js";
import { createTestContext } from "./test-context.js";

describe("HandlerRegistry", () => {
  it("registers, finds and lists handlers", async () => {
    const registry = new HandlerRegistry()
      .register("zeta", () => 1)
      .register("billing.charge-v2", (input: { n: number }) => input.n * 2);
    assert.deepEqual(registry.types(), ["billing.charge-v2", "zeta"]);
    assert.equal(await registry.get("billing.charge-v2")?.({ n: 21 }, createTestContext().ctx), 42);
    assert.equal(registry.get("nope"), undefined);
    assert.ok(registry.has("zeta"));
  });

  it("refuses a duplicate type", () => {
    const registry = new HandlerRegistry().register("charge", () => 1);
    assert.throws(() => registry.register("charge", () => 2), {
      name: "HandlerRegistrationError",
      message: 'task type "charge" is already registered; each type can have only one handler',
    });
  });

  it("refuses invalid type names and non-functions", () => {
    const registry = new HandlerRegistry();
    for (const type of ["", "Upper", "1abc", "has space", "a/b", "a".repeat(64)]) {
      assert.throws(() => registry.register(type, () => 1), HandlerRegistrationError, type);
    }
    registry.register("a".repeat(63), () => 1);
    assert.throws(() => registry.register("x", "not a function" as never), /must be a function/);
  });

  it("resolves an unknown type to a terminal UNKNOWN_TASK_TYPE", () => {
    const registry = new HandlerRegistry().register("known", () => 1);
    assert.throws(
      () => registry.resolve("unknown"),
      (e: unknown) => e instanceof TaskError && e.type === "UNKNOWN_TASK_TYPE" && !e.retryable,
    );
  });

  it("registers the built-ins, which then cannot be registered again", async () => {
    const registry = registerBuiltins(new HandlerRegistry());
    assert.deepEqual(registry.types(), [...BUILTIN_TASK_TYPES]);
    assert.deepEqual(await registry.resolve("noop")({ x: 1 }, createTestContext().ctx), { x: 1 });
    assert.throws(() => registry.register("http", () => 1), HandlerRegistrationError);
    for (const type of BUILTIN_TASK_TYPES) assert.equal(registry.registration(type).heartbeat, "auto", type);
  });

  it("keeps each handler's heartbeat mode (manual unless asked) and refuses an unknown one", () => {
    const registry = new HandlerRegistry()
      .register("own", () => 1)
      .register("wrapped", () => 2, { heartbeat: "auto" });
    assert.equal(registry.registration("own").heartbeat, "manual");
    assert.equal(registry.registration("wrapped").heartbeat, "auto");
    assert.throws(
      () => registry.register("odd", () => 3, { heartbeat: "sometimes" as "auto" }),
      (e: unknown) => e instanceof HandlerRegistrationError && /"auto" or "manual"/.test(e.message),
    );
    assert.throws(() => registry.registration("missing"), TaskError);
  });
});

describe("loadHandlerModule", () => {
  let dir: string;
  const write = async (name: string, source: string): Promise<string> => {
    const file = join(dir, name);
    await writeFile(file, source);
    return file;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nexusflow-handlers-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("runs a default-exported setup function", async () => {
    const file = await write(
      "setup.mjs",
      `export default async (registry) => { await Promise.resolve(); registry.register("greet", (input) => "hi " + input.name); };`,
    );
    const registry = new HandlerRegistry();
    assert.deepEqual(await loadHandlerModule(file, registry), ["greet"]);
    assert.equal(await registry.resolve("greet")({ name: "ada" }, createTestContext().ctx), "hi ada");
  });

  it("registers an exported handlers record, resolving a relative path against the cwd", async () => {
    const file = await write(
      "record.mjs",
      `export const handlers = { "a.one": () => 1, "a.two": async () => 2 };`,
    );
    const registry = registerBuiltins(new HandlerRegistry());
    assert.deepEqual(await loadHandlerModule(relative(process.cwd(), file), registry), ["a.one", "a.two"]);
    assert.deepEqual(await loadHandlerModule("record.mjs", new HandlerRegistry(), { cwd: dir }), [
      "a.one",
      "a.two",
    ]);
  });

  it("refuses a module with neither or both shapes", async () => {
    const neither = await write("neither.mjs", `export const something = 1;`);
    await assert.rejects(loadHandlerModule(neither, new HandlerRegistry()), (e: unknown) => {
      assert.ok(e instanceof HandlerModuleError);
      assert.match(
        e.message,
        /must either default-export a function \(registry\) => void or export "handlers".*\(it exports something\)/,
      );
      return true;
    });
    const both = await write("both.mjs", `export default () => {}; export const handlers = {};`);
    await assert.rejects(loadHandlerModule(both, new HandlerRegistry()), /exports both/);
  });

  it("reports import failures and bad registrations clearly", async () => {
    await assert.rejects(loadHandlerModule(join(dir, "missing.mjs"), new HandlerRegistry()), (e: unknown) => {
      assert.ok(e instanceof HandlerModuleError);
      assert.match(e.message, /^cannot load handler module .*missing\.mjs/);
      assert.ok(e.cause !== undefined);
      return true;
    });
    const throwing = await write(
      "throwing.mjs",
      `export default () => { throw new Error("config missing"); };`,
    );
    await assert.rejects(
      loadHandlerModule(throwing, new HandlerRegistry()),
      /failed to register its handlers: config missing/,
    );
    const clash = await write("clash.mjs", `export const handlers = { shell: () => 1 };`);
    await assert.rejects(
      loadHandlerModule(clash, registerBuiltins(new HandlerRegistry())),
      HandlerRegistrationError,
    );
    const notFunction = await write("not-function.mjs", `export const handlers = { x: 42 };`);
    await assert.rejects(loadHandlerModule(notFunction, new HandlerRegistry()), /must be a function/);
  });
});
