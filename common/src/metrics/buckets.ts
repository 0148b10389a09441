/**
 * Histogram buckets shared by the services, in base units (seconds, rows). Chosen once here so
 * that dashboards and alert rules can rely on the same bounds in every service.
 */

/** Latencies of RPCs, commits and task hand-offs: 0.5 ms to 60 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** Durations of task handlers and runs: 1 ms to 1 hour. */
export const DURATION_BUCKETS: readonly number[] = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
];

/** Counts such as rows per group commit: powers of two up to 4096. */
export const SIZE_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
