/**
 * The standard gRPC health service (`grpc.health.v1.Health`, grpc/grpc-proto
 * `grpc/health/v1/health.proto`) on a grpc-js server, for grpcurl, `grpc_health_probe` and
 * Kubernetes' gRPC probes, and a client check for it. The two messages have one field each, so
 * they are encoded by hand rather than generated from a vendored proto.
 *
 * A readiness check answers `undefined` when ready, or a short reason why not; the health service
 * maps it to SERVING / NOT_SERVING for the whole server ("") and for each service name it knows.
 */
import * as grpc from "@grpc/grpc-js";

/** `undefined` when ready, else why not (e.g. "the database does not answer"). */
export type ReadinessCheck = () => Promise<string | undefined>;

/**
 * `check`, shared by every caller: at most one evaluation runs at a time, and its answer is reused
 * for `maxAgeMs` after it came. The health service needs no token (probes carry none), so whatever
 * its readiness costs (the scheduler's is a `SELECT 1` on its hot-path pool) must not grow with the
 * callers: a flood of Check calls, or thousands of Watch streams, costs one evaluation a second.
 */
export function sharedReadiness(check: ReadinessCheck, maxAgeMs = 1000): ReadinessCheck {
  let inFlight: Promise<string | undefined> | undefined;
  let last: { at: number; answer: string | undefined } | undefined;
  return () => {
    if (last !== undefined && performance.now() - last.at < maxAgeMs) return Promise.resolve(last.answer);
    inFlight ??= check()
      .catch((e: unknown) => (e instanceof Error ? e.message : String(e)))
      .then((answer) => {
        last = { at: performance.now(), answer };
        return answer;
      })
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  };
}

/** `grpc.health.v1.HealthCheckResponse.ServingStatus`. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
/** A value of {@link ServingStatus}. */
export type ServingStatus = (typeof ServingStatus)[keyof typeof ServingStatus];

/** The health service's full name. */
export const HEALTH_SERVICE = "grpc.health.v1.Health";

/** `grpc.health.v1.HealthCheckRequest` (an object: grpc-js treats a falsy request as missing). */
export interface HealthCheckRequest {
  service: string;
}

/** Encodes `HealthCheckRequest { string service = 1; }`. */
function encodeRequest({ service }: HealthCheckRequest): Buffer {
  const name = Buffer.from(service, "utf8");
  return name.length === 0
    ? Buffer.alloc(0)
    : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
}

/** Decodes a HealthCheckRequest: the `service` field, unknown fields skipped. */
function decodeRequest(bytes: Buffer): HealthCheckRequest {
  let service = "";
  let i = 0;
  const read = (): number => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[i++];
      if (b === undefined) throw new Error("truncated HealthCheckRequest");
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
      shift += 7;
    }
  };
  while (i < bytes.length) {
    const key = read();
    const wire = key & 7;
    if (wire === 0) read();
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      const length = read();
      if (key >>> 3 === 1) service = bytes.subarray(i, i + length).toString("utf8");
      i += length;
    } else throw new Error(`HealthCheckRequest: unsupported wire type ${wire}`);
  }
  return { service };
}

/** Encodes `HealthCheckResponse { ServingStatus status = 1; }`. */
function encodeResponse(status: ServingStatus): Buffer {
  return Buffer.from([0x08, status]);
}

