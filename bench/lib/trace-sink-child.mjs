// The OTLP/HTTP trace sink of `npm run bench -- --tracing`, in its own process (started by
// trace-sink.ts with process.execPath): accepts POST /v1/traces, reads and discards the body,
// answers 200 with an empty ExportTraceServiceResponse, and counts requests and bytes, and the
// requests per exporting service (its service.name, found in the body). It prints
// `listening <port>` on stdout, answers a `stats` IPC message with its counts, and exits on
// `stop` or when its parent goes away.
import { createServer } from "node:http";

let requests = 0;
let bytes = 0;
/** Requests by service.name. */
const services = {};
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => {
    bytes += chunk.length;
    chunks.push(chunk);
  });
  req.on("end", () => {
    if (req.method === "POST" && req.url === "/v1/traces") {
      requests += 1;
      const name = /nexusflow-[a-z]+/.exec(Buffer.concat(chunks).toString("latin1"))?.[0] ?? "unknown";
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
  if (message === "stats") process.send?.({ requests, bytes, services });
  if (message === "stop") server.close(() => process.exit(0));
});
process.on("disconnect", () => process.exit(0));
