/**
 * The pure DAG engine of the scheduler: workflow validation and compilation, templates, the `when`
 * expression language, run evaluation, saga compensation order and retry arithmetic. No I/O.
 *
 * The scheduler calls `evaluateRun` after every batch of step state changes (completions that
 * arrive in the same event-loop turn share one call) and applies all of its decisions together. A
 * call is O(steps + edges) on precomputed arrays (tens of microseconds for 1000 steps), so there is
 * deliberately no incremental variant to keep in sync.
 */
export {
  DagError,
  EvaluationError,
  ExpressionSyntaxError,
  InputTooLargeError,
  RenderError,
  isDagError,
  type DagErrorCode,
  type SpecError,
} from "./errors.js";
export {
  MAX_EXPRESSION_DEPTH,
  MAX_EXPRESSION_LENGTH,
  evaluateExpression,
  expressionPaths,
  parseExpression,
  resolvePath,
  truthy,
  type BinaryOp,
  type EvalScope,
  type Expr,
  type FunctionName,
  type PathExpr,
  type PathRoot,
  type Resolution,
  type StepView,
} from "./expr.js";
export {
  compensationOrder,
  evaluateRun,
  newEvaluationMemo,
  renderCompensationInput,
  renderElementInput,
  type CompensationInput,
  type Evaluation,
  type EvaluationMemo,
  type FailDecision,
  type ReadyStep,
  type RunOutcome,
  type SkipDecision,
  type StepDecisionError,
} from "./evaluate.js";
export { MAX_CHILD_DEPTH, type ChildWorkflowSpec, type CompiledChild, type OnParentCancel } from "./child.js";
export {
  DEFAULT_MAP_PARALLELISM,
  MAX_MAP_ITEMS,
  MAX_MAP_PARALLELISM,
  type CompiledMap,
  type MapFailurePolicy,
  type MapSpec,
} from "./map.js";
export {
  SIGNAL_NAME_PATTERN,
  SIGNAL_NAME_RULE,
  untilTime,
  type CompiledDurable,
  type CompiledEventWait,
  type SleepSpec,
  type WaitSpec,
} from "./durable.js";
export { canonicalJson, contentHash, jsonEqual, type JsonValue } from "./json.js";
export {
  DEFAULT_BACKOFF_COEFFICIENT,
  DEFAULT_INITIAL_INTERVAL_MS,
  DEFAULT_JITTER,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_MAX_INTERVAL_FACTOR,
  DEFAULT_RETRY_POLICY,
  MAX_ATTEMPTS_LIMIT,
  MAX_BACKOFF_COEFFICIENT,
  isRetryableError,
  resolveRetryPolicy,
  retryDelayMs,
  type Jitter,
  type ResolvedRetryPolicy,
} from "./retry.js";
export { compileSchema, validateAgainstSchema, type CompiledSchema, type SchemaType } from "./schema.js";
export {
  CONCURRENCY_STRATEGIES,
  MAX_CONCURRENCY_LIMIT,
  MAX_CONCURRENCY_LIMITS,
  MAX_RATE,
  MAX_RATE_LIMITS,
  RATE_LIMIT_NAME_PATTERN,
  MAX_DEPENDENCIES,
  MAX_DESCRIPTION_LENGTH,
  MAX_SPEC_BYTES,
  MAX_SPEC_DEPTH,
  MAX_STEPS,
  MAX_VERSION,
  NAME_PATTERN,
  STEP_ID_PATTERN,
  type CompensateSpec,
  type CompiledCompensation,
  type CompiledConcurrencyLimit,
  type CompiledRateLimit,
  type RateLimitSpec,
  type ConcurrencyLimitSpec,
  type ConcurrencyStrategy,
  type CompiledStep,
  type CompiledWorkflow,
  type ResolvedTimeouts,
  type RetryPolicy,
  type RunInfo,
  type SkipReason,
  type StepSpec,
  type StepState,
  type StepStates,
  type StepStatus,
  type StepTimeouts,
  type WorkflowSpec,
} from "./spec.js";
export {
  MAX_TASK_INPUT_BYTES,
  compileTemplate,
  renderTemplate,
  templatePaths,
  type Template,
} from "./template.js";
export { compileWorkflow, validateRunInput, type CompileResult } from "./validate.js";
export {
  checkFairness,
  MAX_FAIR_LEASES,
  MAX_FAIR_WEIGHT,
  MAX_FAIRNESS_LEVELS,
  type CompiledFairShare,
  type FairShareSpec,
} from "./fair-shares.js";
export {
  checkTriggers,
  eventKeyProblem,
  keyMatches,
  matchTriggers,
  MAX_EVENT_KEY_LENGTH,
  type CompiledTrigger,
  type TriggerEvent,
  type TriggerOutcome,
  type TriggerSpec,
} from "./triggers.js";
export {
  CATCH_UP_POLICIES,
  checkSchedules,
  MAX_DECLARED_SCHEDULES,
  OVERLAP_POLICIES,
  type DeclaredSchedule,
  type ScheduleDeclarationSpec,
} from "./schedules.js";
