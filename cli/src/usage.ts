/**
 * The CLI's help: the whole of it (`nexusflow help`), and one command's part of it (`nexusflow help
 * runs`, `nexusflow runs --help`, `nexusflow runs list -h`), cut from the same text so the two never
 * disagree.
 */
import { DEFAULT_ADDRESS } from "./gateway-client.js";

/** Usage of the operator commands. */
export const OPERATOR_USAGE = `Operator commands (talk to the gateway):
  apply <file>...                 register workflow definitions (JSON files; other JSON is skipped)
  runs start <workflow> [--input <json|@file>] [--version N] [--label k=v]... [--idempotency-key K] [--watch]
  runs get <run-id>               a run with its tasks
  runs list [--workflow W] [--status S]... [--label k=v]... [--limit N] [--page-token T]
  runs watch <run-id>             live progress until the run ends (exit 1 unless it succeeded)
  runs cancel <run-id> [--reason R] [--compensate]
  runs signal <run-id> <name> [--payload JSON|@file] [--idempotency-key K]
  runs rerun <run-id> --from STEP [--input JSON|@file] [--idempotency-key K] [--watch]
                                  a new run from STEP: the steps upstream keep their outputs
  runs why <run-id> <step-id> [--compensation]
                                  why a step is not running: every gate that holds it now
  schedules create <id> --workflow W --cron EXPR [--zone Europe/Lisbon] [--input <json|@file>] [--version N]
                                  [--label k=v]... [--overlap skip|buffer-one|allow-all|cancel-other|terminate-other]
                                  [--max-concurrent N] [--catch-up off|last|all] [--catch-up-window 1h] [--paused] [--note N]
  schedules list [--workflow W] [--limit N] [--page-token T]
  schedules get <id>              a schedule, its next ten fire times and its recent fires
  schedules pause|resume <id> [--note N]
  schedules trigger <id> [--idempotency-key K]
                                  start a run now, whatever the overlap policy
  schedules backfill <id> --from TIME --to TIME
                                  a run for each fire time of [from, to) that has none
  schedules delete <id>
  ratelimits list [--name N] [--limit N] [--page-token T]
                                  rate limit buckets: tokens, pauses, tasks waiting
  ratelimits pause <name> [--key K] --until TIME|--for DURATION [--note N]
                                  no task of the bucket is leased until then (stored: survives restarts)
  ratelimits resume <name> [--key K]
  events publish <key> [--payload JSON|@file] [--idempotency-key K]
                                  store an event: each workflow whose triggers match it starts a run
                                  with the payload as input (the same key again starts nothing)
  events get <event-id>           an event and the run each matching workflow started, or why not
  events list [--prefix P] [--limit N] [--page-token T]
  logs <run-id> <step-id> [--attempt N] [--follow]
                                  a task's log lines; one that is not there is an error saying where it looked
                                  (<step-id>: a step, step.compensation, or step[i] for element i of a map step)
  artifacts list <run-id> [<step-id>]
                                  what a run's tasks stored: step, attempt, name, size, content type
  artifacts get <run-id> <step-id> <name> [--attempt N] [-o FILE|-] [--force] [--stream]
                                  one of those files (the latest attempt's unless --attempt) to standard output,
                                  or with -o to FILE (replaced only with --force); --stream skips presigned URLs
  executors [--type T] [--limit N] [--page-token T]
                                  the executor sessions attached now: task types, leases held, slots, credit, draining
  cluster                         the scheduler replicas, the partitions each owns and their epochs
  token [--scope S]... [--ttl 1h] [--subject NAME]
                                  mint a DEV token with the dev key of NEXUSFLOW_DATA_DIR, ./.nexusflow or the running npm start

Common options:
  --address URL      the gateway (NEXUSFLOW_ADDRESS; default: the running npm start's, else ${DEFAULT_ADDRESS})
  --token JWT        bearer token (NEXUSFLOW_TOKEN; on this machine, a dev token when the dev key exists)
  --output FORMAT    table (default) or json (artifacts get: -o/--output is the file to write)
`;

export const USAGE = `Usage: nexusflow <command> [options]

Commands:
  dev      Start the whole stack locally (scheduler, two executors, gateway), register the
           workflows in examples/, run the sample order-pipeline and keep running until Ctrl-C.
           Options:
             --exit-after-sample   stop after the sample run; exit 0 if it succeeded, 1 if not
             --schedulers N        run N scheduler replicas (1 to 9, default 1) sharing one database
                                   in cluster mode (docs/replicas.md); SCHEDULER_PORT is the first's
           The services trust only a local dev key (.nexusflow/dev-keys, created on first use).
  executor [--handlers <module>] [--id ID] [--slots N] [--types a,b] [--scheduler host:port]
           Run an executor with the built-in task types and the handlers of a module (.ts or .js,
           relative to the current directory, default export (registry) => ...; it may import
           @nexusflow/executor without installing it) until Ctrl-C, which drains it (again: exit now).
           Defaults: EXECUTOR_HANDLERS, EXECUTOR_ID, EXECUTOR_SLOTS, EXECUTOR_TASK_TYPES and
           SCHEDULER_ADDRESS, else the running dev stack's scheduler. Token: EXECUTOR_TOKEN or
           EXECUTOR_TOKEN_FILE, else minted for the executor id with the dev key (as token finds it).
  events tail [--brokers host:port] [--topic T] [--from-beginning] [--run ID]
           Print lifecycle events as JSON lines until Ctrl-C: from Kafka (KAFKA_BROKERS, KAFKA_TOPIC),
           else from the outbox in PostgreSQL (DATABASE_URL, else the dev stack's database).
  help     Show this help.

Environment (dev): SCHEDULER_PORT and GATEWAY_PORT (free ports when unset), DATABASE_URL (unset:
embedded PostgreSQL under NEXUSFLOW_DATA_DIR, default .nexusflow), LOG_LEVEL, and everything else
the services read; it is passed through to them.

${OPERATOR_USAGE}`;

/** Where the common options of the operator commands begin in {@link USAGE}. */
const COMMON_OPTIONS_HEADING = "Common options:";

/** The entries of a usage text (a line indented by two spaces, with the deeper-indented lines below it), by their first word. */
function entriesOf(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of text.split("\n")) {
    if (/^ {2}[a-z]/.test(line)) {
      const word = line.slice(2).split(" ", 1)[0] as string;
      current = entries.get(word) ?? [];
      entries.set(word, current);
    } else if (!/^ {3,}\S/.test(line)) current = undefined;
    current?.push(line);
  }
  return entries;
}

const ENTRIES = entriesOf(USAGE);
/** The commands that talk to the gateway: their help ends with the common options. */
const OPERATORS = new Set(entriesOf(OPERATOR_USAGE).keys());

/** The commands whose help is cut from {@link USAGE} (`help` itself prints the whole). */
export const COMMANDS: readonly string[] = [...ENTRIES.keys()].filter((c) => c !== "help");

/**
 * The part of {@link USAGE} about `command`: each entry that starts with it, then, for a command
 * that talks to the gateway, the common options. Undefined for a command there is none of.
 */
export function commandUsage(command: string): string | undefined {
  const entries = command === "help" ? undefined : ENTRIES.get(command);
  if (entries === undefined) return undefined;
  const common = OPERATORS.has(command) ? `\n${USAGE.slice(USAGE.indexOf(COMMON_OPTIONS_HEADING))}` : "";
  return `Usage (nexusflow ${command}):\n${entries.join("\n")}\n${common}`;
}

/** Whether `args` ask for help: `--help` or `-h` before a `--` (after it, arguments are values). */
export function wantsHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}
