/**
 * The parts of `nexusflow artifacts` that need no server: keys, sizes, the table's order, and the
 * file sink (a temporary file renamed into place, never over a file without --force). The
 * commands themselves run against a live stack in services/gateway/test/cli-artifacts.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ArtifactRefSchema } from "@nexusflow/gen";
import {
  TargetExistsError,
  artifactKey,
  artifactPlace,
  artifactRows,
  formatSize,
  namedTask,
  openFileSink,
  streamSink,
} from "./artifacts-command.js";

const RUN = "0b0e3f57-6a3c-4a8e-9a57-3c1a1f0c2d11";

describe("artifacts command helpers", () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "nf-artifacts-cmd-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads step, attempt and name from keys of the task layout, and builds them", () => {
    assert.deepEqual(artifactPlace(`runs/${RUN}/build/attempt-12/reports/a.csv`), {
      step: "build",
      attempt: 12,
      name: "reports/a.csv",
    });
    assert.equal(artifactPlace(`runs/${RUN}/build.compensation/attempt-1/x`)?.step, "build.compensation");
    assert.equal(artifactPlace("exports/run.json"), undefined);
    assert.equal(artifactPlace(`runs/${RUN}/build/attempt-0/x`), undefined);
    assert.equal(artifactKey(RUN, "build", 2, "a/b.txt"), `runs/${RUN}/build/attempt-2/a/b.txt`);
    assert.equal(
      artifactKey(RUN, "build.compensation", 1, "x"),
      `runs/${RUN}/build.compensation/attempt-1/x`,
    );
  });

  it("names an element of a map step {step}[{i}], its files in the element's folder", () => {
    assert.deepEqual(artifactPlace(`runs/${RUN}/each/element-3/attempt-2/reports/a.csv`), {
      step: "each[3]",
      attempt: 2,
      name: "reports/a.csv",
    });
    assert.equal(artifactPlace(`runs/${RUN}/each/element-10/attempt-1/x`)?.step, "each[10]");
    assert.equal(artifactPlace(`runs/${RUN}/each/element-01/attempt-1/x`), undefined);
    assert.equal(artifactKey(RUN, "each[3]", 2, "a/b.txt"), `runs/${RUN}/each/element-3/attempt-2/a/b.txt`);
    assert.equal(artifactKey(RUN, "each[0]", 1, "x"), `runs/${RUN}/each/element-0/attempt-1/x`);
    for (const step of ["each", "each[3]", "each[10]", "build.compensation"]) {
      const key = artifactKey(RUN, step, 4, "x");
      assert.deepEqual(artifactPlace(key), { step, attempt: 4, name: "x" }, key);
    }
    assert.deepEqual(namedTask("each[12]"), { stepId: "each", kind: "STEP", elementIndex: 12 });
    assert.deepEqual(namedTask("each[01]"), { stepId: "each[01]", kind: "STEP" });
    assert.deepEqual(namedTask("build.compensation"), { stepId: "build", kind: "COMPENSATION" });
    assert.throws(() => artifactKey("a/b", "build", 1, "x"), /invalid run id/);
  });

  it("formats sizes in binary units", () => {
    assert.equal(formatSize(0n), "0 B");
    assert.equal(formatSize(1023), "1023 B");
    assert.equal(formatSize(1536), "1.5 KiB");
    assert.equal(formatSize(20n * 1024n * 1024n), "20.0 MiB");
  });

  it("orders rows by step, then attempt as a number, then name", () => {
    const ref = (key: string, size = 1): ReturnType<typeof create<typeof ArtifactRefSchema>> =>
      create(ArtifactRefSchema, { key, size: BigInt(size), contentType: "text/plain" });
    const rows = artifactRows([
      ref(`runs/${RUN}/b/attempt-10/x`),
      ref(`runs/${RUN}/b/attempt-2/y`),
      ref(`runs/${RUN}/b/attempt-2/a`),
      ref(`runs/${RUN}/a/attempt-1/z`, 2048),
    ]);
    assert.deepEqual(rows, [
      ["a", "1", "z", "2.0 KiB", "text/plain"],
      ["b", "2", "a", "1 B", "text/plain"],
      ["b", "2", "y", "1 B", "text/plain"],
      ["b", "10", "x", "1 B", "text/plain"],
    ]);
  });

  it("orders a map step's elements by number, each by attempt, then the step's compensation", () => {
    const ref = (key: string): ReturnType<typeof create<typeof ArtifactRefSchema>> =>
      create(ArtifactRefSchema, { key, size: 1n, contentType: "text/plain" });
    const rows = artifactRows([
      ref(`runs/${RUN}/each/element-10/attempt-1/x`),
      ref(`runs/${RUN}/each/element-2/attempt-10/x`),
      ref(`runs/${RUN}/each/element-2/attempt-2/x`),
      ref(`runs/${RUN}/each.compensation/attempt-1/undo`),
      ref(`runs/${RUN}/each/element-0/attempt-1/x`),
      ref(`runs/${RUN}/each-b/attempt-1/y`),
    ]);
    assert.deepEqual(
      rows.map((r) => r.slice(0, 3)),
      [
        ["each[0]", "1", "x"],
        ["each[2]", "2", "x"],
        ["each[2]", "10", "x"],
        ["each[10]", "1", "x"],
        ["each.compensation", "1", "undo"],
        ["each-b", "1", "y"],
      ],
    );
  });

  it("writes a file through a temporary file beside it, shown only once committed", async () => {
    const target = join(dir, "out.bin");
    const sink = await openFileSink(target, false);
    await sink.write(Buffer.from("hello "));
    await sink.write(Buffer.from("world"));
    const during = await readdir(dir);
    assert.equal(during.length, 1);
    assert.match(during[0] ?? "", /^\.out\.bin\.[0-9a-f]{8}\.part$/);
    await sink.commit();
    assert.deepEqual(await readdir(dir), ["out.bin"]);
    assert.equal(await readFile(target, "utf8"), "hello world");
    await rm(target);
  });

  it("aborting removes the temporary file and leaves an existing file alone", async () => {
    const target = join(dir, "kept.txt");
    await writeFile(target, "old");
    const sink = await openFileSink(target, true);
    await sink.write(Buffer.from("new, half"));
    await sink.abort();
    assert.deepEqual(await readdir(dir), ["kept.txt"]);
    assert.equal(await readFile(target, "utf8"), "old");
    await rm(target);
  });

  it("never replaces a file without --force, even one that appears during the download", async () => {
    const target = join(dir, "race.txt");
    await writeFile(target, "mine");
    await assert.rejects(openFileSink(target, false), TargetExistsError);
    await assert.rejects(openFileSink(dir, true), /is a directory/);
    await rm(target);

    const sink = await openFileSink(target, false);
    await sink.write(Buffer.from("downloaded"));
    await writeFile(target, "written meanwhile");
    await assert.rejects(sink.commit(), TargetExistsError);
    assert.equal(await readFile(target, "utf8"), "written meanwhile");
    assert.deepEqual(await readdir(dir), ["race.txt"], "no temporary file left");
    await rm(target);

    const forced = await openFileSink(target, true);
    await writeFile(target, "replaced");
    await forced.write(Buffer.from("downloaded"));
    await forced.commit();
    assert.equal(await readFile(target, "utf8"), "downloaded");
    await rm(target);
  });

  it("writes bytes to a stream unchanged, and reports a stream that fails", async () => {
    const out = new PassThrough();
    const got: Buffer[] = [];
    out.on("data", (c: Buffer) => got.push(c));
    const sink = streamSink(out);
    const bytes = Buffer.from([0, 255, 10, 13, 0xc3, 0x28]);
    await sink.write(bytes);
    await sink.commit();
    assert.deepEqual(Buffer.concat(got), bytes);

    const broken = new PassThrough();
    const failing = streamSink(broken);
    broken.destroy(Object.assign(new Error("write EPIPE"), { code: "EPIPE" }));
    await assert.rejects(failing.write(bytes));
    await failing.abort();
  });
});
