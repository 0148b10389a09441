/**
 * The engine shell's side of a child workflow step (core/children.ts has the rules): what the
 * child run will be, read from the definitions when the step starts.
 */
import { ApiError, Code } from "@nexusflow/common";
import { TaskErrorType } from "@nexusflow/common/task-error-types";
import type * as core from "../core/index.js";
import { checkStartInput, type Definitions } from "./definitions.js";

/**
 * The child run of a step that asks for workflow `child` (its version, or the latest) with
 * `input`: its definition and input, or the step's error when the workflow does not exist
 * (CHILD_WORKFLOW_NOT_FOUND) or refuses the input (CHILD_START_FAILED). Other failures (the
 * database) are thrown, for the caller to try again.
 */
export async function resolveChild(
  definitions: Pick<Definitions, "resolve">,
  child: { name: string; version: number | null },
  input: unknown,
): Promise<core.ChildResolution> {
  try {
    const def = await definitions.resolve(child.name, child.version ?? 0);
    checkStartInput(def.workflow, input);
    return { definitionId: def.id, workflow: def.workflow, input };
  } catch (error) {
    if (
      !(error instanceof ApiError) ||
      (error.code !== Code.NOT_FOUND && error.code !== Code.INVALID_ARGUMENT)
    )
      throw error;
    const notFound = error.code === Code.NOT_FOUND;
    return {
      error: {
        type: notFound ? TaskErrorType.CHILD_WORKFLOW_NOT_FOUND : TaskErrorType.CHILD_START_FAILED,
        message: `workflow ${child.name}${child.version === null ? "" : ` v${child.version}`}: ${error.message}`,
        retryable: false,
      },
    };
  }
}
