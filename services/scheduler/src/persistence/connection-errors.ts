/**
 * node-postgres reports a connection it could not open, or lost while in use, as a plain Error
 * without a code ("timeout exceeded when trying to connect", "Connection terminated
 * unexpectedly"), unlike PostgreSQL's own errors (a SQLSTATE) and the socket's (an errno). The
 * scheduler's pools give those errors the SQLSTATE the SQL standard has for them, of class 08
 * (connection exception), so that a database outage is recognised by its code everywhere
 * (`isUnavailable` of @nexusflow/common), never by the wording of a driver's message.
 */
import type pg from "pg";

/** SQLSTATE 08001, sqlclient_unable_to_establish_sqlconnection: no connection could be had. */
export const CANNOT_CONNECT = "08001";

/** SQLSTATE 08006, connection_failure: the connection was lost while in use. */
export const CONNECTION_LOST = "08006";

/** Sets `code` on an Error that has none (node-postgres's own); returns `e`. */
function withCode<E>(e: E, code: string): E {
  if (e instanceof Error && (e as { code?: unknown }).code === undefined) Object.assign(e, { code });
  return e;
}

type ConnectCallback = (
  err: Error | undefined,
  client: pg.PoolClient | undefined,
  done: (release?: unknown) => void,
) => void;

/**
 * Gives the code-less connection failures of `pool` and of its clients a SQLSTATE of class 08:
 * {@link CANNOT_CONNECT} for a checkout that fails (the pool's own wait timeout, a client that
 * could not finish its start-up), {@link CONNECTION_LOST} for a connection that ends under a
 * client. Errors that have a code keep it.
 */
export function codeConnectionErrors(pool: pg.Pool): void {
  // A lost connection's error is emitted on its client before the queries in flight are failed
  // with the same object (node-postgres delivers those on the next tick): it has its code then.
  pool.on("connect", (client) => client.on("error", (e) => withCode(e, CONNECTION_LOST)));
  // pool.query checks a client out through connect() as well.
  const connect = pool.connect.bind(pool) as (
    callback?: ConnectCallback,
  ) => Promise<pg.PoolClient> | undefined;
  pool.connect = ((callback?: ConnectCallback) => {
    if (callback === undefined) {
      return (connect() as Promise<pg.PoolClient>).catch((e: unknown) => {
        throw withCode(e, CANNOT_CONNECT);
      });
    }
    void connect((err, client, done) => callback(withCode(err, CANNOT_CONNECT), client, done));
    return undefined;
  }) as typeof pool.connect;
}
