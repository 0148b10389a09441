#!/usr/bin/env node
// The container image's command: `entrypoint.mjs SERVICE` runs one Nexusflow service from the
// compiled JavaScript beside this file (scripts/build-dist.mjs lays it out as the workspace is):
//   scheduler | executor | gateway | migrate
// Each service's main module handles SIGTERM and SIGINT itself (drain, then exit), and the image
// runs this under tini, which forwards signals and reaps the shell tasks' orphans.
import { setSourceMapsSupport } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** The main module of each service, relative to this file. */
export const SERVICES = {
  scheduler: "services/scheduler/src/main.js",
  executor: "services/executor/src/main.js",
  gateway: "services/gateway/src/main.js",
  migrate: "services/scheduler/src/migrate.js",
};

// Stack traces name the TypeScript lines of Nexusflow's own code: the source maps of the compiled
// services, not those of node_modules, which Node would otherwise read and keep in memory for
// every package file loaded (~1.3 MiB of the scheduler's V8 heap, measured: bench/notes/
// 15-session-thirteen.md, RSS). NODE_OPTIONS=--enable-source-maps still maps every file.
if (!process.sourceMapsEnabled) setSourceMapsSupport(true, { nodeModules: false, generatedCode: false });

const here = dirname(fileURLToPath(import.meta.url));
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const service = process.argv[2];
  const main = service === undefined ? undefined : SERVICES[service];
  if (main === undefined) {
    process.stderr.write(
      `nexusflow: ${service === undefined ? "no service named" : `unknown service ${JSON.stringify(service)}`} (usage: SERVICE [ARGS...] with SERVICE one of ${Object.keys(SERVICES).join(", ")})\n`,
    );
    process.exit(2);
  }
  // The service sees its own arguments as if it were started directly.
  process.argv.splice(1, 2, join(here, main));
  await import(pathToFileURL(join(here, main)).href);
}
