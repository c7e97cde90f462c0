// The wire contract, as TypeScript types. Mirrors `protocol/src/lib.rs`;
// test/protocol.test.ts checks these against fixtures the Rust crate
// generates (test/fixtures/envelopes.json), so the two cannot drift.

export const PROTOCOL_VERSION = 1;

export type MessageType = "text" | "image" | "system";

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

export interface Message {
  id: string;
  thread_id: string;
  from: string;
  type: MessageType;
  content: string;
  card: Card | null;
  client_msg_id: string | null;
  created_at: number;
}

export interface MessagePreview {
  message_id: string;
  from: string;
  type: MessageType;
  text: string;
  created_at: number;
}

export interface ThreadState {
  thread_id: string;
  buyer_id: string;
  seller_id: string;
  product_id: string | null;
  order_id: string | null;
  last_message: MessagePreview | null;
  last_message_at: number | null;
  unread_buyer: number;
  unread_seller: number;
}

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

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  retry_after_ms: number | null;
}

export type ClientEvent =
  | { event: "send_message"; client_msg_id: string; type: MessageType; content: string }
  | { event: "mark_read"; up_to: string }
  | { event: "typing"; active: boolean };

export type ServerEvent =
  | { event: "message_new"; message: Message }
  | {
      event: "message_sent_ack";
      client_msg_id: string;
      thread_id: string;
      message_id: string | null;
      created_at: number | null;
      error: ErrorBody | null;
    }
  | { event: "message_read"; thread_id: string; user_id: string; up_to: string; read_at: number }
  | { event: "typing"; thread_id: string; user_id: string; active: boolean }
  | { event: "thread_updated"; thread: ThreadState }
  | {
      event: "moderation_notice";
      code: string;
      message: string;
      thread_id: string;
      client_msg_id: string;
      message_id: string;
      categories: string[];
    }
  | ({ event: "error"; topic: string | null; reference: string | null } & ErrorBody);

export const topics = {
  user: (userId: string) => `user/${userId}`,
  thread: (threadId: string) => `thread/${threadId}`,
  threadInbound: (threadId: string) => `thread/${threadId}/in`,
};

/** Error codes after which resending the same message cannot succeed. */
export const FINAL_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "malformed",
  "unsupported_version",
  "unknown_event",
  "invalid_field",
  "too_large",
  "forbidden",
  "unsupported_type",
  "not_found",
  "content_blocked",
  "thread_blocked",
  "invalid_attachment",
  "internal",
]);
