/**
 * The web UI in a real browser: Debian's Chromium (/usr/bin/chromium) driven by playwright-core,
 * headless and kept off the network, against a stack this test starts: embedded PostgreSQL, a
 * scheduler and a gateway with authentication on (as `npm start` runs them), the UI built from
 * ui/ by Vite and served by the gateway under /ui/, and later an executor with the examples'
 * handlers.
 *
 * - A token handed over in the fragment (`/ui/#token=...`, as `npm start`'s link does) signs in,
 *   lands in sessionStorage and is gone from the address bar.
 * - The trip-booking saga is started from the Workflows page with the declined card. No executor
 *   serves its task types yet, so the run waits: its DAG shows flight and hotel queued, the step's
 *   details say why it waits, and a runs:write token sees the cancel actions.
 * - A second browser context signs in through the token prompt with a read-only token (runs:read):
 *   the same run shows no cancel action.
 * - The executor starts; without a reload (a marker set on the page survives) the DAG changes
 *   live from WatchRun until the run is COMPENSATED: flight and hotel compensated, charge failed
 *   with CARD_DECLINED; the failed step's log shows the decline, the flight's the booking and
 *   its compensation's the cancellation (logs in a filesystem store the executor writes). The
 *   compensations have their own lane (a step selected from it by keyboard), and a step's
 *   attempt timeline names the executor and the error.
 * - The runs page lists the run, filtered by workflow, status and labels, and shows a run started
 *   elsewhere without a reload.
 * - A step's artifact downloads from its details (through GetArtifact, with the token).
 * - A long run (a 10-minute sleep) holds a lease the Executors page shows (the executor's session,
 *   its sleep type with one lease held), then is cancelled from its page and shown CANCELLED.
 * - A 1 -> 1000 -> 1 run, opened from the runs list, is drawn whole (1002 boxes, all succeeded)
 *   in under 1 s of main-thread time (Chrome's TaskDuration over CDP, as the thread's CPU time),
 *   and a box selected from the keyboard also takes under 1 s.
 * - No console errors or page errors in any of it, and no WCAG 2.1 A/AA violation that axe-core
 *   finds on the token prompt, a workflow, a waiting and a compensated run, the runs page, the
 *   executors page and the large run.
 * - Durable waits, reruns, children, maps, schedules and events (a second test): a run whose wait
 *   step is shown WAITING (its own colour, "waiting for approved until ...") is signalled from its
 *   page (the Send signal form) and succeeds without a reload, its signal listed; a read-only
 *   token sees neither the form nor a rerun or schedule action, and the gateway refuses its
 *   SignalRun, RerunRun, TriggerSchedule and PauseSchedule anyway (PERMISSION_DENIED). A run
 *   failed at its second step (a handler failing on its first call only) is rerun from that step
 *   from its page: the page goes to the new run, which succeeds with its first step reused (not
 *   called again) and links back, and the original lists its rerun. A child workflow step links
 *   to its child run, which links back to its parent. A map step is one box, its elements counted
 *   in its details. The Schedules page lists a schedule, shows its next ten fire times in its
 *   zone, pauses, resumes and triggers it (the fire's run linked). The Events page lists an event
 *   published elsewhere, and its match links to the run it started. axe-core and the console are
 *   checked as above.
 *
 * Without Chromium the test is skipped, except under CI=true, where it fails. Screenshots of the
 * compensated run, the runs page, the executors page, a waiting run and the schedules page are
 * written to docs/ (ui-run.png, ui-runs.png, ui-executors.png, ui-waiting-run.png,
 * ui-schedules.png) with NEXUSFLOW_UPDATE_SCREENSHOTS=1 (they are committed for the
 * README), else to a temporary directory.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { createTokenVerifier } from "@nexusflow/common";
import { FilesystemArtifactStore } from "@nexusflow/common/artifacts";
import { Executor, TaskError, bearerToken } from "@nexusflow/executor";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventService, RunStatus, ScheduleService, WorkflowService } from "@nexusflow/gen";
import type { Scheduler } from "@nexusflow/scheduler";
import type { Browser, BrowserContext, CDPSession, Page } from "playwright-core";
import { registerTripHandlers } from "../../../examples/handlers.js";
import {
  startTestDatabase,
  startTestScheduler,
  testLogger,
  waitFor,
  waitForRun,
} from "../../scheduler/test/support.js";
import { type Gateway, createGateway } from "../src/server.js";
import { AUDIENCE, ISSUER, type TestKeys, createTestKeys } from "./keys.js";
import { ROOT } from "./tools.js";
// The browser and the UI's build, as the UI's own browser tests have them.
import { buildUi, chromiumOrSkip, launchBrowser } from "../../../ui/test/browser-support.js";

const CHROMIUM = "/usr/bin/chromium";
const T = { timeout: 420_000 };
/** How long the page may take to show a state (the run itself takes well under a second). */
const SHOW_MS = 20_000;

/** What the `ui.big` handler returns: more than the 256 KiB an output may take inline. */
const BIG = "x".repeat(300 * 1024);

/** What the `ui.report` handler stores as an artifact. */
const REPORT = "n,square\n1,1\n2,4\n3,9\n";

/** axe-core, evaluated in a page to check it against WCAG 2 A and AA rules. */
const AXE = readFileSync(join(ROOT, "node_modules", "axe-core", "axe.min.js"), "utf8");

