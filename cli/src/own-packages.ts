/**
 * Lets a handler module anywhere on disk import the packages of Nexusflow that the CLI itself
 * runs on. A module in `/tmp/x/my-handlers.ts`, with no `node_modules` of its own, cannot resolve
 * `@nexusflow/executor` from its own location; this module-resolution hook then resolves it, and
 * `@nexusflow/common` and `@nexusflow/gen`, to the CLI's copy. A copy the user installed where the
 * module is still wins: the hook only steps in when normal resolution finds nothing.
 *
 * Sharing the CLI's copy also means one `TaskError` class, one `HandlerRegistry`: the handlers
 * the module registers are the ones the CLI's executor runs.
 */
import { registerHooks } from "node:module";

/** The packages a handler module may import without installing them: `@nexusflow/<name>[/subpath]`. */
export const OWN_PACKAGES: readonly string[] = ["executor", "common", "gen"];

const PATTERN = new RegExp(`^@nexusflow/(?:${OWN_PACKAGES.join("|")})(?:/|$)`);

/** Both loaders' codes for "no such module": ESM (`import`) and CommonJS (`require`). */
const NOT_FOUND = new Set(["ERR_MODULE_NOT_FOUND", "MODULE_NOT_FOUND"]);

function isNotFound(e: unknown): boolean {
  return typeof e === "object" && e !== null && "code" in e && NOT_FOUND.has(String(e.code));
}

let registered = false;

/**
 * Installs the hook for this process (once). Synchronous hooks (`module.registerHooks`) run in
 * this thread for both `import` and `require` — tsx compiles a `.ts` file outside any package
 * with `"type": "module"` to CommonJS — and before tsx's own, which they call through
 * `nextResolve`, so TypeScript paths keep resolving as tsx does.
 */
export function shareOwnPackages(): void {
  if (registered) return;
  registered = true;
  // While we resolve from here, the hook sees our own lookup too: it must pass that one through.
  let resolving = false;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (resolving || !PATTERN.test(specifier)) return nextResolve(specifier, context);
      try {
        return nextResolve(specifier, context);
      } catch (e) {
        if (!isNotFound(e)) throw e;
        resolving = true;
        try {
          return { url: import.meta.resolve(specifier), shortCircuit: true };
        } catch {
          throw e; // not ours either (a subpath that does not exist): the original error says it
        } finally {
          resolving = false;
        }
      }
    },
  });
}
