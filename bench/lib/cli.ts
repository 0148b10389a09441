/** Command-line options of `npm run bench`. */

/** The sections, in the order they run. */
export const SECTIONS = [
  "throughput",
  "bulk",
  "latency",
  "dag",
  "composition",
  "flow",
  "sessions",
  "cost",
  "retention",
  "recovery",
  "failover",
  "scaling",
  "partitioning",
  "sampling",
  "telemetry",
] as const;
/** One section name. */
export type Section = (typeof SECTIONS)[number];
/**
 * The sections run without --only: recovery and failover (minutes of killed processes), scaling
 * (failover's last phase alone: 25 drains of processes), partitioning (cluster mode's cost, 17
 * drains and 17 open loops), sampling (needs --tracing) and telemetry (ten bench processes) only
 * when named.
 */
export const DEFAULT_SECTIONS: readonly Section[] = SECTIONS.filter(
  (s) =>
    s !== "recovery" &&
    s !== "failover" &&
    s !== "scaling" &&
    s !== "partitioning" &&
    s !== "sampling" &&
    s !== "telemetry",
);
/** The systems compared in sections 1, 2 and 5 (and 3, those with a workflow model). */
export const SYSTEMS = ["nexusflow", "pg-boss", "graphile-worker", "dbos"] as const;
/** One system name. */
export type SystemName = (typeof SYSTEMS)[number];

/** Parsed options. */
export interface BenchOptions {
  /** Sections to run. @default every section but recovery ({@link DEFAULT_SECTIONS}) */
  only: Section[];
  /** Multiplies every size and duration (0.1 for a quick look). @default 1 */
  scale: number;
  /** Systems to compare. @default all four */
  systems: SystemName[];
  /** Write a V8 CPU profile of the bench process for each Nexusflow phase. @default false */
  profile: boolean;
  /**
   * With the CPU profiles, sample every allocation of each profiled thread (collected or not) into a
   * .heapprofile beside each .cpuprofile, and print what each phase allocated. Implies `profile`.
   * @default false
   */
  allocations: boolean;
  /**
   * Nexusflow's scheduler records Prometheus metrics and is scraped every 15 s, as a deployment
   * is, to measure what metrics cost. @default false (no metrics)
   */
  metrics: boolean;
  /**
   * Trace this share of runs (0 < ratio <= 1) with OpenTelemetry, as a deployment with
   * OTEL_TRACES_SAMPLER=parentbased_traceidratio does: the scheduler and the executors export
   * their spans over OTLP/HTTP to a sink in its own process, which discards them. @default off
   */
  tracing: number | undefined;
  /**
   * Section 1 runs each system's phase twice in the same process and reports the second: the
   * first (its enqueue and drain, not counted) compiles the code paths the drain runs and fills
   * the pooled executor thread; the consumers are started again inside the measured drain's window
   * either way. @default false (one phase, its drain the process's first)
   */
  warmUp: boolean;
  /** Directory for the JSON results (and profiles). @default bench/results */
  out: string | undefined;
  /** Explicit open-loop rates (runs/s); replaces 100, 500, 1000 and half the drain rate. */
  rates: number[] | undefined;
  /** Print usage and exit. */
  help: boolean;
}

