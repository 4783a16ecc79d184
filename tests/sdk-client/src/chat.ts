// Two clients of the official SpacetimeDB TypeScript SDK (npm `spacetimedb`) talk through a
// Lightcone server running the `quickstart_chat` module. Test-time only: the SDK is BSL and
// never part of the product.
//
// Usage: node dist/chat.js <server url> <database name>
// Environment: SDK_WS_PROTOCOL=v2|v3 restricts the subprotocols the SDK offers (default: the
// SDK's own list, v3 then v2, and the server must pick v3); SDK_COMPRESSION=none|gzip (default:
// the SDK's default, gzip).
// Exits 0 when every check passed; otherwise prints `FAIL: ...` and exits 1.

import { Identity } from 'spacetimedb';
import { WebSocket as UndiciWebSocket } from 'undici';
import {
  DbConnection,
  type ErrorContext,
  type EventContext,
  type SubscriptionHandle,
} from './module_bindings';
import type { Message, User } from './module_bindings/types';

const [uri, dbName] = process.argv.slice(2);
if (!uri || !dbName) {
  console.error('usage: node dist/chat.js <server url> <database name>');
  process.exit(2);
}

const STEP_TIMEOUT_MS = Number(process.env.SDK_STEP_TIMEOUT_MS ?? 15000);
const QUERIES = ['SELECT * FROM message', 'SELECT * FROM user'];

const ONLY_PROTOCOL = process.env.SDK_WS_PROTOCOL
  ? `${process.env.SDK_WS_PROTOCOL}.bsatn.spacetimedb`
  : undefined;
const COMPRESSION = process.env.SDK_COMPRESSION as 'none' | 'gzip' | undefined;

/** Every socket the SDK opened: what it offered, what the server chose, what came back. */
const sockets: { url: URL; offered: string[]; ws: UndiciWebSocket; frames: number; tags: Set<number> }[] = [];

// Node 20 has no global WebSocket, so the SDK falls back to undici's. We install undici's
// ourselves, wrapped to record the handshake and optionally offer a single subprotocol; the
// SDK's own decompressing adapter and message handling stay in use.
class RecordingWebSocket extends UndiciWebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    let offered = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
    if (ONLY_PROTOCOL) offered = offered.filter(p => p === ONLY_PROTOCOL);
    super(url, offered);
    const rec = { url: new URL(url.toString()), offered, ws: this as UndiciWebSocket, frames: 0, tags: new Set<number>() };
    sockets.push(rec);
    this.addEventListener('message', (ev: any) => {
      rec.frames += 1;
      const data = ev.data;
      if (data instanceof ArrayBuffer && data.byteLength > 0) rec.tags.add(new Uint8Array(data)[0]);
    });
  }
}
(globalThis as any).WebSocket = RecordingWebSocket;

function log(msg: string): void {
  console.log(`[sdk-client] ${msg}`);
}

class Failure extends Error {}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Failure(what);
  log(`ok: ${what}`);
}

/** Resolves when `cond()` holds (re-checked whenever `poke()` runs and every 50 ms). */
function waitFor(what: string, cond: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      let ok = false;
      try {
        ok = cond();
      } catch (e) {
        reject(e);
        return;
      }
      if (ok) {
        log(`ok: ${what}`);
        resolve();
      } else if (Date.now() - started > STEP_TIMEOUT_MS) {
        reject(new Failure(`timed out after ${STEP_TIMEOUT_MS} ms waiting for: ${what}`));
      } else {
        setTimeout(tick, 50);
      }
    };
    tick();
  });
}

function withTimeout<T>(what: string, p: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Failure(`timed out after ${STEP_TIMEOUT_MS} ms: ${what}`)),
      STEP_TIMEOUT_MS
    );
    p.then(
      v => {
        clearTimeout(t);
        resolve(v);
      },
      e => {
        clearTimeout(t);
        reject(e);
      }
    );
  });
}

/** One SDK client: its connection and what its callbacks saw. */
class Client {
  conn!: DbConnection;
  identity!: Identity;
  token!: string;
  applied = false;
  errors: string[] = [];
  messageInserts: { row: Message; eventTag: string }[] = [];
  userInserts: User[] = [];
  userUpdates: { old: User; new: User; eventTag: string }[] = [];
  disconnected = false;

  constructor(readonly name: string) {}

