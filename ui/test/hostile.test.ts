/**
 * The web UI in Chromium against a fake gateway (browser-support.ts) that answers with what a real
 * one could: data a user or a handler controls (names, labels, error messages, outputs) holding
 * HTML, script, long strings without spaces, characters outside the BMP and megabytes of JSON; a
 * run that disappears (retention) while it is watched; a page token that never advances; a token
 * refused in the middle of a session; an address with a broken percent escape.
 *
 * - Nothing of the data becomes markup, a value of 10 MB is shown cut (the page stays usable), and
 *   long strings wrap: no horizontal scrolling, the controls stay in view.
 * - A run gone while watched says so (NotFound) and is not watched again and again.
 * - A run too large for WatchRun to send its values (values_omitted) keeps the values GetRun
 *   showed while its states move, and shows its output, read once more with GetRun, when it ends.
 * - The Workflows page stops at a page token it was already given, with what went wrong; the list
 *   pages do not offer a next page they already showed.
 * - A call refused as unauthenticated, whichever part of a page made it, asks for a token again.
 * - /ui/runs/%E0%A4%A shows the app, not a blank page.
 *
 * Skipped without Chromium, except under CI=true, where it fails.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ArtifactRefSchema,
  ArtifactService,
  type Run,
  RunSchema,
  RunStatus,
  TaskKind,
  TaskStatus,
  WorkflowDefinitionSchema,
  WorkflowService,
} from "@nexusflow/gen";
import type { Browser, BrowserContext, Page } from "playwright-core";
import {
  type FakeGateway,
  buildUi,
  chromiumOrSkip,
  fakeToken,
  launchBrowser,
  startFakeGateway,
  until,
  watchErrors,
} from "./browser-support";

const T = { timeout: 180_000 };
const VIEWPORT = { width: 1280, height: 860 };

/** Markup that would run if any of the data became HTML. */
const XSS = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`;
/** A long word: no space to break at. */
const WORD = "w".repeat(6000);
/** Steps of the long chain: MAX_STEPS, the most a definition may have. */
const CHAIN = 5000;
/** Characters outside the BMP (surrogate pairs). */
const EMOJI = "😀𝒳".repeat(500);

/** What the fake API answers, set by each test. */
interface Behaviour {
  runs: Map<string, Run>;
  /** How WatchRun answers for a run: its messages, then an error or an end. */
  watch?: (runId: string) => AsyncIterable<Run>;
  /** WatchRun's messages say the run came without its values (values_omitted). */
  valuesOmitted?: boolean;
  /** ListWorkflows' next page token for a request's token. */
  workflowsNext?: (pageToken: string) => string;
  /** ListRuns' next page token for a request's token. */
  runsNext?: (pageToken: string) => string;
  /** GetTaskLogs fails with this, when set. */
  logsError?: ConnectError;
  /** GetRun's `n`-th call (from 1) fails with what this returns, when set. */
  getRunError?: (n: number) => ConnectError | undefined;
}

let behaviour: Behaviour = { runs: new Map() };
const calls = { watchRun: 0, listWorkflows: 0, listRuns: 0, getRun: 0 };

function hostileRun(id: string, status: RunStatus): Run {
  const big = fromJson(ValueSchema, {
    blob: "x".repeat(10 * 1024 * 1024),
    list: Array.from({ length: 50_000 }, (_, i) => i),
  });
  const now = timestampFromDate(new Date());
  return create(RunSchema, {
    id,
    workflowName: `${XSS}${WORD}`,
    workflowVersion: 1,
    status,
    labels: { [`k${XSS}`]: `${WORD}${EMOJI}`, emoji: EMOJI },
    input: big,
    createTime: now,
    tasks: [
      {
        id: `${id}-t1`,
        stepId: "a",
        type: `type-${XSS}`,
        kind: TaskKind.STEP,
        status: TaskStatus.FAILED,
        input: big,
        output: fromJson(ValueSchema, { html: XSS, word: WORD, emoji: EMOJI }),
        error: { type: `E${XSS}`, message: `${XSS} ${WORD} ${EMOJI}`, retryable: false },
        pendingReason: "",
        attempts: [
          {
            number: 1,
            executorId: `${XSS}${WORD}`,
            leaseTime: now,
            startTime: now,
            endTime: now,
            status: TaskStatus.FAILED,
            error: { type: `E${XSS}`, message: `${XSS}${WORD}` },
          },
        ],
        createTime: now,
      },
    ],
  });
}

function simpleRun(id: string, status: RunStatus): Run {
  return create(RunSchema, {
    id,
    workflowName: "simple",
    workflowVersion: 1,
    status,
    createTime: timestampFromDate(new Date()),
    tasks: [
      {
        id: `${id}-t1`,
        stepId: "a",
        type: "t",
        kind: TaskKind.STEP,
        status: status === RunStatus.RUNNING ? TaskStatus.RUNNING : TaskStatus.SUCCEEDED,
        attempts: [{ number: 1, executorId: "e1", status: TaskStatus.SUCCEEDED }],
      },
    ],
  });
}

describe("web UI with hostile data and a misbehaving API", () => {
  let work: string;
  let gateway: FakeGateway | undefined;
  let browser: Browser | undefined;
  const token = fakeToken({
    sub: `${XSS}${"s".repeat(3000)}`,
    scope: "admin",
    exp: Math.floor(Date.now() / 1000) + 3600,
  });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "nf-ui-hostile-"));
    if (!existsSync("/usr/bin/chromium")) return;
    const uiDir = join(work, "ui");
    buildUi(uiDir);
    gateway = await startFakeGateway(uiDir, (router) => {
      router.service(WorkflowService, {
        getRun(req) {
          calls.getRun++;
          const refused = behaviour.getRunError?.(calls.getRun);
          if (refused !== undefined) throw refused;
          const run = behaviour.runs.get(req.runId);
          if (run === undefined) throw new ConnectError(`run ${req.runId} not found`, Code.NotFound);
          return { run };
        },
        async *watchRun(req) {
          calls.watchRun++;
          const run = behaviour.runs.get(req.runId);
          if (run === undefined) throw new ConnectError(`run ${req.runId} not found`, Code.NotFound);
          if (behaviour.watch === undefined) {
            yield { run };
            return;
          }
          for await (const r of behaviour.watch(req.runId))
            yield { run: r, valuesOmitted: behaviour.valuesOmitted ?? false };
        },
        getWorkflow(req) {
          const steps =
            req.name === "chain"
              ? Array.from({ length: CHAIN }, (_, i) => ({
                  id: `s${i}`,
                  type: "t",
                  dependsOn: i === 0 ? [] : [`s${i - 1}`],
                }))
              : req.name === "map"
                ? [{ id: "fan", type: "t", map: { items: "input.items" } }]
                : [{ id: "a", type: "t" }];
          return {
            workflow: create(WorkflowDefinitionSchema, {
              name: req.name,
              version: 1,
              spec: { name: req.name, version: 1, steps },
            }),
          };
        },
        listWorkflows(req) {
          calls.listWorkflows++;
          return {
            workflows: [
              create(WorkflowDefinitionSchema, {
                name: `wf-${calls.listWorkflows}`,
                version: 1,
                spec: { name: `wf-${calls.listWorkflows}`, version: 1, steps: [{ id: "a", type: "t" }] },
              }),
            ],
            nextPageToken: behaviour.workflowsNext?.(req.pageToken) ?? "",
          };
        },
        listRuns(req) {
          calls.listRuns++;
          return {
            runs: [...behaviour.runs.values()].map((r) => create(RunSchema, { ...r, tasks: [] })),
            nextPageToken: behaviour.runsNext?.(req.pageToken) ?? "",
          };
        },
      });
      router.service(ArtifactService, {
        async *getTaskLogs() {
          // Answered after a turn, as a store read would be.
          await Promise.resolve();
          if (behaviour.logsError !== undefined) throw behaviour.logsError;
          yield {
            lines: [
              {
                text: `${XSS}${WORD}${EMOJI}`,
                attempt: 1,
                level: "info",
                time: timestampFromDate(new Date()),
              },
            ],
          };
        },
        listArtifacts() {
          return { artifacts: [] };
        },
        async *getArtifact() {
          // A store whose presigned address is script (a misconfigured or hostile one).
          yield await Promise.resolve({ url: "javascript:window.opener?.alert(1);document.title='pwned'" });
        },
      });
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await gateway?.close();
    await rm(work, { recursive: true, force: true });
  });

  /** A signed-in page at `path`, its errors collected into `errors`. */
  async function open(path: string, errors: string[]): Promise<{ page: Page; context: BrowserContext }> {
    const context = await browser!.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    watchErrors(page, errors);
    await page.goto(`${gateway!.url}${path}#token=${encodeURIComponent(token)}`);
    return { page, context };
  }

  /** Whether the page scrolls sideways (something is wider than the window). */
  function scrollsSideways(page: Page): Promise<boolean> {
    return page.evaluate(
      () => document.documentElement.scrollWidth > document.documentElement.clientWidth + 1,
    );
  }

  it("shows hostile run data as text, cut to a bounded size, wrapped within the window", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    behaviour = { runs: new Map([["hostile", hostileRun("hostile", RunStatus.FAILED)]]) };
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/hostile", errors);
    await page.getByRole("heading", { name: /Run hostile/ }).waitFor({ timeout: 20_000 });
    await page.locator('svg.dag g.dag-node[data-step="a"]').click();
    await page.getByRole("heading", { name: /Step a: failed/ }).waitFor({ timeout: 20_000 });
    await page
      .getByTestId("task-log")
      .getByText(/onerror/)
      .waitFor({ timeout: 20_000 });

    assert.equal(await page.evaluate("window.__pwned"), undefined, "no data ran as script");
    assert.equal(await page.locator('img[src="x"]').count(), 0, "no data became an element");
    assert.equal(await page.locator("main script").count(), 0);
    // The label shows its text, whole characters (no lone surrogate at a cut).
    assert.match((await page.locator(".label").first().textContent()) ?? "", /^k<img src=x onerror=/);

    // The 10 MB input is shown cut, and says so.
    const pres = await page.locator("figure.json pre").allTextContents();
    assert.ok(pres.length >= 4, `input, output and error blocks: ${pres.length}`);
    const longest = Math.max(...pres.map((p) => p.length));
    assert.ok(longest <= 200_000, `a JSON block holds ${longest} characters`);
    await page
      .getByText(/Shown cut at/)
      .first()
      .waitFor({ timeout: 5000 });

    // Long words wrap: nothing pushes the page sideways, and the sign-out stays in the window.
    assert.equal(await scrollsSideways(page), false, "the page scrolls sideways");
    const forget = await page.getByRole("button", { name: "Forget token" }).boundingBox();
    assert.ok(
      forget !== null && forget.x + forget.width <= VIEWPORT.width,
      `Forget token at ${JSON.stringify(forget)}`,
    );

    // The runs list too.
    await page.getByRole("link", { name: "Runs", exact: true }).click();
    await page.locator('tr[data-run="hostile"]').waitFor({ timeout: 20_000 });
    assert.equal(await scrollsSideways(page), false, "the runs page scrolls sideways");
    assert.equal(await page.evaluate("window.__pwned"), undefined);
    await context.close();
    assert.deepEqual(errors, []);
  });

  it("draws a 5,000-step graph by parts as it scrolls, and counts 10,000 waiting elements", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    const now = timestampFromDate(new Date());
    const chain = create(RunSchema, {
      id: "chain",
      workflowName: "chain",
      workflowVersion: 1,
      status: RunStatus.SUCCEEDED,
      createTime: now,
      tasks: Array.from({ length: CHAIN }, (_, i) => ({
        id: `c${i}`,
        stepId: `s${i}`,
        type: "t",
        kind: TaskKind.STEP,
        status: TaskStatus.SUCCEEDED,
      })),
    });
    const map = create(RunSchema, {
      id: "map",
      workflowName: "map",
      workflowVersion: 1,
      status: RunStatus.RUNNING,
      createTime: now,
      tasks: Array.from({ length: 10_000 }, (_, i) => ({
        id: `m${i}`,
        stepId: `fan[${i}]`,
        type: "t",
        kind: TaskKind.STEP,
        status: TaskStatus.WAITING,
        pendingReason: "waiting for its child run",
      })),
    });
    behaviour = {
      runs: new Map([
        ["chain", chain],
        ["map", map],
      ]),
    };
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/chain", errors);
    await page.locator('svg.dag g.dag-node[data-step="s0"]').waitFor({ timeout: 20_000 });
    const drawn = await page.locator("svg.dag g.dag-node").count();
    assert.ok(drawn < 100, `${drawn} of ${CHAIN} boxes drawn at once`);
    // Scrolled to its end (as a keyboard or a mouse would), the last steps are drawn and selectable.
    // Scrolled again until it is drawn: on a busy machine the first scroll may come before the
    // graph has its full width.
    // The definition read (its arrows drawn) before scrolling: until then the steps stand in one
    // column, and the last one, drawn at its bottom, moves to the far right when the definition
    // comes (a busy machine's CI run scrolled to it there, then waited for it in vain).
    await page.locator("svg.dag path.dag-edge").first().waitFor({ state: "attached", timeout: 20_000 });
    const last = page.locator(`svg.dag g.dag-node[data-step="s${CHAIN - 1}"]`);
    await until(
      "the last step drawn once scrolled to",
      async () => {
        await page.locator(".dag-scroll").evaluate((el) => {
          el.scrollLeft = el.scrollWidth;
          el.scrollTop = el.scrollHeight;
        });
        return (await last.count()) > 0 ? true : undefined;
      },
      60_000,
    );
    await last.click({ timeout: 20_000 });
    await page.getByRole("heading", { name: `Step s${CHAIN - 1}: succeeded` }).waitFor({ timeout: 20_000 });
    // Far boxes dropped (the drawing follows the scroll on the next frame: waited for, on a busy
    // machine it may come after the click's heading).
    await until("the far boxes dropped", async () =>
      (await page.locator('svg.dag g.dag-node[data-step="s0"]').count()) === 0 ? true : undefined,
    );

    await page.goto(`${gateway!.url}/ui/runs/map`);
    const waiting = page.getByTestId("waiting-for");
    await waiting.waitFor({ timeout: 20_000 });
    assert.ok((await waiting.locator("li").count()) <= 11);
    assert.match((await waiting.textContent()) ?? "", /and 9990 more tasks waiting/);
    await context.close();
    assert.deepEqual(errors, []);
  });

  it("opens only web addresses a store gives for a download", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    const run = simpleRun("offloaded", RunStatus.SUCCEEDED);
    run.tasks[0]!.outputRef = create(ArtifactRefSchema, { key: "runs/offloaded/a/output.json", size: 10n });
    behaviour = { runs: new Map([["offloaded", run]]) };
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/offloaded", errors);
    const popups: string[] = [];
    context.on("page", (p) => popups.push(p.url()));
    await page.locator('svg.dag g.dag-node[data-step="a"]').click();
    await page.getByRole("button", { name: /output\.json/ }).click();
    const alert = page.getByRole("alert");
    await alert.waitFor({ timeout: 20_000 });
    assert.match((await alert.textContent()) ?? "", /Internal: GetArtifact gave a javascript: address/);
    assert.deepEqual(popups, [], "no window opened");
    await context.close();
    assert.deepEqual(errors, []);
  });

  it("says a watched run is gone (NotFound) and stops watching it", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    let release: () => void = () => undefined;
    const deleted = new Promise<void>((resolve) => (release = resolve));
    behaviour = {
      runs: new Map([["doomed", simpleRun("doomed", RunStatus.RUNNING)]]),
      async *watch(runId) {
        const run = behaviour.runs.get(runId);
        if (run !== undefined) yield run;
        await deleted;
        throw new ConnectError(`run ${runId} not found`, Code.NotFound);
      },
    };
    calls.watchRun = 0;
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/doomed", errors);
    await until("the live view", async () =>
      (await page.locator('[data-live="live"]').count()) > 0 ? true : undefined,
    );
    // Retention deletes the run.
    behaviour.runs.delete("doomed");
    release();
    const shown = await until("the page to say the run is gone, or to watch it again", async () => {
      if (calls.watchRun > 1) return `watched ${calls.watchRun} times`;
      const alert = page.getByRole("alert");
      return (await alert.count()) > 0 ? ((await alert.first().textContent()) ?? "") : undefined;
    });
    assert.match(shown, /NotFound: run doomed not found/);
    assert.equal(calls.watchRun, 1);
    // What was known of the run stays shown.
    assert.equal(await page.getByTestId("run-status").textContent(), "running");
    await context.close();
    assert.deepEqual(errors, []);
  });

  it(
    "reads a run again when its first read fails for a while (UNAVAILABLE), but not a NotFound",
    T,
    async (t) => {
      if (!chromiumOrSkip(t)) return;
      behaviour = {
        runs: new Map([["later", simpleRun("later", RunStatus.SUCCEEDED)]]),
        getRunError: (n) =>
          n === 1 ? new ConnectError("the gateway is restarting", Code.Unavailable) : undefined,
      };
      calls.getRun = 0;
      const errors: string[] = [];
      const { page, context } = await open("/ui/runs/later", errors);
      const retrying = await until("the page to say it tries again", async () => {
        const alert = page.getByRole("alert");
        return (await alert.count()) > 0 ? ((await alert.first().textContent()) ?? "") : undefined;
      });
      assert.match(retrying, /the gateway is restarting \(trying again in 2 s\)/);
      await until("the run shown", async () =>
        (await page.getByTestId("run-status").count()) > 0 ? true : undefined,
      );
      assert.equal(await page.getByTestId("run-status").textContent(), "succeeded");
      assert.equal(calls.getRun, 2);
      // A run that is not there is said once, not asked again.
      await context.close();
      delete behaviour.getRunError;
      calls.getRun = 0;
      const second = await open("/ui/runs/missing", errors);
      const missing = await until("the page to say the run is missing", async () => {
        const alert = second.page.getByRole("alert");
        return (await alert.count()) > 0 ? ((await alert.first().textContent()) ?? "") : undefined;
      });
      assert.match(missing, /run missing not found/);
      assert.doesNotMatch(missing, /trying again/);
      assert.equal(calls.getRun, 1);
      await second.context.close();
      assert.deepEqual(
        errors.filter((e) => !/503|Service Unavailable|404|Not Found/.test(e)),
        [],
      );
    },
  );

  it("keeps a large run's values while its states move, and shows its output once it ended", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    const value = (json: unknown) => fromJson(ValueSchema, json as never);
    /** The run "large" whole (as GetRun answers it), at `status`, its step at `step` while running. */
    const whole = (status: RunStatus, step = TaskStatus.RUNNING): Run => {
      const run = simpleRun("large", status);
      if (status === RunStatus.RUNNING) run.tasks[0]!.status = step;
      run.input = value({ blob: "the large input" });
      run.tasks[0]!.input = value({ step: "the step's input" });
      if (status === RunStatus.SUCCEEDED) {
        run.output = value({ report: "the large output" });
        run.tasks[0]!.output = value({ report: "the large output" });
      }
      return run;
    };
    /** What WatchRun sends of it: its states, without its values. */
    const lean = (run: Run): Run =>
      create(RunSchema, {
        ...run,
        input: undefined,
        output: undefined,
        tasks: run.tasks.map((task) => ({ ...task, input: undefined, output: undefined })),
      });
    let release: () => void = () => undefined;
    const ends = new Promise<void>((resolve) => (release = resolve));
    behaviour = {
      // GetRun shows its step queued; the first message has it running.
      runs: new Map([["large", whole(RunStatus.RUNNING, TaskStatus.QUEUED)]]),
      valuesOmitted: true,
      async *watch() {
        yield lean(whole(RunStatus.RUNNING));
        await ends;
        behaviour.runs.set("large", whole(RunStatus.SUCCEEDED));
        yield lean(whole(RunStatus.SUCCEEDED));
      },
    };
    calls.getRun = 0;
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/large", errors);
    await page.locator('svg.dag g.dag-node[data-step="a"]').click();
    // The first message shown (the step running): the values GetRun showed are kept.
    await page.getByRole("heading", { name: /Step a: running/ }).waitFor({ timeout: 20_000 });
    const input = page.locator("figure.json", { hasText: "Input" }).last().locator("pre");
    assert.match((await input.textContent()) ?? "", /the large input/, "the input GetRun showed kept");
    assert.match(
      (await page.locator("figure.json", { hasText: "Input" }).first().textContent()) ?? "",
      /the step's input/,
    );
    await page.getByTestId("values-omitted").waitFor({ timeout: 5000 });

    release();
    await page.getByRole("heading", { name: /Step a: succeeded/ }).waitFor({ timeout: 20_000 });
    await until("the live view ended", async () =>
      (await page.locator('[data-live="ended"]').count()) > 0 ? true : undefined,
    );
    const output = page.locator("figure.json", { hasText: "Output" }).last().locator("pre");
    await output.waitFor({ timeout: 20_000 });
    assert.match((await output.textContent()) ?? "", /the large output/, "the output read with GetRun");
    assert.match((await input.textContent()) ?? "", /the large input/);
    assert.equal(await page.getByTestId("values-omitted").count(), 0);
    assert.equal(calls.getRun, 2, "GetRun for the first picture, and once the run ended");
    await context.close();
    assert.deepEqual(errors, []);
  });

  it("stops at a page token it was given before", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    behaviour = {
      runs: new Map([["r1", simpleRun("r1", RunStatus.SUCCEEDED)]]),
      // A server whose page token never advances.
      workflowsNext: () => "stuck",
      runsNext: () => "stuck",
    };
    calls.listWorkflows = 0;
    const errors: string[] = [];
    const { page, context } = await open("/ui/workflows", errors);
    const shown = await until("the Workflows page to stop, or to ask 50 times", async () => {
      if (calls.listWorkflows > 50) return `asked ${calls.listWorkflows} times`;
      const alert = page.getByRole("alert");
      return (await alert.count()) > 0 ? ((await alert.first().textContent()) ?? "") : undefined;
    });
    assert.match(shown, /page token "stuck" again/);
    assert.equal(calls.listWorkflows, 2);
    // What it read is listed.
    await page.getByRole("link", { name: "wf-1" }).waitFor({ timeout: 5000 });

    // The runs list: page 2 comes with the same token as its next page's; no "Next page" then.
    await page.getByRole("link", { name: "Runs", exact: true }).click();
    const next = page.getByRole("button", { name: "Next page" });
    await until("Next page enabled", async () => ((await next.isEnabled()) ? true : undefined));
    await next.click();
    await page.getByText("Page 2").waitFor({ timeout: 5000 });
    const calledAt = calls.listRuns;
    await until("page 2 read", () => Promise.resolve(calls.listRuns > calledAt + 1 ? true : undefined));
    assert.equal(await next.isEnabled(), false, "Next page goes to the page shown");
    await context.close();
    assert.deepEqual(errors, []);
  });

  it("asks for a token again when any call is refused as unauthenticated", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    behaviour = {
      runs: new Map([["ended", simpleRun("ended", RunStatus.SUCCEEDED)]]),
      logsError: new ConnectError("token expired", Code.Unauthenticated),
    };
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/ended", errors);
    await page.locator('svg.dag g.dag-node[data-step="a"]').click();
    // The step's log is read with the expired token: the app asks for another.
    await page.getByLabel("Bearer token").waitFor({ timeout: 20_000 });
    assert.match((await page.getByRole("alert").textContent()) ?? "", /Unauthenticated: token expired/);
    assert.equal(await page.evaluate("sessionStorage.getItem('nexusflow.token')"), null);
    await context.close();
    // The refused call is logged by the browser itself (a 401), nothing else.
    assert.deepEqual(
      errors.filter((e) => !/status of 401/.test(e)),
      [],
    );
  });

  it("shows the app for an address with a broken percent escape", T, async (t) => {
    if (!chromiumOrSkip(t)) return;
    behaviour = { runs: new Map() };
    const errors: string[] = [];
    const { page, context } = await open("/ui/runs/%E0%A4%A", errors);
    await page.getByRole("navigation", { name: "Main" }).waitFor({ timeout: 20_000 });
    await context.close();
    assert.deepEqual(
      errors.filter((e) => !/status of 404/.test(e)),
      [],
    );
  });
});
