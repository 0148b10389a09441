/** The UI's client routes (ui/src/router.ts): paths to pages and back. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Route, parseRoute, routePath } from "../src/router";

describe("routes", () => {
  it("map paths to pages and back, ids and names percent-encoded", () => {
    const routes: Route[] = [
      { page: "runs" },
      { page: "run", runId: "0190a1b2-c3d4" },
      { page: "run", runId: "a/b?c#d" },
      { page: "workflows", name: undefined },
      { page: "workflows", name: "trip-booking" },
      { page: "executors" },
      { page: "schedules", scheduleId: undefined },
      { page: "schedules", scheduleId: "nightly/eu" },
      { page: "events", eventId: undefined },
      { page: "events", eventId: "0190a1b2-e" },
    ];
    for (const route of routes) assert.deepEqual(parseRoute(routePath(route)), route);
    assert.equal(routePath({ page: "run", runId: "a/b" }), "/ui/runs/a%2Fb");
  });

  it("shows the runs for /ui/ and anything unknown", () => {
    for (const path of ["/ui/", "/ui", "/", "/ui/nothing/here", "/ui/runs/"])
      assert.deepEqual(parseRoute(path), { page: "runs" });
  });

  it("takes a path with a broken percent escape as it is, without throwing", () => {
    assert.deepEqual(parseRoute("/ui/runs/%E0%A4%A"), { page: "run", runId: "%E0%A4%A" });
    assert.deepEqual(parseRoute("/ui/workflows/100%"), { page: "workflows", name: "100%" });
    assert.deepEqual(parseRoute("/ui/%zz/x"), { page: "runs" });
  });
});
