// The OTLP/HTTP trace sink of `npm run bench -- --tracing`, in its own process (started by
// trace-sink.ts with process.execPath): accepts POST /v1/traces, reads and discards the body,
// answers 200 with an empty ExportTraceServiceResponse, and counts requests and bytes, and the
// requests per exporting service (its service.name, found in the body) and the spans by name (their
// first word: the OTLP body walked field by field, no decoder loaded). It prints
// `listening <port>` on stdout, answers a `stats` IPC message with its counts, and exits on
// `stop` or when its parent goes away.
import { createServer } from "node:http";

let requests = 0;
let bytes = 0;
/** Requests by service.name. */
const services = {};
/** Spans by name. */
const spans = {};

/** Reads a varint at `at`: [value, next offset]. */
function varint(buf, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const b = buf[at++];
    if (b === undefined || shift > 63) throw new Error("truncated varint");
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [value, at];
    shift += 7;
  }
}

/** Calls `f(field, start, end)` for each length-delimited field of the message in buf[from, to). */
function fields(buf, from, to, f) {
  let at = from;
  while (at < to) {
    let key;
    [key, at] = varint(buf, at);
    const wire = key & 7;
    if (wire === 0) [, at] = varint(buf, at);
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      let length;
      [length, at] = varint(buf, at);
      if (at + length > to) throw new Error("truncated field");
      f(key >>> 3, at, at + length);
      at += length;
    } else throw new Error(`wire type ${wire}`);
  }
}

/** Counts the spans of an ExportTraceServiceRequest by name. */
function countSpans(buf) {
  fields(buf, 0, buf.length, (f1, s1, e1) => {
    if (f1 !== 1) return; // ResourceSpans
    fields(buf, s1, e1, (f2, s2, e2) => {
      if (f2 !== 2) return; // ScopeSpans
      fields(buf, s2, e2, (f3, s3, e3) => {
        if (f3 !== 2) return; // Span
        fields(buf, s3, e3, (f4, s4, e4) => {
          if (f4 !== 5) return; // name
          const name = buf.toString("utf8", s4, e4).replace(/ .*/, "");
          spans[name] = (spans[name] ?? 0) + 1;
        });
      });
    });
  });
}
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => {
    bytes += chunk.length;
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (req.method === "POST" && req.url === "/v1/traces") {
      requests += 1;
      const body = Buffer.concat(chunks);
      const name = /nexusflow-[a-z]+/.exec(body.toString("latin1"))?.[0] ?? "unknown";
      try {
        // A compressed body (OTEL_EXPORTER_OTLP_COMPRESSION) is counted as a request only.
        if (req.headers["content-encoding"] === undefined) countSpans(body);
      } catch {
        spans["(undecodable)"] = (spans["(undecodable)"] ?? 0) + 1;
      }
      services[name] = (services[name] ?? 0) + 1;
      res.writeHead(200, { "content-type": "application/x-protobuf", "content-length": "0" });
    } else {
      res.writeHead(404, { "content-length": "0" });
    }
    res.end();
  });
});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === "object" && address !== null ? address.port : 0}\n`);
});
process.on("message", (message) => {
  if (message === "stats") process.send?.({ requests, bytes, services, spans });
  if (message === "stop") server.close(() => process.exit(0));
});
process.on("disconnect", () => process.exit(0));
