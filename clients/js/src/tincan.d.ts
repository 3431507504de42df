// Types for tincan-client (src/tincan.js), written by hand.

/** A room name: ^[A-Za-z0-9_-]{1,64}$ */
export type RoomName = string;

/** A message as sent: a JSON object with a `type` (`id` and `from` are set by the server). */
export interface OutgoingMessage {
  type: string;
  [key: string]: unknown;
}

/** A message from another member, as delivered to onMessage. */
export interface Message {
  /** the message id: increasing within the room */
  id: number;
  /** the sender's member id */
  from: string;
  type: string;
  /** the recipient, for a message sent to one member */
  to?: string;
  [key: string]: unknown;
}

/** A server event about another member, as delivered to onPresence. */
export type PresenceEvent =
  | { id: number; type: 'peer-joined'; peer: string; resumed?: boolean; identity?: string; name?: string; metadata?: unknown; [key: string]: unknown }
  | { id: number; type: 'peer-left'; peer: string; reason?: string; [key: string]: unknown };

/** What RTCPeerConnection takes as `iceServers`. */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

/** Another member with what the application's join token says of it. */
export interface Member {
  client_id: string;
  identity?: string;
  name?: string;
  metadata?: unknown;
}

export type Transport = 'sse' | 'poll';

/** Why a client stopped for good. */
export type CloseReason = 'closed' | 'left' | 'unauthorized' | 'forbidden' | 'kicked' | 'room-closed';

/** Where the member's token and cursor are kept (sessionStorage in a browser). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The part of a fetch Response the client reads. */
export interface ResponseLike {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: { get(name: string): string | null };
  readonly body: unknown;
  json(): Promise<any>;
  text(): Promise<string>;
}

/** A fetch: globalThis.fetch, or one that wraps it. */
export type FetchLike = (input: string, init?: any) => Promise<ResponseLike>;

export interface JoinOptions {
  /** URL prefix of the server ("" = this page's origin; required in Node.js) */
  base?: string;
  /** room password */
  password?: string;
  /** the application's join token (a JWT), for a server started with -auth jwt */
  token?: string;
  /**
   * Gives the join token (a JWT) for a server started with -auth jwt, instead of `token`:
   * called before each join request, so that the app can fetch a fresh short-lived token
   * from its backend each time. If it throws or gives no token, join rejects with a
   * TincanError of code "get_token_failed" whose `cause` is what it threw.
   */
  getToken?: () => string | Promise<string>;
  /** 'auto' (default): SSE, switching to long-poll when the stream does not work */
  transport?: 'auto' | 'sse' | 'poll';
  /** ms to wait for the SSE `ready` frame (5000) */
  readyTimeout?: number;
  /** after falling back to long-poll, ms before the stream is tried again (60000, doubling up to 16×) */
  sseRetry?: number;
  /** on SSE, ms between acknowledgements of what arrived (30000; 0: never) */
  ackEvery?: number;
  /** long-poll wait in seconds (25) */
  pollWait?: number;
  /** where the token is kept: sessionStorage by default; null (as in Node.js) keeps it nowhere */
  storage?: StorageLike | null;
  /** start receiving at once (true); with false call client.start() */
  start?: boolean;
  /** the fetch every request goes through (globalThis.fetch) */
  fetch?: FetchLike;
  onMessage?: (msg: Message) => void;
  onPresence?: (event: PresenceEvent) => void;
  onTransport?: (name: Transport, reason: string | null) => void;
  onReachable?: (reachable: boolean, reason: string | null) => void;
  onClose?: (info: { reason: CloseReason }) => void;
}

export interface ClientStats {
  sseConnects: number;
  sseErrors: number;
  polls: number;
  gatewayTimeouts: number;
  duplicates: number;
  postRetries: number;
  batches: number;
  batchFallback: string | null;
  acks: number;
  acked: number;
  fallback: string | null;
}

/** An error answered by the server (problem+json) or a network failure. */
export class TincanError extends Error {
  constructor(status: number, problem?: Problem | null, message?: string);
  readonly name: 'TincanError';
  /** HTTP status, 0 for a network failure */
  status: number;
  /** the problem's code (e.g. "room_full"), or "network" / "http_<status>", or "get_token_failed" */
  code: string;
  problem: Problem | null;
}

/** An application/problem+json body. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  [key: string]: unknown;
}

export class Client {
  private constructor(room: string, opts: JoinOptions);
  readonly room: string;
  readonly base: string;
  /** this member's id */
  id: string;
  /** its secret */
  token: string;
  /** true when others were there first: this member makes the offer */
  initiator: boolean;
  /** this join resumed a stored member */
  resumed: boolean;
  /** the other members' ids, in join order */
  peers: string[];
  members: Member[];
  identity: string | null;
  name: string | null;
  capacity: number;
  iceServers: IceServer[];
  /** the receive transport, null before the first answer */
  transport: Transport | null;
  /** the highest message id delivered */
  cursor: number;
  closed: boolean;
  /** false while the server does not answer */
  reachable: boolean;
  /** the current long-poll wait in seconds */
  pollWait: number;
  stats: ClientStats;
  onmessage: ((msg: Message) => void) | null;
  onpresence: ((event: PresenceEvent) => void) | null;
  ontransport: ((name: Transport, reason: string | null) => void) | null;
  onreachable: ((reachable: boolean, reason: string | null) => void) | null;
  onclose: ((info: { reason: CloseReason }) => void) | null;
  /** start receiving (only with start: false) */
  start(): void;
  /** send to every other member, or to one; resolves to the message id */
  send(msg: OutgoingMessage, to?: string): Promise<number>;
  /** fresh ICE servers (TURN credentials expire) */
  fetchIceServers(): Promise<IceServer[]>;
  /** stop receiving, keep the seat */
  close(): void;
  /** leave the room for good */
  leave(): Promise<void>;
}

/** Join a room and start receiving; rejects with TincanError. */
export function join(room: RoomName, opts?: JoinOptions): Promise<Client>;
