/**
 * The task types an executor serves: a map from type name to handler, filled with the built-ins
 * and with user modules at start-up, then only read.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { TaskError } from "./task-error.js";
import { type HttpHandlerOptions, createHttpHandler } from "./http.js";
import { noopHandler } from "./noop.js";
import { type ShellHandlerOptions, createShellHandler } from "./shell.js";
import { sleepHandler } from "./sleep.js";
import type { HandlerOptions, HandlerRegistration, TaskHandler } from "./types.js";

/** Task type names: lower case, starting with a letter, at most 63 characters. */
export const TASK_TYPE_PATTERN = /^[a-z][a-z0-9._-]{0,62}$/;

/** The type names {@link registerBuiltins} registers. */
export const BUILTIN_TASK_TYPES = ["http", "noop", "shell", "sleep"] as const;

/** Thrown when a handler cannot be registered (bad name, duplicate, not a function). */
export class HandlerRegistrationError extends Error {
  override name = "HandlerRegistrationError";
}

/** Thrown when a handler module cannot be loaded or has the wrong shape. */
export class HandlerModuleError extends Error {
  override name = "HandlerModuleError";
}

/** Task type name to handler. */
export class HandlerRegistry {
  readonly #handlers = new Map<string, HandlerRegistration>();

  /**
   * Registers `handler` for `type` (see {@link HandlerOptions} for `options`); throws
   * {@link HandlerRegistrationError} on a bad name, a duplicate or an unknown heartbeat mode.
   */
  register<I, O>(type: string, handler: TaskHandler<I, O>, options: HandlerOptions = {}): this {
    if (typeof type !== "string" || !TASK_TYPE_PATTERN.test(type)) {
      throw new HandlerRegistrationError(
        `invalid task type ${JSON.stringify(type)}: use lower-case letters, digits, ".", "_" and "-", ` +
          `starting with a letter, at most 63 characters (e.g. "billing.charge")`,
      );
    }
    if (typeof handler !== "function") {
      throw new HandlerRegistrationError(
        `handler for task type "${type}" must be a function, got ${typeof handler}`,
      );
    }
    if (this.#handlers.has(type)) {
      throw new HandlerRegistrationError(
        `task type "${type}" is already registered; each type can have only one handler`,
      );
    }
    const heartbeat = options.heartbeat ?? "manual";
    if (heartbeat !== "auto" && heartbeat !== "manual") {
      throw new HandlerRegistrationError(
        `heartbeat for task type "${type}" must be "auto" or "manual", got ${JSON.stringify(heartbeat)}`,
      );
    }
    // Handlers validate their own input, so storing them as taking `unknown` is sound at run time.
    this.#handlers.set(type, { handler: handler as TaskHandler, heartbeat });
    return this;
  }

  /** The handler for `type`, or undefined. */
  get(type: string): TaskHandler | undefined {
    return this.#handlers.get(type)?.handler;
  }

  /** The handler for `type`; a terminal UNKNOWN_TASK_TYPE TaskError when there is none. */
  resolve(type: string): TaskHandler {
    return this.registration(type).handler;
  }

  /** The handler for `type` with its options; a terminal UNKNOWN_TASK_TYPE TaskError when there is none. */
  registration(type: string): HandlerRegistration {
    const registration = this.#handlers.get(type);
    if (registration === undefined) {
      throw TaskError.terminal(
        TaskErrorType.UNKNOWN_TASK_TYPE,
        `this executor has no handler for task type "${type}"`,
        {
          details: { taskType: type, known: this.types() },
        },
      );
    }
    return registration;
  }

  /** Whether `type` has a handler. */
  has(type: string): boolean {
    return this.#handlers.has(type);
  }

  /** The registered type names, sorted (what the executor advertises to the scheduler). */
  types(): string[] {
    return [...this.#handlers.keys()].sort();
  }
}

/** Options of the built-in handlers. */
export interface BuiltinHandlerOptions {
  /** Options of the `http` handler. */
  http?: HttpHandlerOptions;
  /** Options of the `shell` handler (pass `baseEnv` to keep executor secrets from commands). */
  shell?: ShellHandlerOptions;
}

/**
 * Registers the built-in handlers: http, noop, shell, sleep. They cannot report progress of a
 * request, a command or a wait, so the executor heartbeats for them (`heartbeat: "auto"`).
 */
export function registerBuiltins(
  registry: HandlerRegistry,
  options: BuiltinHandlerOptions = {},
): HandlerRegistry {
  const auto = { heartbeat: "auto" } as const;
  return registry
    .register("http", createHttpHandler(options.http), auto)
    .register("noop", noopHandler, auto)
    .register("shell", createShellHandler(options.shell), auto)
    .register("sleep", sleepHandler, auto);
}

/** Options of {@link loadHandlerModule}. */
export interface LoadHandlerModuleOptions {
  /**
   * Directory a relative module path is resolved against.
   * @default process.cwd()
   */
  cwd?: string;
}

/**
 * Imports a user module and registers its handlers. The module either default-exports a function
 * `(registry) => void | Promise<void>` or exports `handlers`, a record of task type to handler
 * (not both). Returns the task types it added. Throws {@link HandlerModuleError} (or
 * {@link HandlerRegistrationError} for a bad or duplicate type).
 */
export async function loadHandlerModule(
  path: string,
  registry: HandlerRegistry,
  options: LoadHandlerModuleOptions = {},
): Promise<string[]> {
  const file = resolve(options.cwd ?? process.cwd(), path);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (e) {
    throw new HandlerModuleError(
      `cannot load handler module ${file}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  const setup = mod["default"];
  const handlers = mod["handlers"];
  const hasSetup = typeof setup === "function";
  const hasHandlers = typeof handlers === "object" && handlers !== null && !Array.isArray(handlers);
  const shape =
    'must either default-export a function (registry) => void or export "handlers", ' +
    "an object mapping task types to handler functions";
  if (hasSetup && hasHandlers)
    throw new HandlerModuleError(`handler module ${file} exports both; it ${shape}`);
  if (!hasSetup && !hasHandlers) {
    const found = Object.keys(mod).join(", ") || "nothing";
    throw new HandlerModuleError(`handler module ${file} ${shape} (it exports ${found})`);
  }

  const before = new Set(registry.types());
  if (hasSetup) {
    try {
      await (setup as (registry: HandlerRegistry) => unknown)(registry);
    } catch (e) {
      if (e instanceof HandlerRegistrationError) throw e;
      throw new HandlerModuleError(
        `handler module ${file} failed to register its handlers: ${e instanceof Error ? e.message : String(e)}`,
        {
          cause: e,
        },
      );
    }
  } else {
    for (const [type, handler] of Object.entries(handlers as Record<string, unknown>)) {
      registry.register(type, handler as TaskHandler);
    }
  }
  return registry.types().filter((type) => !before.has(type));
}
