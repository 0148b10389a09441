/** What a run is started with by the engine's callers inside the scheduler (schedules, events). */
export interface StartRunInput {
  workflowName: string;
  workflowVersion: number;
  input: unknown;
  idempotencyKey: string;
  labels: Record<string, string>;
}
