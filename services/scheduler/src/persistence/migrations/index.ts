/** Every migration, in order. Listed explicitly so they load the same under tsx and in bundles. */
import { Migration20261126000000Initial } from "./Migration20261126000000Initial.js";
import { Migration20261126010000HotUpdates } from "./Migration20261126010000HotUpdates.js";
import { Migration20261126020000OutboxRunBatches } from "./Migration20261126020000OutboxRunBatches.js";
import { Migration20261205000000IdempotencyKeys } from "./Migration20261205000000IdempotencyKeys.js";
import { Migration20261205010000RunTraceParent } from "./Migration20261205010000RunTraceParent.js";
import { Migration20261205020000LeanerRunIndexes } from "./Migration20261205020000LeanerRunIndexes.js";
import { Migration20261205030000TaskFillfactor } from "./Migration20261205030000TaskFillfactor.js";
import { Migration20261205040000LatestAttemptInTaskRow } from "./Migration20261205040000LatestAttemptInTaskRow.js";
import { Migration20261205100000Schedules } from "./Migration20261205100000Schedules.js";
import { Migration20261205150000OutboxRowPerCommit } from "./Migration20261205150000OutboxRowPerCommit.js";
import { Migration20261205160000Partitions } from "./Migration20261205160000Partitions.js";
import { Migration20261205170000RunSignals } from "./Migration20261205170000RunSignals.js";
import { Migration20261205180000EventTriggers } from "./Migration20261205180000EventTriggers.js";
import { Migration20261205190000ChildRuns } from "./Migration20261205190000ChildRuns.js";
import { Migration20261205200000RunReruns } from "./Migration20261205200000RunReruns.js";
import { Migration20261205210000RateLimitBuckets } from "./Migration20261205210000RateLimitBuckets.js";
import { Migration20261205220000MapElements } from "./Migration20261205220000MapElements.js";
import { Migration20261205230000DeclaredSchedules } from "./Migration20261205230000DeclaredSchedules.js";
import { Migration20261205231000EventRetention } from "./Migration20261205231000EventRetention.js";
import { Migration20261206000000EventWaits } from "./Migration20261206000000EventWaits.js";
import { Migration20261206010000ParkedRuns } from "./Migration20261206010000ParkedRuns.js";
import { Migration20261206020000RateLimitGrants } from "./Migration20261206020000RateLimitGrants.js";
import { Migration20261206030000RateLimitFullAt } from "./Migration20261206030000RateLimitFullAt.js";
import { Migration20261207010000OutboxEventTraces } from "./Migration20261207010000OutboxEventTraces.js";

/** The migrations MikroORM applies at start-up. */
export const migrationsList = [
  { name: "Migration20261126000000Initial", class: Migration20261126000000Initial },
  { name: "Migration20261126010000HotUpdates", class: Migration20261126010000HotUpdates },
  { name: "Migration20261126020000OutboxRunBatches", class: Migration20261126020000OutboxRunBatches },
  { name: "Migration20261205000000IdempotencyKeys", class: Migration20261205000000IdempotencyKeys },
  { name: "Migration20261205010000RunTraceParent", class: Migration20261205010000RunTraceParent },
  { name: "Migration20261205020000LeanerRunIndexes", class: Migration20261205020000LeanerRunIndexes },
  { name: "Migration20261205030000TaskFillfactor", class: Migration20261205030000TaskFillfactor },
  {
    name: "Migration20261205040000LatestAttemptInTaskRow",
    class: Migration20261205040000LatestAttemptInTaskRow,
  },
  { name: "Migration20261205100000Schedules", class: Migration20261205100000Schedules },
  { name: "Migration20261205150000OutboxRowPerCommit", class: Migration20261205150000OutboxRowPerCommit },
  { name: "Migration20261205160000Partitions", class: Migration20261205160000Partitions },
  { name: "Migration20261205170000RunSignals", class: Migration20261205170000RunSignals },
  { name: "Migration20261205180000EventTriggers", class: Migration20261205180000EventTriggers },
  { name: "Migration20261205190000ChildRuns", class: Migration20261205190000ChildRuns },
  { name: "Migration20261205200000RunReruns", class: Migration20261205200000RunReruns },
  { name: "Migration20261205210000RateLimitBuckets", class: Migration20261205210000RateLimitBuckets },
  { name: "Migration20261205220000MapElements", class: Migration20261205220000MapElements },
  { name: "Migration20261205230000DeclaredSchedules", class: Migration20261205230000DeclaredSchedules },
  { name: "Migration20261205231000EventRetention", class: Migration20261205231000EventRetention },
  { name: "Migration20261206000000EventWaits", class: Migration20261206000000EventWaits },
  { name: "Migration20261206010000ParkedRuns", class: Migration20261206010000ParkedRuns },
  { name: "Migration20261206020000RateLimitGrants", class: Migration20261206020000RateLimitGrants },
  { name: "Migration20261206030000RateLimitFullAt", class: Migration20261206030000RateLimitFullAt },
  { name: "Migration20261207010000OutboxEventTraces", class: Migration20261207010000OutboxEventTraces },
];
