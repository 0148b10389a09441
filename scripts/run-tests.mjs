#!/usr/bin/env node
// Runs the node:test suites of the workspace with tsx. Node 20's --test takes no globs, so the
// files are collected here. Files named *.serial.test.ts (tests that stop shared services such as
// the Kafka broker) run afterwards, alone. Ends with one line "tests: N passed, N failed".
// Usage: run-tests.mjs [--unit] [path ...] (folders or test files, relative to the repo root).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const unitOnly = args.includes("--unit");
const roots = args.filter((a) => !a.startsWith("--"));
const searchRoots =
  roots.length > 0 ? roots : ["common", "services", "cli", "client", "bench", "gen", "scripts", "ui"];

/** @param {string} dir @returns {string[]} */
function collect(dir) {
  let entries;
  try {
    // A test file named on the command line is taken as it is.
    if (statSync(dir).isFile()) return dir.endsWith(".test.ts") ? [dir] : [];
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    if (name === "node_modules" || name.startsWith(".")) return [];
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return collect(path);
    return name.endsWith(".test.ts") ? [path] : [];
  });
}

const files = searchRoots
  .flatMap((r) => collect(join(root, r)))
  .filter((f) => !unitOnly || f.includes(`${join("src")}/`))
  .map((f) => relative(root, f))
  .sort();
if (files.length === 0) {
  console.error("run-tests: no test files found under", searchRoots.join(", "));
  process.exit(1);
}

const phases = [
  {
    files: files.filter((f) => !f.endsWith(".serial.test.ts")),
    concurrency: process.env.TEST_CONCURRENCY ?? "2",
  },
  { files: files.filter((f) => f.endsWith(".serial.test.ts")), concurrency: "1" },
].filter((p) => p.files.length > 0);

console.log(`run-tests: Node ${process.version} (${process.execPath}), ${files.length} files`);
const tmp = mkdtempSync(join(tmpdir(), "nf-tests-"));
let passed = 0;
let failed = 0;
let status = 0;
for (const [i, phase] of phases.entries()) {
  const tap = join(tmp, `phase-${i}.tap`);
  const result = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "--test",
      "--test-reporter=spec",
      "--test-reporter-destination=stdout",
      "--test-reporter=tap",
      `--test-reporter-destination=${tap}`,
      `--test-concurrency=${phase.concurrency}`,
      ...phase.files,
    ],
    { cwd: root, stdio: "inherit" },
  );
  const text = readFileSync(tap, "utf8");
  passed += Number(/^# pass (\d+)$/m.exec(text)?.[1] ?? 0);
  failed +=
    Number(/^# fail (\d+)$/m.exec(text)?.[1] ?? 0) + Number(/^# cancelled (\d+)$/m.exec(text)?.[1] ?? 0);
  if (result.status !== 0) status = result.status ?? 1;
}
rmSync(tmp, { recursive: true, force: true });
console.log(`tests: ${passed} passed, ${failed} failed`);
process.exit(status !== 0 ? status : failed > 0 ? 1 : 0);
