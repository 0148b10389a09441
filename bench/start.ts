/**
 * `npm run bench`: reads the command line, starts tracing when `--tracing` asks for it (before the
 * services' modules load: the instrumentations patch gRPC, HTTP and pg as they are imported), then
 * imports and runs the benchmark (main.ts).
 */
import { parseArgs, UsageError, USAGE, type BenchOptions } from "./lib/cli.js";
import { startBenchTracing } from "./lib/tracing.js";

const argv = process.argv.slice(2);
let options: BenchOptions | undefined;
try {
  options = parseArgs(argv);
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(`${e.message}\n${USAGE}\n`);
  process.exitCode = 2;
}
if (options?.help === true) {
  process.stdout.write(`${USAGE}\n`);
} else if (options !== undefined) {
  const tracing = options.tracing === undefined ? undefined : await startBenchTracing(options.tracing);
  const { main } = await import("./main.js");
  try {
    await main(argv);
  } finally {
    await tracing?.stop();
  }
}