  /** Connects (with `token` if given) and subscribes to both tables. */
  async connect(token?: string, subscribe = true, confirmedReads?: boolean): Promise<void> {
    this.applied = false;
    this.disconnected = false;
    let sentConnectionId = '';
    await withTimeout(
      `${this.name} connects`,
      new Promise<void>((resolve, reject) => {
        const builder = DbConnection.builder()
          .withUri(uri)
          .withDatabaseName(dbName)
          .withToken(token)
          .withCompression(COMPRESSION || 'gzip');
        if (confirmedReads !== undefined) builder.withConfirmedReads(confirmedReads);
        builder
          .onConnect((_ctx, identity, tok) => {
            this.identity = identity;
            this.token = tok;
            log(`${this.name} connected as ${identity.toHexString()}`);
            resolve();
          })
          .onConnectError((_ctx: ErrorContext, err: Error) => {
            reject(new Failure(`${this.name} could not connect: ${err?.message ?? err}`));
          })
          .onDisconnect((_ctx: ErrorContext, err?: Error) => {
            this.disconnected = true;
            if (err) this.errors.push(`${this.name} disconnected with error: ${err.message}`);
          });
        this.conn = builder.build();
        sentConnectionId = this.conn.connectionId.toHexString();
      })
    );
    // InitialConnection's connection id: the one in the URL if the SDK sent one (2.10.1 sets it
    // on the base URL, and resolving `v1/database/…/subscribe` against that drops it), else the
    // server's pick, which the SDK adopts.
    const asked = sockets[sockets.length - 1]?.url.searchParams.get('connection_id');
    const got = this.conn.connectionId.toHexString();
    if (asked) {
      check(got === asked, `${this.name}: InitialConnection echoes the connection_id it asked for (${asked})`);
    } else {
      check(
        !this.conn.connectionId.isZero() && got !== sentConnectionId,
        `${this.name}: no connection_id in the URL; the SDK adopted the server's (${got})`
      );
    }
    // The identity in InitialConnection is the token's `hex_identity` claim (byte order).
    const claims = JSON.parse(Buffer.from(this.token.split('.')[1], 'base64url').toString('utf8'));
    check(
      claims.hex_identity === this.identity.toHexString(),
      `${this.name}: its identity equals the token's hex_identity claim`
    );
    if (!subscribe) return;
    this.conn.db.message.onInsert((ctx: EventContext, row: Message) => {
      this.messageInserts.push({ row, eventTag: ctx.event.tag });
    });
    this.conn.db.user.onInsert((_ctx: EventContext, row: User) => {
      this.userInserts.push(row);
    });
    this.conn.db.user.onUpdate((ctx: EventContext, oldRow: User, newRow: User) => {
      this.userUpdates.push({ old: oldRow, new: newRow, eventTag: ctx.event.tag });
    });
    await withTimeout(
      `${this.name} subscription applied`,
      new Promise<void>((resolve, reject) => {
        this.conn
          .subscriptionBuilder()
          .onApplied(() => {
            this.applied = true;
            resolve();
          })
          .onError((ctx: ErrorContext) => {
            reject(new Failure(`${this.name} subscription failed: ${String(ctx.event)}`));
          })
          .subscribe(QUERIES);
      })
    );
    log(`ok: ${this.name} subscribed to ${QUERIES.join(' + ')}`);
  }

  user(id: Identity): User | undefined {
    return this.conn.db.user.identity.find(id) ?? undefined;
  }

  sawMessage(from: Identity, text: string): boolean {
    return this.messageInserts.some(m => m.row.text === text && m.row.sender.isEqual(from));
  }

  async expectEmptyMessageRejected(): Promise<void> {
    let error: unknown = undefined;
    try {
      await withTimeout(`${this.name} send_message("")`, this.conn.reducers.sendMessage({ text: '' }));
    } catch (e) {
      error = e;
    }
    const msg = error instanceof Error ? error.message : String(error);
    check(
      error !== undefined && !(error instanceof Failure),
      `${this.name}: send_message("") reports an error (got ${error === undefined ? 'success' : msg})`
    );
    check(
      msg === 'Messages must not be empty',
      `${this.name}: the error is "Messages must not be empty" (got ${JSON.stringify(msg)})`
    );
  }
}

/** A connected client without the default subscription. */
async function connectBare(name: string): Promise<Client> {
  const cl = new Client(name);
  await cl.connect(undefined, false);
  return cl;
}

async function subscribeAndWait(cl: Client, query: string): Promise<SubscriptionHandle> {
  return withTimeout(
    `${cl.name} subscribes to ${query}`,
    new Promise<SubscriptionHandle>((resolve, reject) => {
      const handle: SubscriptionHandle = cl.conn
        .subscriptionBuilder()
        .onApplied(() => resolve(handle))
        .onError((ctx: ErrorContext) => reject(new Failure(`${cl.name}: ${query} failed: ${String(ctx.event)}`)))
        .subscribe(query);
    })
  );
}

