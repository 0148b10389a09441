/** What the CLI's end-to-end tests run their commands with. */
import { delimiter } from "node:path";

/** The environment of a newcomer's shell: none of the test run's own service settings, no colours. */
export function cleanEnv(): Record<string, string> {
  const drop =
    /^(NEXUSFLOW_|AUTH_|DATABASE_|KAFKA_|S3_|SCHEDULER_|GATEWAY_|EXECUTOR_|ARTIFACT|EMBEDDED_PG|npm_|NODE_OPTIONS$)/;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !drop.test(k)) env[k] = v;
  // npm puts the project's node_modules/.bin (and its Node 24) first on PATH for `npm test`; a
  // newcomer's shell has neither, so the examples must get there with npx as documented.
  env["PATH"] = (env["PATH"] ?? "")
    .split(delimiter)
    .filter((p) => !p.includes(`node_modules${"/"}.bin`) && !p.includes("node-gyp-bin"))
    .join(delimiter);
  env["NO_COLOR"] = "1";
  return env;
}
