#!/usr/bin/env node
// Runs the node:test suites of the workspace with tsx. Node 20's --test takes no globs, so the
// files are collected here. Usage: run-tests.mjs [--unit] [path ...] (paths relative to the repo root).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const unitOnly = args.includes("--unit");
const roots = args.filter((a) => !a.startsWith("--"));
const searchRoots = roots.length > 0 ? roots : ["common", "services", "cli", "bench"];

/** @param {string} dir @returns {string[]} */
function collect(dir) {
  let entries;
  try {
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
const result = spawnSync(
  process.execPath,
  [
    "--import",
    "tsx",
    "--test",
    "--test-reporter=spec",
    `--test-concurrency=${process.env.TEST_CONCURRENCY ?? "2"}`,
    ...files,
  ],
  { cwd: root, stdio: "inherit" },
);
process.exit(result.status ?? 1);