/** The WCAG 2 A/AA violations axe-core finds on the page as it is now, one line each. */
async function accessibilityViolations(page: Page, name: string): Promise<string[]> {
  if ((await page.evaluate("typeof window.axe")) === "undefined") await page.evaluate(AXE);
  const found = await page.evaluate<string[]>(`axe
    .run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
    .then((r) => r.violations.map((v) => v.id + " (" + v.impact + "): " + v.help + " at " +
      v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")))`);
  return found.map((v) => `${name}: ${v}`);
}

/** Console errors and uncaught page errors of a page, collected. */
function watchErrors(page: Page, errors: string[], name: string): void {
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`${name} console: ${msg.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${name} page error: ${e.message}`));
}

/**
 * Takes a full-page screenshot named `name`: into docs/ (committed, shown in the README) with
 * NEXUSFLOW_UPDATE_SCREENSHOTS=1, else into `work`.
 */
async function screenshot(page: Page, work: string, name: string): Promise<void> {
  const shot =
    process.env["NEXUSFLOW_UPDATE_SCREENSHOTS"] === "1" ? join(ROOT, "docs", name) : join(work, name);
  await mkdir(join(shot, ".."), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok((await stat(shot)).size > 10_000, `${name} is an image of something`);
}

/**
 * The main thread's busy time of a page so far, in ms: Chrome's TaskDuration metric, which with
 * `Performance.enable({ timeDomain: "threadTicks" })` counts the thread's CPU time, so other
 * processes on a busy machine do not inflate it.
 */
async function mainThreadMs(cdp: CDPSession): Promise<number> {
  const { metrics } = await cdp.send("Performance.getMetrics");
  return (metrics.find((m) => m.name === "TaskDuration")?.value ?? 0) * 1000;
}

/** The state the DAG shows for `step`. */
function stepState(page: Page, step: string): Promise<string | null> {
  return page.locator(`svg.dag g.dag-node[data-step="${step}"]`).getAttribute("data-state");
}

/** Waits until the DAG shows each step in its expected state; on a time-out, says what it showed. */
async function waitForStates(page: Page, expected: Record<string, string>): Promise<void> {
  let seen: Record<string, string | null> = {};
  try {
    await waitFor(
      `the DAG to show ${JSON.stringify(expected)}`,
      async () => {
        seen = {};
        for (const step of Object.keys(expected)) seen[step] = await stepState(page, step);
        return Object.entries(expected).every(([step, state]) => seen[step] === state) ? true : undefined;
      },
      SHOW_MS,
    );
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.message : String(e)}; it showed ${JSON.stringify(seen)}`, {
      cause: e,
    });
  }
}

describe("web UI in Chromium", () => {
  let keys: TestKeys;
  let db: Awaited<ReturnType<typeof startTestDatabase>> | undefined;
  let scheduler: Scheduler | undefined;
  let gateway: Gateway | undefined;
  let executor: Executor | undefined;
  let waitsExecutor: Executor | undefined;
  let store: FilesystemArtifactStore;
  let sessions: Http2SessionManager | undefined;
  let browser: Browser | undefined;
  let work: string;
  let url: string;
  let workflows: Client<typeof WorkflowService>;
  let schedules: Client<typeof ScheduleService>;
  let events: Client<typeof EventService>;
  let sign: (subject: string, scope: string) => Promise<string>;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-ui-browser-"));
    if (!existsSync(CHROMIUM)) return;
    const uiDir = join(work, "ui");
    buildUi(uiDir);
    keys = await createTestKeys();
    const key = keys.keys.ES256;
    sign = (subject, scope) => keys.sign(key, { sub: subject, scope });
    const verifier = await createTokenVerifier({
      publicKeyFiles: [key.pemFile],
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    db = await startTestDatabase();
    // Logs and artifacts in a filesystem store that the executor writes and the scheduler reads.
    store = new FilesystemArtifactStore({ root: join(work, "artifacts") });
    await store.ensureReady();
    scheduler = await startTestScheduler(db.url, { auth: verifier, artifacts: store });
    gateway = createGateway({ schedulerAddress: scheduler.address, port: 0, verifier, uiDir });
    ({ url } = await gateway.listen());
    const admin = await sign("ui-test-admin", "admin");
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", `Bearer ${admin}`);
      return next(req);
    };
    sessions = new Http2SessionManager(url);
    const transport = createGrpcTransport({ baseUrl: url, sessionManager: sessions, interceptors: [auth] });
    workflows = createClient(WorkflowService, transport);
    schedules = createClient(ScheduleService, transport);
    events = createClient(EventService, transport);
    const spec = await readFile(join(ROOT, "examples", "trip-booking.json"), "utf8");
    await workflows.registerWorkflow({ definition: { case: "specJson", value: spec } });
  });

  after(async () => {
    await browser?.close();
    await waitsExecutor?.stop("test over");
    sessions?.abort();
    await gateway?.close();
    await executor?.stop("test over");
    await scheduler?.stop();
    await db?.close();
    await keys?.close();
    await rm(work, { recursive: true, force: true });
  });

  it(
    "follows the declined trip-booking saga live to COMPENSATED; read-only tokens get no cancel",
    T,
    async (t) => {
      if (!chromiumOrSkip(t)) return;
      browser = await launchBrowser();
      const errors: string[] = [];
      const viewport = { width: 1280, height: 860 };

      // Signed in by the link `npm start` prints: the token goes from the fragment to sessionStorage.
      const operatorToken = await sign("ui-operator", "workflows:read runs:read runs:write");
      const operator: BrowserContext = await browser.newContext({ viewport });
      const page = await operator.newPage();
      watchErrors(page, errors, "operator");
      await page.goto(`${url}/ui/workflows/trip-booking#token=${encodeURIComponent(operatorToken)}`);
      await page.getByRole("heading", { name: /trip-booking/ }).waitFor({ timeout: SHOW_MS });
      assert.equal(page.url(), `${url}/ui/workflows/trip-booking`, "the token is removed from the URL");
      assert.equal(await page.evaluate("sessionStorage.getItem('nexusflow.token')"), operatorToken);
      assert.match((await page.getByTestId("scopes").textContent()) ?? "", /runs:write/);
      const a11y = await accessibilityViolations(page, "workflow page");
      // The definition's DAG: charge depends on flight and hotel.
      assert.equal(await page.locator("svg.dag g.dag-node").count(), 3);
      assert.equal(await page.locator("svg.dag path.dag-edge").count(), 2);

      // Started from the form with the card the example provider declines.
      await page.getByLabel("Input (JSON)").fill(
        JSON.stringify({
          traveller: "Ada",
          destination: "Lisbon",
          card: "4000-0000-0000-0002",
          amount: 420,
        }),
      );
      await page.getByRole("button", { name: "Start run" }).click();
      await page.waitForURL(/\/ui\/runs\/[^/]+$/, { timeout: SHOW_MS });
      const runId = decodeURIComponent(page.url().split("/").at(-1) ?? "");
      assert.ok(runId !== "");
      // A marker that a reload would lose.
      await page.evaluate("window.__notReloaded = true");

      // No executor serves these task types yet: the run waits, and says why.
      await waitForStates(page, { flight: "queued", hotel: "queued", charge: "pending" });
      assert.match(
        (await page.getByTestId("run-status").locator("[data-status]").getAttribute("data-status")) ?? "",
        /^(PENDING|RUNNING)$/,
      );
      await page.locator('svg.dag g.dag-node[data-step="flight"]').focus();
      await page.keyboard.press("Enter");
      const reason = await page.getByTestId("pending-reason").textContent({ timeout: SHOW_MS });
      assert.match(reason ?? "", /no executor advertises type .*book-flight/);
      assert.equal(await page.getByRole("button", { name: "Cancel run", exact: true }).count(), 1);
      assert.equal(await page.getByRole("button", { name: "Cancel with compensation" }).count(), 1);
      a11y.push(...(await accessibilityViolations(page, "waiting run page")));

      // A read-only token, pasted into the prompt, sees the same waiting run and no cancel action.
      const readerToken = await sign("ui-reader", "runs:read");
      const reader = await browser.newContext({ viewport });
      const readerPage = await reader.newPage();
      watchErrors(readerPage, errors, "reader");
      await readerPage.goto(`${url}/ui/runs/${encodeURIComponent(runId)}`);
      a11y.push(...(await accessibilityViolations(readerPage, "token prompt")));
      await readerPage.getByLabel("Bearer token").fill(readerToken);
      await readerPage.getByRole("button", { name: "Open" }).click();
      await readerPage
        .getByRole("heading", { name: new RegExp(`Run ${runId}`) })
        .waitFor({ timeout: SHOW_MS });
      assert.equal(readerPage.url(), `${url}/ui/runs/${encodeURIComponent(runId)}`);
      await waitForStates(readerPage, { flight: "queued", hotel: "queued" });
      assert.equal(await readerPage.getByRole("button", { name: /^cancel/i }).count(), 0);
      await reader.close();

      // The executor comes: the DAG follows the saga live to its end.
      executor = new Executor({
        schedulerAddress: scheduler!.address,
        logger: testLogger("executor"),
        executorId: "ui-trip",
        metadata: bearerToken(await sign("ui-trip", "executor")),
        artifacts: store,
      });
      registerTripHandlers(executor.registry);
      // An output over the claim-check threshold (256 KiB): stored as output.json, not in the run.
      executor.register("ui.big", () => Promise.resolve({ blob: BIG }));
      executor.register("ui.flaky", () => Promise.reject(TaskError.retryable("FLAKY", "not this time")));
      executor.register("ui.report", async (_input, ctx) => {
        await ctx.artifacts.put("report.csv", REPORT, { contentType: "text/csv" });
        return { rows: 3 };
      });
      await executor.start();
      await waitForStates(page, { flight: "compensated", hotel: "compensated", charge: "failed" });
      await waitFor(
        "the run status COMPENSATED",
        async () =>
          (await page.getByTestId("run-status").locator("[data-status]").getAttribute("data-status")) ===
          "COMPENSATED",
        SHOW_MS,
      );
      assert.equal(await page.evaluate("window.__notReloaded === true"), true, "the page was reloaded");
      const { run } = await workflows.getRun({ runId });
      assert.equal(run?.status, RunStatus.COMPENSATED);
      // States are labelled, not only coloured; a finished run offers no cancel.
      assert.match(
        (await page.locator('svg.dag g.dag-node[data-step="charge"]').getAttribute("aria-label")) ?? "",
        /^charge failed, step type charge-card$/,
      );
      assert.match(
        (await page.locator('svg.dag g.dag-node[data-step="hotel"]').getAttribute("class")) ?? "",
        /state-compensated/,
      );
      assert.equal(await page.getByRole("button", { name: /^cancel/i }).count(), 0);
      await page.locator('svg.dag g.dag-node[data-step="charge"]').click();
      await page.getByText("CARD_DECLINED: the card was declined").first().waitFor({ timeout: SHOW_MS });
      // The failed step's log says why.
      await page
        .getByTestId("task-log")
        .getByText(/#1 error attempt failed: CARD_DECLINED: the card was declined/)
        .waitFor({ timeout: SHOW_MS });
      // The flight's own log, and its compensation's, as the handlers wrote them.
      await page.locator('svg.dag g.dag-node[data-step="flight"]').click();
      await page
        .getByTestId("task-log")
        .first()
        .getByText(/info booked FL-\d+/)
        .waitFor({ timeout: SHOW_MS });
      await page
        .getByTestId("task-log")
        .nth(1)
        .getByText(/info cancelled FL-\d+/)
        .waitFor({ timeout: SHOW_MS });
      // The compensations have their own lane, each compensated, and select their step from the
      // keyboard; the flight's timeline shows its attempt and its compensation's, on the executor.
      const lane = page.getByRole("list", { name: "Compensations, in the order they started" });
      const laneItems: string[] = [];
      for (const item of await lane.locator("[data-compensation]").all())
        laneItems.push(
          `${await item.getAttribute("data-compensation")}=${await item.getAttribute("data-state")}`,
        );
      assert.deepEqual(laneItems.sort(), ["flight=compensated", "hotel=compensated"]);
      await lane.locator('[data-compensation="hotel"]').focus();
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { name: /Step hotel: compensated/ }).waitFor({ timeout: SHOW_MS });
      const hotelTimeline = page.getByTestId("attempt-timeline");
      await hotelTimeline.locator('[data-attempt="Task #1"][data-status="succeeded"]').waitFor();
      assert.match(
        (await hotelTimeline.locator('[data-attempt="Compensation #1"]').textContent()) ?? "",
        /^Compensation #1: succeeded on ui-trip, ran \d/,
      );
      // The failed step's timeline says what ended its attempt.
      await page.locator('svg.dag g.dag-node[data-step="charge"]').click();
      assert.match(
        (await page.getByTestId("attempt-timeline").locator('[data-attempt="Task #1"]').textContent()) ?? "",
        /^Task #1: failed on ui-trip, ran .*; CARD_DECLINED: the card was declined/,
      );

      a11y.push(...(await accessibilityViolations(page, "compensated run page")));
      // The screenshot for the README: the compensated run with the failed step's details.
      await screenshot(page, work, "ui-run.png");

      // The runs page lists it, by workflow and by status, and links to it.
      await page.getByRole("link", { name: "Runs" }).click();
      await page.getByLabel("Workflow", { exact: true }).fill("trip-booking");
      await page.getByLabel("Status", { exact: true }).selectOption({ label: "COMPENSATED" });
      const row = page.locator(`tr[data-run="${runId}"]`);
      await row.waitFor({ timeout: SHOW_MS });
      await page.getByLabel("Status", { exact: true }).selectOption({ label: "SUCCEEDED" });
      await row.waitFor({ state: "detached", timeout: SHOW_MS });
      await page.getByLabel("Status", { exact: true }).selectOption({ label: "any" });
      await row.waitFor({ timeout: SHOW_MS });
      a11y.push(...(await accessibilityViolations(page, "runs page")));
      // Labels the run does not carry leave it out.
      await page.getByLabel("Labels", { exact: true }).fill("team=nobody");
      await row.waitFor({ state: "detached", timeout: SHOW_MS });

      // The list follows new runs without a reload: one started elsewhere with the label appears.
      await workflows.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "ui-report",
            version: 1,
            steps: [
              { id: "report", type: "ui.report" },
              { id: "big", type: "ui.big" },
            ],
          }),
        },
      });
      await page.getByLabel("Workflow", { exact: true }).fill("");
      const { run: reportRun } = await workflows.startRun({
        workflowName: "ui-report",
        labels: { team: "nobody" },
      });
      assert.ok(reportRun !== undefined);
      await page.locator(`tr[data-run="${reportRun.id}"]`).waitFor({ timeout: SHOW_MS });
      assert.equal(await page.evaluate("window.__notReloaded === true"), true, "the page was reloaded");
      await screenshot(page, work, "ui-runs.png");

      // A step's artifact downloads through the API (the token goes with the call, not in a link).
      await page.goto(`${url}/ui/runs/${encodeURIComponent(reportRun.id)}`);
      await waitForStates(page, { report: "succeeded" });
      await page.locator('svg.dag g.dag-node[data-step="report"]').click();
      const downloading = page.waitForEvent("download", { timeout: SHOW_MS });
      await page.getByRole("button", { name: "report.csv" }).click();
      const download = await downloading;
      assert.equal(download.suggestedFilename(), "report.csv");
      assert.equal(await readFile(await download.path(), "utf8"), REPORT);
      // An offloaded output (claim check) downloads from its key the same way.
      await waitForStates(page, { big: "succeeded" });
      await page.locator('svg.dag g.dag-node[data-step="big"]').click();
      const outputDownload = page.waitForEvent("download", { timeout: SHOW_MS });
      await page.getByRole("button", { name: /output\.json \(download the output\)$/ }).click();
      const output = await outputDownload;
      assert.equal(output.suggestedFilename(), "output.json");
      assert.deepEqual(JSON.parse(await readFile(await output.path(), "utf8")), { blob: BIG });

      // A long run, cancelled from its page: the confirmation, then the run ends live.
      await workflows.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "ui-long",
            version: 1,
            steps: [
              { id: "wait", type: "sleep", input: { duration: "10m" } },
              // Fails once, and its next attempt is not due for ten minutes.
              { id: "flaky", type: "ui.flaky", retry: { maxAttempts: 3, initialInterval: "10m" } },
            ],
          }),
        },
      });
      const { run: longRun } = await workflows.startRun({ workflowName: "ui-long" });
      assert.ok(longRun !== undefined);
      await page.goto(`${url}/ui/runs/${encodeURIComponent(longRun.id)}`);
      await waitForStates(page, { wait: "running", flaky: "retrying" });
      // A retrying step says on the graph when its next attempt is due.
      assert.match(
        (await page.locator('svg.dag g.dag-node[data-step="flaky"]').getAttribute("aria-label")) ?? "",
        /^flaky retrying at \d{2}:\d{2}:\d{2}, step type ui\.flaky$/,
      );

      // The Executors page shows the executor's session holding the sleep's lease.
      await page.getByRole("link", { name: "Executors" }).click();
      const session = page.locator('tr[data-executor="ui-trip"]');
      await session.locator('li[data-type="sleep"][data-in-use="1"]').waitFor({ timeout: SHOW_MS });
      await session.locator('li[data-type="book-flight"][data-in-use="0"]').waitFor();
      assert.match((await session.getByTestId("slots-in-use").textContent()) ?? "", /^1( of \d+)?$/);
      a11y.push(...(await accessibilityViolations(page, "executors page")));
      await screenshot(page, work, "ui-executors.png");
      // Filtered by a type nobody advertises, no session.
      await page.getByLabel("Task type", { exact: true }).fill("nobody.here");
      await session.waitFor({ state: "detached", timeout: SHOW_MS });
      await page.getByText("No executor is attached for nobody.here.").waitFor({ timeout: SHOW_MS });
      await page.goBack();
      await waitForStates(page, { wait: "running" });
      await page.getByRole("button", { name: "Cancel run", exact: true }).click();
      await page.getByRole("button", { name: "Yes, cancel" }).click();
      await waitFor(
        "the long run's status CANCELLED",
        async () =>
          (await page.getByTestId("run-status").locator("[data-status]").getAttribute("data-status")) ===
          "CANCELLED",
        SHOW_MS,
      );
      await waitForStates(page, { wait: "cancelled" });
      assert.equal((await workflows.getRun({ runId: longRun.id })).run?.status, RunStatus.CANCELLED);

      // A large run, 1 -> 1000 -> 1: drawn whole, every box ends succeeded, a box still selects.
      const middle = Array.from({ length: 1000 }, (_, i) => `s${i}`);
      await workflows.registerWorkflow({
        definition: {
          case: "specJson",
          value: JSON.stringify({
            name: "ui-wide",
            version: 1,
            steps: [
              { id: "first", type: "noop" },
              ...middle.map((id) => ({ id, type: "noop", dependsOn: ["first"] })),
              { id: "last", type: "noop", dependsOn: middle },
            ],
          }),
        },
      });
      const { run: wideRun } = await workflows.startRun({ workflowName: "ui-wide" });
      assert.ok(wideRun !== undefined);
      // The run itself takes a while on a busy machine (one executor): the page opens it once
      // it has ended, and the main thread's busy time for that is reported.
      await waitForRun(workflows, wideRun.id, 170_000);
      // Opened from the runs list (a client-side navigation, as a user would), its main-thread
      // time is measured from the click until every box shows its state: under a second.
      await page.goto(`${url}/ui/runs`);
      await page.getByLabel("Workflow", { exact: true }).fill("ui-wide");
      const wideLink = page.getByRole("link", { name: wideRun.id });
      await wideLink.waitFor({ timeout: SHOW_MS });
      const cdp = await operator.newCDPSession(page);
      await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
      const busyBefore = await mainThreadMs(cdp);
      const clickedAt = performance.now();
      await wideLink.click();
      const succeeded = page.locator('svg.dag g.dag-node[data-state="succeeded"]');
      await waitFor(
        "1002 boxes shown succeeded",
        async () => ((await succeeded.count()) === 1002 ? true : undefined),
        SHOW_MS,
      );
      const openMs = (await mainThreadMs(cdp)) - busyBefore;
      const openWallMs = performance.now() - clickedAt;
      assert.equal(await page.locator("svg.dag g.dag-node").count(), 1002);
      // Interactive: a box selects from the keyboard, and that costs little main-thread time.
      const selectBefore = await mainThreadMs(cdp);
      await page.locator('svg.dag g.dag-node[data-step="s500"]').focus();
      await page.keyboard.press("Enter");
      // A CSS locator: a role query would walk all 1002 boxes in the page, on the time measured.
      await page
        .locator("h2#step-title", { hasText: /^Step s500: succeeded$/ })
        .waitFor({ timeout: SHOW_MS });
      const selectMs = (await mainThreadMs(cdp)) - selectBefore;
      t.diagnostic(
        `1 -> 1000 -> 1 run page: ${Math.round(openMs)} ms of main-thread time to open (${Math.round(openWallMs)} ms from the click until the test saw every box), ${Math.round(selectMs)} ms to select a step`,
      );
      assert.ok(
        openMs < 1000,
        `opening the 1 -> 1000 -> 1 run took ${Math.round(openMs)} ms of main-thread time`,
      );
      assert.ok(selectMs < 1000, `selecting a step took ${Math.round(selectMs)} ms of main-thread time`);
      a11y.push(...(await accessibilityViolations(page, "1 -> 1000 -> 1 run page")));

      await operator.close();
      assert.deepEqual(errors, []);
      assert.deepEqual(a11y, []);
    },
  );

  it(
    "signals a waiting run, reruns a failed one, follows a child run, lists schedules and events",
    T,
    async (t) => {
      if (!chromiumOrSkip(t)) return;
      browser ??= await launchBrowser();
      const errors: string[] = [];
      const a11y: string[] = [];
      const viewport = { width: 1280, height: 860 };
      const status = (p: Page): Promise<string | null> =>
        p.getByTestId("run-status").locator("[data-status]").getAttribute("data-status");

      // Handlers that count their calls; ui.once fails its first call for good, then succeeds.
      const calls = { first: 0, once: 0 };
      waitsExecutor = new Executor({
        schedulerAddress: scheduler!.address,
        logger: testLogger("executor"),
        executorId: "ui-waits",
        metadata: bearerToken(await sign("ui-waits", "executor")),
      });
      waitsExecutor.register("ui.first", () => Promise.resolve({ n: ++calls.first }));
      waitsExecutor.register("ui.once", () =>
        ++calls.once === 1
          ? Promise.reject(TaskError.terminal("NOT_YET", "the first call fails"))
          : Promise.resolve({ ok: true }),
      );
      waitsExecutor.register("ui.done", () => Promise.resolve({ done: true }));
      await waitsExecutor.start();
      for (const spec of [
        {
          name: "ui-approval",
          version: 1,
          steps: [
            { id: "submit", type: "ui.done" },
            { id: "approval", dependsOn: ["submit"], wait: { signal: "approved", timeout: "1h" } },
            { id: "pay", type: "ui.done", dependsOn: ["approval"] },
          ],
        },
        {
          name: "ui-rerun",
          version: 1,
          steps: [
            { id: "first", type: "ui.first" },
            { id: "once", type: "ui.once", dependsOn: ["first"] },
            { id: "last", type: "ui.done", dependsOn: ["once"] },
          ],
        },
        { name: "ui-tick", version: 1, steps: [{ id: "tick", type: "ui.done" }] },
        {
          name: "ui-parent",
          version: 1,
          steps: [
            { id: "child", workflow: { name: "ui-tick" } },
            { id: "after", type: "ui.done", dependsOn: ["child"] },
          ],
        },
        {
          name: "ui-map",
          version: 1,
          steps: [
            { id: "fan", type: "ui.done", map: { items: "input.items", parallelism: 2 } },
            { id: "join", type: "ui.done", dependsOn: ["fan"] },
          ],
        },
        {
          name: "ui-on-order",
          version: 1,
          triggers: [{ event: "ui.orders.created" }],
          steps: [{ id: "ack", type: "ui.done" }],
        },
      ])
        await workflows.registerWorkflow({ definition: { case: "specJson", value: JSON.stringify(spec) } });

      const operatorToken = await sign("ui-operator", "workflows:read runs:read runs:write");
      const operator = await browser.newContext({ viewport });
      const page = await operator.newPage();
      watchErrors(page, errors, "operator");

      // A run waiting for a signal: WAITING on the graph, in its own colour, saying what for.
      const { run: waitRun } = await workflows.startRun({ workflowName: "ui-approval" });
      assert.ok(waitRun !== undefined);
      await page.goto(
        `${url}/ui/runs/${encodeURIComponent(waitRun.id)}#token=${encodeURIComponent(operatorToken)}`,
      );
      await waitForStates(page, { submit: "succeeded", approval: "waiting", pay: "pending" });
      await page.evaluate("window.__notReloaded = true");
      // Once the definition is read, the box says which signal it waits for, and until when.
      await waitFor(
        "the wait step's box to name its signal",
        async () =>
          /^approval waiting for approved until \d{2}:\d{2}:\d{2}, step type wait: approved$/.test(
            (await page.locator('svg.dag g.dag-node[data-step="approval"]').getAttribute("aria-label")) ?? "",
          )
            ? true
            : undefined,
        SHOW_MS,
      );
      assert.match(
        (await page.locator('svg.dag g.dag-node[data-step="approval"]').getAttribute("class")) ?? "",
        /state-waiting/,
      );
      assert.match((await page.getByTestId("waiting-for").textContent()) ?? "", /approval: .*approved/);
      a11y.push(...(await accessibilityViolations(page, "waiting run page")));
      await screenshot(page, work, "ui-waiting-run.png");

      // A read-only token sees the waiting run but no form, and the gateway refuses it anyway.
      const readerToken = await sign("ui-reader", "runs:read");
      const reader = await browser.newContext({ viewport });
      const readerPage = await reader.newPage();
      watchErrors(readerPage, errors, "reader");
      await readerPage.goto(
        `${url}/ui/runs/${encodeURIComponent(waitRun.id)}#token=${encodeURIComponent(readerToken)}`,
      );
      await waitForStates(readerPage, { approval: "waiting" });
      assert.equal(await readerPage.getByRole("button", { name: "Send signal" }).count(), 0);
      const readerTransport = createGrpcTransport({
        baseUrl: url,
        sessionManager: sessions!,
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", `Bearer ${readerToken}`);
            return next(req);
          },
        ],
      });
      const readerWorkflows = createClient(WorkflowService, readerTransport);
      const denied = (e: unknown): boolean => e instanceof ConnectError && e.code === Code.PermissionDenied;
      await assert.rejects(readerWorkflows.signalRun({ runId: waitRun.id, name: "approved" }), denied);

      // Signalled from the page: the wait takes it, and the run goes on live to SUCCEEDED.
      await page.getByLabel("Signal name").fill("approved");
      await page.getByLabel("Payload (JSON, optional)").fill('{"by": "ada"}');
      await page.getByRole("button", { name: "Send signal" }).click();
      assert.equal(
        await page.getByTestId("signal-result").textContent({ timeout: SHOW_MS }),
        "Signal approved sent: step approval took it.",
      );
      assert.equal(await page.getByTestId("signal-result").getAttribute("role"), "status");
      await waitForStates(page, { approval: "succeeded", pay: "succeeded" });
      await waitFor(
        "the waiting run's status SUCCEEDED",
        async () => ((await status(page)) === "SUCCEEDED" ? true : undefined),
        SHOW_MS,
      );
      assert.equal(await page.evaluate("window.__notReloaded === true"), true, "the page was reloaded");
      // The ended run takes no more signals: the form stays (with what it did) but is disabled.
      assert.equal(await page.getByRole("button", { name: "Send signal" }).isDisabled(), true);
      assert.match(
        (await page.getByTestId("signals").locator('tr[data-signal="approved"]').textContent()) ?? "",
        /approved.*approval.*the output of step approval$/,
      );
      // A signal a wait took is its step's output.
      await page.locator('svg.dag g.dag-node[data-step="approval"]').click();
      await page.locator(".task figure.json", { hasText: "Output" }).getByText('"by": "ada"').waitFor({
        timeout: SHOW_MS,
      });
      a11y.push(...(await accessibilityViolations(page, "signalled run page")));

      // A run failed at its second step, rerun from it on its page.
      const { run: failedRun } = await workflows.startRun({ workflowName: "ui-rerun" });
      assert.ok(failedRun !== undefined);
      assert.equal((await waitForRun(workflows, failedRun.id)).status, RunStatus.FAILED);
      await readerPage.goto(`${url}/ui/runs/${encodeURIComponent(failedRun.id)}`);
      await waitForStates(readerPage, { once: "failed" });
      await readerPage.locator('svg.dag g.dag-node[data-step="once"]').click();
      await readerPage.getByRole("heading", { name: /Step once: failed/ }).waitFor({ timeout: SHOW_MS });
      assert.equal(await readerPage.getByRole("button", { name: "Rerun from this step" }).count(), 0);
      await assert.rejects(readerWorkflows.rerunRun({ runId: failedRun.id, fromStep: "once" }), denied);
      await page.goto(`${url}/ui/runs/${encodeURIComponent(failedRun.id)}`);
      await waitForStates(page, { first: "succeeded", once: "failed" });
      await page.locator('svg.dag g.dag-node[data-step="once"]').focus();
      await page.keyboard.press("Enter");
      await page.getByRole("button", { name: "Rerun from this step" }).click();
      await page.getByRole("button", { name: "Yes, rerun" }).click();
      await page.waitForURL((u) => u.pathname.startsWith("/ui/runs/") && !u.pathname.endsWith(failedRun.id), {
        timeout: SHOW_MS,
      });
      const rerunId = decodeURIComponent(page.url().split("/").at(-1) ?? "");
      await waitFor(
        "the rerun's status SUCCEEDED",
        async () => ((await status(page)) === "SUCCEEDED" ? true : undefined),
        SHOW_MS,
      );
      await waitForStates(page, { first: "succeeded", once: "succeeded", last: "succeeded" });
      assert.deepEqual(calls, { first: 1, once: 2 }, "the rerun reused first and called once again");
      assert.match(
        (await page.locator('svg.dag g.dag-node[data-step="first"]').getAttribute("aria-label")) ?? "",
        /^first succeeded \(reused\)/,
      );
      assert.match(
        (await page.getByTestId("rerun-of").textContent()) ?? "",
        new RegExp(`${failedRun.id} from step once`),
      );
      await page.locator('svg.dag g.dag-node[data-step="first"]').click();
      assert.match(
        (await page.getByTestId("reused-from").textContent()) ?? "",
        new RegExp(`of run ${failedRun.id}`),
      );
      a11y.push(...(await accessibilityViolations(page, "rerun page")));
      // And back: the original lists its rerun.
      await page.getByTestId("rerun-of").getByRole("link").click();
      await page.getByTestId("reruns").getByRole("link", { name: rerunId }).waitFor({ timeout: SHOW_MS });
      assert.equal((await workflows.getRun({ runId: rerunId })).run?.rerunOf, failedRun.id);

      // A schedule: listed with its next fire times in its zone, paused, resumed and triggered.
      await schedules.createSchedule({
        scheduleId: "ui-nightly",
        spec: { cron: "0 30 3 * * *", timeZone: "Europe/Lisbon", workflowName: "ui-tick" },
        note: "created by the UI test",
      });
      await page.getByRole("link", { name: "Schedules" }).click();
      const scheduleRow = page.locator('tr[data-schedule="ui-nightly"]');
      await scheduleRow.waitFor({ timeout: SHOW_MS });
      assert.match(
        (await scheduleRow.textContent()) ?? "",
        /ui-tick.*0 30 3 \* \* \*.*Europe\/Lisbon.*active/,
      );
      await scheduleRow.getByRole("link", { name: "ui-nightly" }).click();
      const fireTimes = page.getByTestId("next-fire-times").locator("li");
      await fireTimes.first().waitFor({ timeout: SHOW_MS });
      assert.equal(await fireTimes.count(), 10);
      const { schedule } = await schedules.getSchedule({ scheduleId: "ui-nightly" });
      const expected = (schedule?.nextFireTimes ?? []).map((ts) =>
        new Date(Number(ts.seconds) * 1000).toISOString(),
      );
      // 03:30 in Lisbon is 02:30 or 03:30 UTC, by the season.
      assert.ok(
        expected.every((iso) => /T0[23]:30:00/.test(iso)),
        expected.join(" "),
      );
      a11y.push(...(await accessibilityViolations(page, "schedules page")));
      await screenshot(page, work, "ui-schedules.png");
      await page.getByRole("button", { name: "Pause" }).click();
      await page
        .getByTestId("schedule-state")
        .getByText(/^paused/)
        .waitFor({ timeout: SHOW_MS });
      assert.equal((await schedules.getSchedule({ scheduleId: "ui-nightly" })).schedule?.paused, true);
      await page.getByRole("button", { name: "Resume" }).click();
      await page
        .getByTestId("schedule-state")
        .getByText(/^active/)
        .waitFor({ timeout: SHOW_MS });
      await page.getByRole("button", { name: "Trigger now" }).click();
      const fireLink = page.getByTestId("recent-fires").getByRole("link");
      await fireLink.first().waitFor({ timeout: SHOW_MS });
      const firedRun = (await fireLink.first().textContent()) ?? "";
      assert.equal((await waitForRun(workflows, firedRun)).status, RunStatus.SUCCEEDED);
      // An event published elsewhere: listed, and its match links to the run it started.
      const { event } = await events.publishEvent({ key: "ui.orders.created", idempotencyKey: "ui-order-1" });
      assert.ok(event !== undefined);
      await page.getByRole("link", { name: "Events" }).click();
      await page.getByLabel("Key prefix").fill("ui.orders");
      await page.locator(`tr[data-event="${event.eventId}"]`).getByRole("link").click();
      const matchRun = page
        .getByTestId("event-details")
        .getByRole("table")
        .getByRole("link", { name: /^[0-9a-f-]{36}$/ });
      await matchRun.waitFor({ timeout: SHOW_MS });
      a11y.push(...(await accessibilityViolations(page, "events page")));
      await matchRun.click();
      await page.waitForURL(/\/ui\/runs\/[^/]+$/, { timeout: SHOW_MS });
      await waitForStates(page, { ack: "succeeded" });
      // A child workflow step links to its child run, and the child back to its parent.
      const { run: parentRun } = await workflows.startRun({ workflowName: "ui-parent" });
      assert.ok(parentRun !== undefined);
      assert.equal((await waitForRun(workflows, parentRun.id)).status, RunStatus.SUCCEEDED);
      await page.goto(`${url}/ui/runs/${encodeURIComponent(parentRun.id)}`);
      await waitForStates(page, { child: "succeeded", after: "succeeded" });
      // Once the definition is read, the box says which workflow it runs.
      await waitFor(
        "the child step's box to name its workflow",
        async () =>
          (await page.locator('svg.dag g.dag-node[data-step="child"]').getAttribute("aria-label")) ===
          "child succeeded, step type child: ui-tick"
            ? true
            : undefined,
        SHOW_MS,
      );
      await page.locator('svg.dag g.dag-node[data-step="child"]').click();
      await page.getByTestId("child-run").getByRole("link").click();
      await page.getByTestId("parent-run").waitFor({ timeout: SHOW_MS });
      assert.match(
        (await page.getByTestId("parent-run").textContent()) ?? "",
        new RegExp(`^${parentRun.id} at step child$`),
      );
      await waitForStates(page, { tick: "succeeded" });
      a11y.push(...(await accessibilityViolations(page, "child run page")));
      // A map step is one box, its elements counted in its details (not a box each).
      const { run: mapRun } = await workflows.startRun({
        workflowName: "ui-map",
        input: fromJson(ValueSchema, { items: [1, 2, 3] }),
      });
      assert.ok(mapRun !== undefined);
      assert.equal((await waitForRun(workflows, mapRun.id)).status, RunStatus.SUCCEEDED);
      await page.goto(`${url}/ui/runs/${encodeURIComponent(mapRun.id)}`);
      await waitForStates(page, { fan: "succeeded", join: "succeeded" });
      await page.locator('svg.dag g.dag-node[data-step="fan"]').click();
      assert.equal(
        await page.getByTestId("map-elements").textContent({ timeout: SHOW_MS }),
        "Map step: 3 of 3 elements ended.",
      );
      assert.equal(await page.locator("svg.dag g.dag-node").count(), 2);
      // The reader sees the schedule but no action.
      await readerPage.goto(`${url}/ui/schedules/ui-nightly`);
      await readerPage.getByTestId("next-fire-times").waitFor({ timeout: SHOW_MS });
      assert.equal(await readerPage.getByRole("button", { name: /^(Pause|Resume|Trigger now)$/ }).count(), 0);
      const readerSchedules = createClient(ScheduleService, readerTransport);
      await assert.rejects(readerSchedules.triggerSchedule({ scheduleId: "ui-nightly" }), denied);
      await assert.rejects(readerSchedules.pauseSchedule({ scheduleId: "ui-nightly" }), denied);

      await reader.close();
      await operator.close();
      assert.deepEqual(errors, []);
      assert.deepEqual(a11y, []);
    },
  );
});
