import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { portInUse } from "./net.js";

describe("portInUse", () => {
  it("is true while a server listens on the port, false once it is closed, never for port 0", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    assert.equal(await portInUse("127.0.0.1", port), true);
    await new Promise((resolve) => server.close(resolve));
    assert.equal(await portInUse("127.0.0.1", port), false);
    assert.equal(await portInUse("127.0.0.1", 0), false);
  });
});
