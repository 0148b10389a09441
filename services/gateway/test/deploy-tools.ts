/**
 * The tools that check the deployment files, built by scripts/build-tools.sh into .cache/tools/bin
 * (.ci/run builds them first): kustomize, actionlint, k8s-check, dockerfile-check and compose-check. A test that
 * needs one skips when it is missing, except under CI=true, where it fails.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import { ROOT } from "./tools.js";

const run = promisify(execFile);

/** A tool of .cache/tools/bin. */
export type DeployTool = "kustomize" | "actionlint" | "k8s-check" | "dockerfile-check" | "compose-check";

/** The tool's path, or undefined after skipping `t` (locally) or failing (CI=true) when it is missing. */
export function deployTool(t: TestContext, name: DeployTool): string | undefined {
  const path = join(ROOT, ".cache", "tools", "bin", name);
  if (existsSync(path)) return path;
  const why = `${name} is missing from .cache/tools/bin: run scripts/build-tools.sh (needs Go)`;
  if (process.env["CI"] === "true") throw new Error(why);
  t.skip(why);
  return undefined;
}

/** Runs `tool` with `args` (and `input` on stdin); resolves with its exit code and output. */
export async function runTool(
  tool: string,
  args: string[],
  options: { input?: string; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const promise = run(tool, args, {
    cwd: options.cwd ?? ROOT,
    maxBuffer: 64 * 1024 * 1024,
    timeout: 120_000,
  });
  if (options.input !== undefined) {
    promise.child.stdin?.end(options.input);
  }
  try {
    const { stdout, stderr } = await promise;
    return { code: 0, stdout, stderr };
  } catch (e) {
    const failure = e as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failure.code !== "number") throw e;
    return { code: failure.code, stdout: failure.stdout ?? "", stderr: failure.stderr ?? "" };
  }
}
