/**
 * A scheduler whose port is taken does not start: it says so in one line naming the port and the
 * variable to change (main.ts prints PortInUseError without a stack trace), and lets go of the
 * database, so that a scheduler on a free port can start on it at once.
 */
import assert from "node:assert/strict";
import { type Server, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { PortInUseError, Scheduler } from "../src/scheduler.js";
import { startTestDatabase, startTestScheduler, testLogger } from "./support.js";

describe("a scheduler on a port that is taken", () => {
  let db: Awaited<ReturnType<typeof startTestDatabase>>;
  let taken: Server;
  let port: number;

  before(async () => {
    db = await startTestDatabase();
    taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    port = (taken.address() as { port: number }).port;
  });

  after(async () => {
    await new Promise((resolve) => taken?.close(resolve));
    await db?.close();
  });

  it("fails with PortInUseError naming the port and SCHEDULER_PORT, and frees the database", async () => {
    const scheduler = new Scheduler({
      port,
      host: "127.0.0.1",
      databaseUrl: db.url,
      log: testLogger("scheduler"),
    });
    await assert.rejects(scheduler.start(), (e: unknown) => {
      assert.ok(e instanceof PortInUseError, String(e));
      assert.equal(
        e.message,
        `port ${port} on 127.0.0.1 is already in use (set SCHEDULER_PORT to another port)`,
      );
      return true;
    });
    assert.equal(scheduler.state, "STOPPED");
    const next = await startTestScheduler(db.url);
    await next.stop();
  });
});
