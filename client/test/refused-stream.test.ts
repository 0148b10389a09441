/**
 * A call whose HTTP/2 stream the server refuses (RST_STREAM REFUSED_STREAM: not processed, RFC 9113
 * section 8.7; what a server that is closing, or past its concurrent-stream limit, answers) is
 * sent again by the client whatever its method, and ends as UNAVAILABLE, never INTERNAL, when it
 * is not sent again. The server is a real HTTP/2 Connect server that refuses the first streams.
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { WorkflowService } from "@nexusflow/gen";
import { NexusflowClient } from "../src/index.js";

describe("a call whose HTTP/2 stream the server refused", () => {
  let server: http2.Http2Server;
  let baseUrl = "";
  /** Streams still to refuse, streams seen, and calls the service handled. */
  let refuse = 0;
  let streams = 0;
  let handled = 0;

  before(async () => {
    const routes = (router: ConnectRouter): void => {
      router.service(WorkflowService, {
        signalRun: () => {
          handled++;
          return { stepId: "approval", duplicate: false };
        },
      });
    };
    const adapter = connectNodeAdapter({ routes });
    server = http2.createServer({}, (req, res) => {
      streams++;
      if (refuse > 0) {
        refuse--;
        req.stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      adapter(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  for (const protocol of ["grpc", "connect"] as const) {
    const client = (retry?: false): NexusflowClient =>
      new NexusflowClient({
        baseUrl,
        protocol,
        httpVersion: "2",
        ...(retry === false ? { retry: false as const } : { retry: { initialDelayMs: 1, maxDelayMs: 5 } }),
      });

    it(`is sent again even when it is not idempotent (SignalRun without a key, ${protocol})`, async () => {
      const nexusflow = client();
      try {
        [refuse, streams, handled] = [2, 0, 0];
        const signalled = await nexusflow.signalRun("run-1", "approval", { payload: { ok: true } });
        assert.deepEqual(signalled, { stepId: "approval", duplicate: false });
        assert.equal(streams, 3, "two refused streams, then the one served");
        assert.equal(handled, 1, "the service saw the call once");
      } finally {
        nexusflow.close();
      }
    });

    it(`ends as UNAVAILABLE, not INTERNAL, when it is not sent again (${protocol})`, async () => {
      const nexusflow = client(false);
      try {
        [refuse, streams, handled] = [1, 0, 0];
        await assert.rejects(
          nexusflow.signalRun("run-1", "approval"),
          (e: unknown) =>
            e instanceof ConnectError && e.code === Code.Unavailable && /REFUSED_STREAM/.test(e.rawMessage),
        );
        assert.equal(handled, 0);
      } finally {
        nexusflow.close();
      }
    });
  }
});