/** Decodes a HealthCheckResponse's status (UNKNOWN when absent). */
function decodeResponse(bytes: Buffer): ServingStatus {
  return bytes.length >= 2 && bytes[0] === 0x08 ? ((bytes[1] ?? 0) as ServingStatus) : ServingStatus.UNKNOWN;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

const method = <Res>(
  name: string,
  responseStream: boolean,
): grpc.MethodDefinition<HealthCheckRequest, Res> => ({
  path: `/${HEALTH_SERVICE}/${name}`,
  originalName: name,
  requestStream: false,
  responseStream,
  requestSerialize: encodeRequest,
  requestDeserialize: decodeRequest,
  responseSerialize: (status: Res) => encodeResponse(status as ServingStatus),
  responseDeserialize: (bytes: Buffer) => decodeResponse(bytes) as Res,
});

/** The grpc-js definition of `grpc.health.v1.Health` (Check and Watch). */
export const healthServiceDefinition = {
  check: method<ServingStatus>("Check", false),
  watch: method<ServingStatus>("Watch", true),
} satisfies grpc.ServiceDefinition;

/** Options of {@link addHealthService}. */
export interface HealthServiceOptions {
  /** Readiness of the whole server. */
  ready: ReadinessCheck;
  /** Service names that report the server's readiness too; others answer NOT_FOUND (Check). */
  services: readonly string[];
  /** How often Watch re-evaluates readiness. @default 5000 */
  watchIntervalMs?: number;
  /**
   * Watch calls open at once; more are refused RESOURCE_EXHAUSTED (no token is needed to open one,
   * and each holds a timer and a stream). @default {@link DEFAULT_MAX_HEALTH_WATCHES}
   */
  maxWatches?: number;
}

/** Default of {@link HealthServiceOptions.maxWatches}: far more probes than any deployment runs. */
export const DEFAULT_MAX_HEALTH_WATCHES = 1000;

/**
 * Adds `grpc.health.v1.Health` to `server`. Check answers SERVING or NOT_SERVING for "" and each
 * of `services`; Watch sends the status at once and again whenever it changes, until cancelled.
 */
export function addHealthService(server: grpc.Server, options: HealthServiceOptions): void {
  const known = new Set(["", ...options.services]);
  const maxWatches = options.maxWatches ?? DEFAULT_MAX_HEALTH_WATCHES;
  let watches = 0;
  const status = async (): Promise<ServingStatus> =>
    (await options.ready().catch((e: unknown) => String(e))) === undefined
      ? ServingStatus.SERVING
      : ServingStatus.NOT_SERVING;
  server.addService(healthServiceDefinition, {
    check(
      call: grpc.ServerUnaryCall<HealthCheckRequest, ServingStatus>,
      callback: grpc.sendUnaryData<ServingStatus>,
    ) {
      if (!known.has(call.request.service)) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        return;
      }
      status().then(
        (s) => callback(null, s),
        (e: unknown) => callback({ code: grpc.status.INTERNAL, details: String(e) }),
      );
    },
    watch(call: grpc.ServerWritableStream<HealthCheckRequest, ServingStatus>) {
      if (watches >= maxWatches) {
        call.emit("error", {
          code: grpc.status.RESOURCE_EXHAUSTED,
          details: `${maxWatches} health Watch calls are open on this server; close one or use Check`,
        });
        return;
      }
      watches++;
      let counted = true;
      const release = (): void => {
        if (counted) {
          counted = false;
          watches--;
        }
      };
      let last: ServingStatus | undefined;
      let timer: NodeJS.Timeout | undefined;
      const send = (s: ServingStatus): void => {
        if (s !== last && !call.cancelled) {
          last = s;
          call.write(s);
        }
      };
      const tick = (): void => {
        if (call.cancelled) return;
        const next = known.has(call.request.service)
          ? status()
          : Promise.resolve(ServingStatus.SERVICE_UNKNOWN);
        next.then(
          (s) => {
            send(s);
            if (!call.cancelled) timer = setTimeout(tick, options.watchIntervalMs ?? 5000);
          },
          () => {
            release();
            call.end();
          },
        );
      };
      call.on("cancelled", () => {
        clearTimeout(timer);
        release();
      });
      call.on("close", release);
      tick();
    },
  });
}

/**
 * Asks the health service at `address` (`host:port`) whether `service` ("" for the server) is
 * serving: resolves with its status; rejects when the call fails (unreachable, deadline).
 */
export async function checkGrpcHealth(
  address: string,
  options: { service?: string; timeoutMs?: number } = {},
): Promise<ServingStatus> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<ServingStatus>((resolve, reject) => {
      const m = healthServiceDefinition.check;
      client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        { service: options.service ?? "" },
        new grpc.Metadata(),
        { deadline: Date.now() + (options.timeoutMs ?? 2000) },
        (e, response) =>
          e === null && response !== undefined ? resolve(response) : reject(e ?? new Error("no response")),
      );
    });
  } finally {
    client.close();
  }
}