/** Usage text. */
export const USAGE = `usage: npm run bench -- [--only ${SECTIONS.join("|")}[,...]] [--scale F]
                        [--systems ${SYSTEMS.join(",")}] [--rates 100,500] [--profile] [--allocations] [--metrics] [--tracing RATIO] [--out DIR]
  --only      run only these sections (comma-separated); cost needs throughput and runs it;
              bulk: enqueue through each system's bulk API (StartRuns, insert, addJobs), then drain;
              retention: the drain beside a purge of old runs (Nexusflow);
              recovery: SIGKILLed executors' tasks running again (Nexusflow; only when named)
              failover: SIGKILLed scheduler replicas' runs leased again, then scaling (Nexusflow; only when named)
              scaling: failover's cost of partitioning alone: one scheduler, one replica, three (only when named)
              partitioning: one scheduler without and with cluster mode, in process (only when named)
              sampling: drains with none and a tenth of runs sampled by their caller, in one
              process (with --tracing, e.g. --tracing 0; only when named)
              telemetry: sections 1 and 2 without, then with --metrics --tracing 0.1, each in a
              bench process of its own, five pairs compared by medians (only when named, ~8 min)
  --scale     multiply sizes and durations (e.g. 0.1 for a quick run)
  --systems   systems compared in throughput, latency and cost (dag: nexusflow, dbos)
  --rates     open-loop arrival rates in runs/s (default 100,500,1000 and half our drain rate)
  --profile   write a .cpuprofile per Nexusflow phase and print its hottest functions
  --allocations
              --profile, and every allocation sampled too: a .heapprofile per profiled thread and
              phase, and the bytes each phase allocated
  --metrics   Nexusflow's scheduler and executors record Prometheus metrics, scraped every 15 s
              (their cost)
  --tracing   trace this share of Nexusflow's runs (e.g. 0.1) with OpenTelemetry, exported over
              OTLP/HTTP to a discarding sink in its own process (their cost); 0 propagates every
              run's trace context and records no span (what the sampled share costs, by difference)
  --warm-up   section 1 runs each system's enqueue and drain once first, not counted, in the same
              process: the measured drain runs on code already compiled
  --out       directory for results (default bench/results)`;

/** Raised for a bad command line; the message says what is wrong. */
export class UsageError extends Error {
  override name = "UsageError";
}

function list<T extends string>(flag: string, value: string, allowed: readonly T[]): T[] {
  const items = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  const bad = items.filter((s) => !(allowed as readonly string[]).includes(s));
  if (items.length === 0 || bad.length > 0)
    throw new UsageError(`${flag}: expected ${allowed.join(", ")}; got ${JSON.stringify(value)}`);
  return items as T[];
}

/** Parses `argv` (without node and the script). Throws {@link UsageError}. */
export function parseArgs(argv: readonly string[]): BenchOptions {
  const options: BenchOptions = {
    only: [...DEFAULT_SECTIONS],
    scale: 1,
    systems: [...SYSTEMS],
    profile: false,
    allocations: false,
    metrics: false,
    tracing: undefined,
    warmUp: false,
    out: undefined,
    rates: undefined,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? arg.split("=", 2) : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === "") throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--only":
        options.only = list("--only", value(), SECTIONS);
        break;
      case "--scale": {
        const v = value();
        const n = Number(v);
        if (!Number.isFinite(n) || n <= 0 || n > 10)
          throw new UsageError(`--scale: expected a number in (0, 10]; got ${JSON.stringify(v)}`);
        options.scale = n;
        break;
      }
      case "--systems":
        options.systems = list("--systems", value(), SYSTEMS);
        break;
      case "--rates": {
        const v = value();
        const rates = v.split(",").map(Number);
        if (rates.some((r) => !Number.isFinite(r) || r <= 0 || r > 100_000))
          throw new UsageError(`--rates: expected positive numbers; got ${JSON.stringify(v)}`);
        options.rates = rates;
        break;
      }
      case "--profile":
        options.profile = true;
        break;
      case "--allocations":
        options.profile = true;
        options.allocations = true;
        break;
      case "--metrics":
        options.metrics = true;
        break;
      case "--tracing": {
        const v = value();
        const ratio = Number(v);
        if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1)
          throw new UsageError(`--tracing: expected a share of runs in [0, 1]; got ${JSON.stringify(v)}`);
        options.tracing = ratio;
        break;
      }
      case "--warm-up":
        options.warmUp = true;
        break;
      case "--out":
        options.out = value();
        break;
      case "--help":
      case "-h":
        options.help = true;
        break;
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  return options;
}

/** `n` scaled, at least `min`. */
export function scaled(n: number, scale: number, min = 1): number {
  return Math.max(min, Math.round(n * scale));
}
