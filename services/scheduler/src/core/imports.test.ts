/** The core stays pure: no database, RPC, timers or other I/O among its imports. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { it } from "node:test";

const BANNED =
  /^(pg|@mikro-orm\/.*|@grpc\/.*|@connectrpc\/.*|node:(timers.*|fs.*|net|http.*|child_process)|kafkajs|minio|\.\.\/(engine|api|events)\/.*|\.\.\/persistence\/(?!engine-store\.js$).*)$/;

void it("the core imports nothing from pg, MikroORM, gRPC, Connect, timers or the shell", () => {
  const dir = new URL(".", import.meta.url);
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(".ts") || name.endsWith(".test.ts")) continue;
    const text = readFileSync(new URL(name, dir), "utf8");
    for (const [, spec] of text.matchAll(/from "([^"]+)"/g))
      assert.ok(!BANNED.test(spec ?? ""), `${name} imports ${spec}`);
    assert.ok(
      !/\b(setTimeout|setInterval|setImmediate|Math\.random|Date\.now|performance\.now)\b/.test(
        text.replace(/\/\*\*[\s\S]*?\*\//g, ""),
      ),
      `${name} reads a clock or randomness`,
    );
  }
});
