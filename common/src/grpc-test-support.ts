/**
 * For tests of gRPC plumbing in this package (interceptors, instrumentation): methods whose
 * messages are JSON, and a grpc-js server on a free loopback port with a client of it.
 */
import * as grpc from "@grpc/grpc-js";

/** JSON as a method's (de)serializer. */
export const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): unknown => JSON.parse(bytes.toString()) as unknown,
};

/** A method `/{service}/{name}` with JSON messages, its responses streamed or not. */
export function jsonMethod(
  service: string,
  name: string,
  responseStream: boolean,
  originalName?: string,
): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/${service}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
    ...(originalName === undefined ? {} : { originalName }),
  };
}

/** A server listening on 127.0.0.1 (a free port) and a client of it; `close` stops both. */
export interface Serving {
  client: grpc.Client;
  close(): Promise<void>;
}

/** Binds `server` (services added) to a free loopback port and makes a client of it. */
export async function serveOnLoopback(server: grpc.Server): Promise<Serving> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return {
    client,
    close: async () => {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
