/**
 * A TCP proxy between an executor and the scheduler that can cut its connections the way networks
 * do: with a reset on both sides, or by dropping the executor's side while the scheduler's side
 * stays open and silent (the scheduler gets no FIN, no RST, no gRPC close; only its own liveness
 * check can notice). Bytes are forwarded untouched, so gRPC runs through it unchanged; with a
 * latency every chunk is held back that long in each direction (in order), e.g. to widen the
 * windows between the round trips of a database transaction.
 */
import net from "node:net";

/** How {@link TcpProxy.cut} ends a connection. */
export type CutMode =
  /** RST to both the executor and the scheduler. */
  | "reset"
  /** RST to the executor only; the scheduler's socket stays open and receives nothing more. */
  | "silent-upstream";

interface Pair {
  downstream: net.Socket;
  upstream: net.Socket;
  /** Once cut, nothing is forwarded and closing one side no longer closes the other. */
  cut: boolean;
}

/** A TCP proxy on 127.0.0.1 with a free port. */
export class TcpProxy {
  private readonly pairs = new Set<Pair>();
  /** Upstream sockets left open by "silent-upstream" cuts, destroyed by {@link close}. */
  private readonly dangling = new Set<net.Socket>();
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(
    private readonly server: net.Server,
    private readonly target: { host: string; port: number },
    private readonly latencyMs: number,
  ) {}

  /** Starts a proxy to `target` ("host:port"), adding `latencyMs` each way. */
  static async start(target: string, latencyMs = 0): Promise<TcpProxy> {
    const i = target.lastIndexOf(":");
    const server = net.createServer();
    const proxy = new TcpProxy(
      server,
      { host: target.slice(0, i), port: Number(target.slice(i + 1)) },
      latencyMs,
    );
    server.on("connection", (socket) => proxy.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return proxy;
  }

  /** Where executors should connect. */
  get address(): string {
    const a = this.server.address() as net.AddressInfo;
    return `127.0.0.1:${a.port}`;
  }

  /** Connections currently forwarded. */
  get open(): number {
    return [...this.pairs].filter((p) => !p.cut).length;
  }

  private accept(downstream: net.Socket): void {
    this.accepted++;
    const upstream = net.connect(this.target.port, this.target.host);
    const pair: Pair = { downstream, upstream, cut: false };
    this.pairs.add(pair);
    downstream.setNoDelay(true);
    upstream.setNoDelay(true);
    const forward = (to: net.Socket) => (chunk: Buffer) => {
      if (pair.cut) return;
      // Timers of equal delay fire in creation order, so the byte stream keeps its order.
      if (this.latencyMs === 0) to.write(chunk);
      else setTimeout(() => void (pair.cut || to.destroyed || to.write(chunk)), this.latencyMs);
    };
    downstream.on("data", forward(upstream));
    upstream.on("data", forward(downstream));
    const closeBoth = (): void => {
      if (pair.cut) return;
      pair.cut = true;
      this.pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    // Errors (ECONNRESET after a cut, refused connections) end the pair; they are expected here.
    downstream.on("error", closeBoth);
    upstream.on("error", closeBoth);
    downstream.on("close", closeBoth);
    upstream.on("close", closeBoth);
  }

  /** Cuts every open connection; returns how many were cut. */
  cut(mode: CutMode): number {
    let n = 0;
    for (const pair of [...this.pairs]) {
      if (pair.cut) continue;
      pair.cut = true;
      this.pairs.delete(pair);
      n++;
      pair.downstream.resetAndDestroy();
      if (mode === "reset") pair.upstream.resetAndDestroy();
      else {
        // Keep reading so the scheduler's writes never block on a full buffer; discard them.
        pair.upstream.removeAllListeners("data");
        pair.upstream.on("data", () => undefined);
        pair.upstream.on("error", () => undefined);
        this.dangling.add(pair.upstream);
      }
    }
    return n;
  }

  /** Stops accepting and destroys every socket, forwarded or dangling. */
  async close(): Promise<void> {
    for (const pair of this.pairs) {
      pair.cut = true;
      pair.downstream.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    for (const s of this.dangling) s.destroy();
    this.dangling.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
