/**
 * .github/workflows pass actionlint (expressions, action inputs, job graph, runner labels), and
 * they do what the issue asks: lint and test jobs as .ci/run runs them, an image build with a
 * cache, and a release on a version tag that pushes the image and attaches an SBOM.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parse } from "yaml";
import { deployTool, runTool } from "./deploy-tools.js";
import { ROOT } from "./tools.js";

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Workflow {
  on: Record<string, unknown>;
  jobs: Record<string, { steps: Step[] }>;
}

const DIR = join(ROOT, ".github", "workflows");
const load = (name: string): Workflow => parse(readFileSync(join(DIR, name), "utf8")) as Workflow;

describe(".github/workflows", () => {
  it("pass actionlint", async (t) => {
    const actionlint = deployTool(t, "actionlint");
    if (actionlint === undefined) return;
    const files = readdirSync(DIR).filter((f) => f.endsWith(".yml"));
    assert.deepEqual(files.sort(), ["ci.yml", "release.yml"]);
    const result = await runTool(actionlint, ["-no-color", ...files.map((f) => join(DIR, f))]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    // It bites: an unknown input of a known action and a bad expression fail.
    const broken = readFileSync(join(DIR, "ci.yml"), "utf8")
      .replace("node-version-file: .nvmrc", "node-versoin-file: .nvmrc")
      .replace("${{ github.ref }}", "${{ github.reff }}");
    const refused = await runTool(actionlint, ["-no-color", "-"], { input: broken });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout, /node-versoin-file/);
    assert.match(refused.stdout, /reff/);
  });

  it("ci: lint, tests with the tools and services .ci/run uses, and a cached image build", () => {
    const ci = load("ci.yml");
    const runs = (job: string) => ci.jobs[job]!.steps.map((s) => s.run ?? "").join("\n");
    assert.match(runs("lint"), /npm run lint/);
    assert.match(runs("lint"), /npx buf lint/);
    assert.match(runs("test"), /scripts\/build-tools\.sh/);
    assert.match(runs("test"), /npm run test:all/);
    const build = ci.jobs["image"]!.steps.find((s) => s.uses?.startsWith("docker/build-push-action@"));
    assert.equal(build?.with?.["cache-from"], "type=gha");
    assert.equal(build?.with?.["push"], false);
  });

  it("release: on a version tag, pushes the image and attaches an SBOM", () => {
    const release = load("release.yml");
    assert.deepEqual(release.on["push"], { tags: ["v*.*.*"] });
    const steps = release.jobs["image"]!.steps;
    const build = steps.find((s) => s.uses?.startsWith("docker/build-push-action@"));
    assert.equal(build?.with?.["push"], true);
    assert.equal(build?.with?.["sbom"], true);
    assert.ok(steps.some((s) => s.uses?.startsWith("anchore/sbom-action@")));
    assert.ok(steps.some((s) => /gh release upload .*spdx\.json/.test(s.run ?? "")));
  });
});
