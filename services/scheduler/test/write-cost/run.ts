/**
 * Prints what a no-op single-step run writes per task (see measure.ts), as JSON:
 * `TEST_LOG_LEVEL=error npm exec -- tsx services/scheduler/test/write-cost/run.ts [runs] [keyed]` (the
 * scheduler's warnings go to stdout too at the default level).
 */
import { measureWriteCost } from "./measure.js";

const runs = Number(process.argv[2] ?? 2000);
const keyed = process.argv[3] === "keyed";
const cost = await measureWriteCost({ runs, keyed });
process.stdout.write(`${JSON.stringify(cost, null, 2)}\n`);