async function main(): Promise<void> {
  const a = new Client('A');
  const b = new Client('B');
  await a.connect();
  await b.connect();
  check(!a.identity.isEqual(b.identity), 'A and B have different identities');

  // Both see both users online (identity_connected ran for each).
  await waitFor('A sees its own user row, online', () => a.user(a.identity)?.online === true);
  await waitFor('A sees B online', () => a.user(b.identity)?.online === true);
  await waitFor('B sees A online', () => b.user(a.identity)?.online === true);

  // A names itself and speaks.
  await withTimeout('A set_name("alice")', a.conn.reducers.setName({ name: 'alice' }));
  log('ok: A set_name("alice") reported success');
  check(a.user(a.identity)?.name === 'alice', "A's own cache has its name alice right after the call");
  check(
    a.userUpdates.some(u => u.new.identity.isEqual(a.identity) && u.new.name === 'alice' && u.eventTag === 'Reducer'),
    "A's user on-update callback fired for its own set_name with a Reducer event"
  );
  await withTimeout('A send_message("Hello from A")', a.conn.reducers.sendMessage({ text: 'Hello from A' }));
  log('ok: A send_message("Hello from A") reported success');
  check(
    a.messageInserts.some(m => m.row.text === 'Hello from A' && m.eventTag === 'Reducer'),
    "A's message on-insert callback fired for its own message with a Reducer event"
  );

  await waitFor("B's message on-insert callback sees A's message", () => b.sawMessage(a.identity, 'Hello from A'));
  const got = b.messageInserts.find(m => m.row.text === 'Hello from A')!;
  check(got.eventTag === 'Transaction', `B got A's message in a Transaction event (got ${got.eventTag})`);
  const sentMicros = got.row.sent.microsSinceUnixEpoch;
  const nowMicros = BigInt(Date.now()) * 1000n;
  check(
    sentMicros > nowMicros - 120_000_000n && sentMicros <= nowMicros + 5_000_000n,
    `message.sent is a recent timestamp (${got.row.sent.toDate().toISOString()})`
  );
  await waitFor("B sees A's user row with name alice", () => b.user(a.identity)?.name === 'alice');
  check(
    b.userUpdates.some(u => u.new.identity.isEqual(a.identity) && u.old.name === undefined && u.new.name === 'alice'),
    "B's user on-update callback saw A's name change from none to alice"
  );

  // B answers.
  await withTimeout('B set_name("bob")', b.conn.reducers.setName({ name: 'bob' }));
  log('ok: B set_name("bob") reported success');
  await withTimeout('B send_message("Hello from B")', b.conn.reducers.sendMessage({ text: 'Hello from B' }));
  log('ok: B send_message("Hello from B") reported success');
  await waitFor("A's message on-insert callback sees B's message", () => a.sawMessage(b.identity, 'Hello from B'));
  await waitFor("A sees B's user row with name bob", () => a.user(b.identity)?.name === 'bob');

  // Reducer errors reach the caller.
  await a.expectEmptyMessageRejected();
  await b.expectEmptyMessageRejected();
  check(a.conn.db.message.count() === 2n, `A's cache holds 2 messages (has ${a.conn.db.message.count()})`);
  check(b.conn.db.message.count() === 2n, `B's cache holds 2 messages (has ${b.conn.db.message.count()})`);

  // A leaves: B sees it go offline (identity_disconnected).
  const aToken = a.token;
  const aIdentity = a.identity;
  a.conn.disconnect();
  await waitFor('A is disconnected', () => a.disconnected);
  await waitFor('B sees A go offline', () => b.user(aIdentity)?.online === false);

  // A comes back with its token (websocket-token exchange, confirmed reads asked for): same
  // identity, history replayed.
  const a2 = new Client('A (reconnected)');
  await a2.connect(aToken, true, true);
  check(a2.identity.isEqual(aIdentity), 'A reconnects with its token under the same identity');
  check(a2.conn.db.message.count() === 2n, `A's new subscription replays both messages (has ${a2.conn.db.message.count()})`);
  check(a2.user(aIdentity)?.name === 'alice', 'A is still named alice');
  await waitFor('B sees A online again', () => b.user(aIdentity)?.online === true);

  // C: a subscription error, a second query set, and an unsubscribe that hands back the rows.
  const c = await connectBare('C');
  const subError = await withTimeout(
    'C subscribes to a table that does not exist',
    new Promise<string>((resolve, reject) => {
      c.conn
        .subscriptionBuilder()
        .onApplied(() => reject(new Failure('C: SELECT * FROM no_such_table was applied')))
        .onError((ctx: ErrorContext) => resolve(String((ctx.event as any)?.message ?? ctx.event)))
        .subscribe('SELECT * FROM no_such_table');
    })
  );
  check(subError.includes('no_such_table'), `C's onError names the unknown table (${JSON.stringify(subError)})`);
  check(c.conn.isActive, 'C is still connected after a subscription error');
  const deleted: Message[] = [];
  c.conn.db.message.onDelete((_ctx: EventContext, row: Message) => deleted.push(row));
  const messagesSub = await subscribeAndWait(c, 'SELECT * FROM message');
  check(c.conn.db.message.count() === 2n, `C's message subscription delivers both messages (${c.conn.db.message.count()})`);
  await subscribeAndWait(c, 'SELECT * FROM user WHERE online = true');
  const online = [...c.conn.db.user.iter()].filter(u => u.online).length;
  check(online === 3, `C's second query set (SELECT * FROM user WHERE online = true) has A, B and C (${online})`);
  await withTimeout(
    'C unsubscribes from its message query set',
    new Promise<void>(resolve => messagesSub.unsubscribeThen(() => resolve()))
  );
  check(c.conn.db.message.count() === 0n, `after unsubscribing C's cache holds no message (${c.conn.db.message.count()})`);
  check(deleted.length === 2, `C's message on-delete callback saw the 2 dropped rows (${deleted.length})`);
  check([...c.conn.db.user.iter()].length === 3, "C's user query set is untouched by the unsubscribe");
  await withTimeout('B send_message("after unsubscribe")', b.conn.reducers.sendMessage({ text: 'after unsubscribe' }));
  await waitFor('A sees "after unsubscribe"', () => a2.sawMessage(b.identity, 'after unsubscribe'));
  check(c.conn.db.message.count() === 0n, 'C, unsubscribed from message, got no new message');
  c.conn.disconnect();
  await waitFor('C is disconnected', () => c.disconnected);

  // Calls made back to back (one v3 frame carries them all) run in the order they were made.
  const burst = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight'].map(w => `burst ${w}`);
  const burstDone = Promise.all(burst.map(text => b.conn.reducers.sendMessage({ text })));
  await withTimeout('B sends 8 messages back to back', burstDone);
  log('ok: B\'s 8 back-to-back send_message calls all reported success');
  await waitFor('A sees all 8 burst messages', () => burst.every(t => a2.sawMessage(b.identity, t)));
  const seen = a2.messageInserts.map(m => m.row.text).filter(t => t.startsWith('burst '));
  check(
    JSON.stringify(seen) === JSON.stringify(burst),
    `A saw B's back-to-back messages in the order B sent them (${seen.join(', ')})`
  );
  const sent = a2.messageInserts.filter(m => m.row.text.startsWith('burst ')).map(m => m.row.sent.microsSinceUnixEpoch);
  check(
    sent.every((t, i) => i === 0 || sent[i - 1] <= t),
    'their `sent` timestamps (the reducer timestamps) do not go backwards'
  );

  // Connecting to a database that does not exist fails through onConnectError.
  const connectError = await withTimeout(
    'connect to a database that does not exist',
    new Promise<string>((resolve, reject) => {
      DbConnection.builder()
        .withUri(uri)
        .withDatabaseName('no-such-database')
        .onConnect(() => reject(new Failure('connected to no-such-database')))
        .onConnectError((_ctx: ErrorContext, err: Error) => resolve(String(err?.message ?? err)))
        .build();
    })
  );
  log(`ok: connecting to no-such-database reports a connect error (${JSON.stringify(connectError)})`);

  const expected = ONLY_PROTOCOL ?? 'v3.bsatn.spacetimedb';
  for (const s of sockets.slice(0, 4)) {
    check(
      s.ws.protocol === expected,
      `socket offering [${s.offered.join(', ')}] negotiated ${JSON.stringify(s.ws.protocol)} ` +
        `(${s.frames} frames, compression tags {${[...s.tags].join(',')}})`
    );
  }
  check(sockets.length === 5, `the SDK opened 5 sockets (opened ${sockets.length})`);

  const errors = [...a.errors, ...b.errors, ...a2.errors];
  check(errors.length === 0, `no connection errors (${errors.join('; ')})`);
  a2.conn.disconnect();
  b.conn.disconnect();
  await waitFor('both disconnected', () => a2.disconnected && b.disconnected);
  log('PASS: all checks passed');
}

main().then(
  () => process.exit(0),
  e => {
    console.error(`[sdk-client] FAIL: ${e instanceof Failure ? e.message : (e?.stack ?? String(e))}`);
    process.exit(1);
  }
);
