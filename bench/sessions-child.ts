/**
 * The scheduler alone in its own process, for section 4: its RSS and CPU are then its own, not the
 * executors'. Driven over IPC by sections/sessions.ts: it answers "sample" and stops on "stop".
 * Usage (by the bench only): node --import tsx bench/sessions-child.ts <databaseUrl>
 */
import { createLogger } from "@nexusflow/common";
import { Scheduler, tuneRuntime } from "@nexusflow/scheduler";

/** A message from the bench. */
type Command = { type: "sample" } | { type: "stop" };

tuneRuntime();
const url = process.argv[2];
if (url === undefined || process.send === undefined) {
  process.stderr.write("sessions-child: run by the bench with an IPC channel and a database URL\n");
  process.exitCode = 2;
} else {
  const send = process.send.bind(process);
  const scheduler = new Scheduler({ port: 0, databaseUrl: url, log: createLogger("scheduler", "warn") });
  await scheduler.start();
  send({ type: "ready", address: scheduler.address });
  // The bench went away (crash, Ctrl-C): stop too, rather than outlive it.
  process.once("disconnect", () => void scheduler.stop());
  process.on("message", (m: Command) => {
    if (m.type === "sample") {
      const mem = process.memoryUsage();
      send({
        type: "sample",
        at: performance.now() + performance.timeOrigin,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        cpu: process.cpuUsage(),
        sessions: scheduler.engine.stats().sessions,
      });
    } else {
      void scheduler.stop().then(() => process.disconnect());
    }
  });
}
