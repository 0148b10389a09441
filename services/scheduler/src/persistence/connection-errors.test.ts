import assert from "node:assert/strict";
import { type Server, type Socket, createServer } from "node:net";
import { after, describe, it } from "node:test";
import { isUnavailable } from "@nexusflow/common";
import pg from "pg";
import { CANNOT_CONNECT, CONNECTION_LOST, codeConnectionErrors } from "./connection-errors.js";

/** One backend message: type byte, length, body. */
function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

const AUTHENTICATION_OK = message("R", Buffer.from([0, 0, 0, 0]));
const READY_FOR_QUERY = message("Z", Buffer.from("I"));

/** An ErrorResponse with SQLSTATE `code`. */
function errorResponse(code: string, text: string): Buffer {
  const fields = [
    ["S", "ERROR"],
    ["V", "ERROR"],
    ["C", code],
    ["M", text],
  ];
  return message(
    "E",
    Buffer.concat([...fields.map(([k, v]) => Buffer.from(`${k}${v}\0`)), Buffer.from([0])]),
  );
}

/**
 * A stand-in for PostgreSQL that speaks just enough of the protocol: "silent" accepts connections
 * and never answers; otherwise it lets every client in without a password and answers each query
 * by closing the connection ("drop") or with a unique violation ("unique").
 */
async function fakePostgres(mode: "silent" | "drop" | "unique"): Promise<{ url: string; server: Server }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let started = false;
    socket.on("data", (chunk) => {
      if (mode === "silent") return;
      if (!started) {
        started = true;
        socket.write(Buffer.concat([AUTHENTICATION_OK, READY_FOR_QUERY]));
      } else if (chunk[0] === "Q".charCodeAt(0)) {
        if (mode === "drop") socket.destroy();
        else socket.write(Buffer.concat([errorResponse("23505", "duplicate key value"), READY_FOR_QUERY]));
      }
    });
  });
  server.on("close", () => sockets.forEach((s) => s.destroy()));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return { url: `postgres://nexusflow@127.0.0.1:${port}/nexusflow`, server };
}

describe("connection failures of the scheduler's pools", () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  async function pool(mode: "silent" | "drop" | "unique", options: pg.PoolConfig = {}): Promise<pg.Pool> {
    const { url, server } = await fakePostgres(mode);
    const p = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 300, ...options });
    p.on("error", () => undefined);
    codeConnectionErrors(p);
    cleanups.push(async () => {
      await p.end();
      await new Promise((resolve) => server.close(resolve));
    });
    return p;
  }

  it("a connection lost under a query: 08006, whether the client was checked out or the pool ran the query", async () => {
    const p = await pool("drop");
    const client = await p.connect();
    const lost = await client.query("SELECT 1").catch((e: unknown) => e);
    client.release(true);
    assert.ok(lost instanceof Error, String(lost));
    assert.equal((lost as Error & { code?: string }).code, CONNECTION_LOST, lost.message);
    assert.ok(isUnavailable(lost));
    const viaPool = await p.query("SELECT 1").catch((e: unknown) => e);
    assert.equal((viaPool as { code?: string }).code, CONNECTION_LOST);
  });

  it("a server that never finishes the start-up: 08001", async () => {
    const p = await pool("silent");
    const refused = await p.connect().catch((e: unknown) => e);
    assert.ok(refused instanceof Error, String(refused));
    assert.equal((refused as Error & { code?: string }).code, CANNOT_CONNECT, refused.message);
    assert.ok(isUnavailable(refused));
    const viaPool = await p.query("SELECT 1").catch((e: unknown) => e);
    assert.equal((viaPool as { code?: string }).code, CANNOT_CONNECT);
  });

  it("no free connection within the pool's timeout: 08001", async () => {
    const p = await pool("unique", { max: 1 });
    const held = await p.connect();
    try {
      const waited = await p.connect().catch((e: unknown) => e);
      assert.ok(waited instanceof Error, String(waited));
      assert.equal((waited as Error & { code?: string }).code, CANNOT_CONNECT, waited.message);
      assert.ok(isUnavailable(waited));
    } finally {
      held.release();
    }
  });

  it("errors that have a code keep it: PostgreSQL's SQLSTATE, the socket's errno", async () => {
    const p = await pool("unique");
    const duplicate = await p.query("SELECT 1").catch((e: unknown) => e);
    assert.equal((duplicate as { code?: string }).code, "23505");
    assert.equal(isUnavailable(duplicate), false);

    const closed = await fakePostgres("silent");
    await new Promise((resolve) => closed.server.close(resolve));
    const gone = new pg.Pool({ connectionString: closed.url, connectionTimeoutMillis: 300 });
    codeConnectionErrors(gone);
    const refused = await gone.query("SELECT 1").catch((e: unknown) => e);
    await gone.end();
    assert.equal((refused as { code?: string }).code, "ECONNREFUSED");
    assert.ok(isUnavailable(refused));
  });
});
