// The wire contract, client protocol v2, as TypeScript types: the
// commands a client publishes to `t/<thread>` and the events the server
// publishes to `u/<me>` (docs/asyncapi.yaml, docs/protocol.md; the Rust
// reference is `protocol/src/v2.rs`). test/protocol.test.ts checks the
// codec against the bytes the Rust crate writes (test/fixtures/v2.json),
// so the two cannot drift.
//
// Keys are the wire's (short); optional keys are absent, never nil, once
// decoded. `Message` below is not a wire type: it is the SDK's model of a
// stored message, built from `msg` events, send answers and REST history.

export type MessageType = "text" | "image" | "system";

/** A card: `c` of a `msg` (system cards, images). Fields as on the wire. */
export type Card =
  | {
      card: "product";
      product_id: string;
      title: string;
      price: number;
      currency: string;
      image_url: string | null;
    }
  | { card: "order"; order_id: string; summary: string }
  | { card: "notice"; code: string; text: string }
  | {
      card: "image";
      width: number;
      height: number;
      mime: string;
      thumb_width: number;
      thumb_height: number;
      image_key: string;
      thumb_key: string;
      url: string | null;
      thumb_url: string | null;
    };

export type ErrorCode =
  | "malformed"
  | "unsupported_version"
  | "unknown_event"
  | "invalid_field"
  | "too_large"
  | "forbidden"
  | "unsupported_type"
  | "not_found"
  | "unavailable"
  | "content_blocked"
  | "rate_limited"
  | "muted"
  | "thread_blocked"
  | "invalid_attachment"
  | "internal";

/** Why a send was refused (`err` of an `ack`, or a refusing PUBACK). */
export interface ErrorBody {
  code: ErrorCode;
  /** In the user's locale: display it, branch on `code`. */
  msg: string;
  /** Milliseconds to wait before retrying (`rate_limited`, `muted`). */
  retry?: number;
}

/** Short form of a thread's last message (`last` of a `thread` event). */
export interface Preview {
  id: string;
  f?: string;
  t?: "image" | "system";
  b?: string;
  ts: number;
}

/** What a client publishes to `t/<thread id>`. */
export type Command =
  | { e: "msg"; k: string; b: string; t?: "image" }
  | { e: "read"; id: string }
  | { e: "typing"; on: boolean };

export interface MsgEvent {
  e: "msg";
  th: string;
  id: string;
  /** Absent for system messages. */
  f?: string;
  /** Absent means text. */
  t?: "image" | "system";
  b?: string;
  c?: Card;
  ts: number;
  /** The sender's key: on the sender's own copies only. */
  k?: string;
  /** The topic's user's unread count in the thread after it; absent = 0. */
  n?: number;
}

export interface AckEvent {
  e: "ack";
  th: string;
  k: string;
  id?: string;
  ts?: number;
  err?: ErrorBody;
}

export interface ReadEvent {
  e: "read";
  th: string;
  /** The reader. */
  u: string;
  /** Their new marker: every message with an id ≤ it is read. */
  id: string;
  ts: number;
  /** Only on the reader's own topic: their unread count after it. */
  n?: number;
}

export interface TypingEvent {
  e: "typing";
  th: string;
  u: string;
  on: boolean;
}

export interface ThreadEvent {
  e: "thread";
  th: string;
  buyer: string;
  seller: string;
  product?: string;
  order?: string;
  last?: Preview;
  n?: number;
}

export interface MaskedEvent {
  e: "masked";
  th: string;
  k: string;
  id: string;
  /** The text as stored and delivered. */
  b: string;
  cats: string[];
  msg: string;
}

export interface ErrorEvent {
  e: "error";
  code: ErrorCode;
  msg: string;
  retry?: number;
  topic?: string;
  ref?: string;
}

/** What the server publishes on `u/<me>`. */
export type ServerEvent = MsgEvent | AckEvent | ReadEvent | TypingEvent | ThreadEvent | MaskedEvent | ErrorEvent;

export const topics = {
  /** Everything the server says to one user; subscribe once, No Local. */
  user: (userId: string) => `u/${userId}`,
  /** Where a participant publishes a thread's commands. */
  thread: (threadId: string) => `t/${threadId}`,
};

/** The SDK's model of a stored message (from `msg`, a send's answer, or REST). */
export interface Message {
  id: string;
  threadId: string;
  /** `""` for system messages. */
  from: string;
  type: MessageType;
  content: string;
  card: Card | null;
  /** The sender's key, on one's own messages. */
  clientMsgId: string | null;
  createdAt: number;
}

/** A `msg` event as a message. */
export function messageOf(event: MsgEvent): Message {
  return {
    id: event.id,
    threadId: event.th,
    from: event.f ?? "",
    type: event.t ?? "text",
    content: event.b ?? "",
    card: event.c ?? null,
    clientMsgId: event.k ?? null,
    createdAt: event.ts,
  };
}

/** The refusals worth resending (the same `k`) after a wait; every other
 * code needs the user (edit, shorten, give up). docs/protocol.md §6.2. */
export const RETRYABLE_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["unavailable", "rate_limited", "muted"]);
