/** Waiting for a component's work to end, at most a grace (a stop must not hang on a stuck call). */

/** Waits for `work` at most `graceMs`: true when it ended in time, false when the grace ran out first. */
export async function endedWithin(work: Promise<unknown>, graceMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), graceMs)));
  const outcome = await Promise.race([work.then(() => "done" as const), late]);
  clearTimeout(timer);
  return outcome === "done";
}
