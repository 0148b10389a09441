/**
 * The task types an executor serves: the ones it advertises in its Attach, and the handler it
 * runs for a leased type.
 */
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import { ExecutorError } from "./errors.js";
import type { HandlerRegistration, HandlerRegistry } from "./handlers/index.js";
import { TaskError } from "./handlers/task-error.js";

/**
 * The types to advertise, sorted: `wanted` (the `taskTypes` option) or else every registered one.
 * Throws {@link ExecutorError} `UNKNOWN_TASK_TYPES` when `wanted` names a type with no handler.
 */
export function advertisedTypes(registry: HandlerRegistry, wanted: readonly string[] | undefined): string[] {
  const registered = registry.types();
  const types = wanted ?? registered;
  const unknown = types.filter((t) => !registry.has(t));
  if (unknown.length > 0) {
    throw new ExecutorError(
      "UNKNOWN_TASK_TYPES",
      `no handler is registered for task type(s) ${unknown.map((t) => JSON.stringify(t)).join(", ")} (registered: ${registered.join(", ")})`,
    );
  }
  return [...types].sort();
}

/**
 * The handler for a lease of `type`. A type this executor does not advertise (a scheduler that
 * leased it anyway) gets a handler that fails terminally with `UNKNOWN_TASK_TYPE`.
 */
export function servedHandler(
  registry: HandlerRegistry,
  advertised: readonly string[],
  type: string,
): HandlerRegistration {
  if (advertised.includes(type)) return registry.registration(type);
  const error = TaskError.terminal(
    TaskErrorType.UNKNOWN_TASK_TYPE,
    `this executor does not serve task type "${type}"`,
    {
      details: { taskType: type, served: advertised },
    },
  );
  return {
    handler: () => {
      throw error;
    },
    heartbeat: "manual",
  };
}
