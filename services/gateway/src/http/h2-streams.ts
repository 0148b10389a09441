/**
 * HTTP/2 streams whose response is complete while their client still has its side open.
 *
 * Node's HTTP/2 server closes a stream only once both sides have ended it. A response with trailers
 * (every gRPC response, and every response of Node's compatibility API, which always waits for
 * trailers) ends the server's side, but a client that keeps its own side open (a bidi stream whose
 * client never half-closes: grpcurl's reflection stream; a request body still being sent when the
 * answer is an early error) leaves the stream half-closed for as long as the client likes. Such a
 * stream holds its session open, so `session.close()` (GOAWAY, the drain) never completes and the
 * drain waits for its whole timeout.
 *
 * RFC 9113 §8.1 gives the server the way out: after a complete response it MAY send RST_STREAM with
 * NO_ERROR, asking the client to stop sending without error; the client keeps the response (gRPC
 * servers such as grpc-go do this whenever the client has not half-closed).
 */
import * as http2 from "node:http2";

/**
 * Resets the stream of `req` with NO_ERROR once its response is complete, when the client has not
 * ended its side by then. Call it before the response is written (its listener must come after the
 * one of Node's compatibility response, which sends the trailers).
 */
export function resetWhenAnswered(req: http2.Http2ServerRequest): void {
  const stream = req.stream;
  stream.once("wantTrailers", () => {
    // The compatibility response's listener, run just before this one, has sent its trailers: Node
    // submits them in a setImmediate, so one queued now runs after it, and the reset follows the
    // trailers on the wire (a reset sent first would make the client drop them).
    setImmediate(() => {
      if (stream.closed || stream.destroyed || stream.state.remoteClose === 1) return;
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  });
}
