// The REST facade's JSON (camelCase) as the protocol's types (snake_case,
// as on MQTT), so the rest of the SDK sees one shape.

import type { Card, Message, MessageType, ThreadState } from "./protocol.js";

export interface RestMessage {
  id: string;
  threadId: string;
  from: string;
  type: MessageType;
  content: string;
  card: Record<string, unknown> | null;
  clientMsgId: string | null;
  createdAt: number;
}

export interface RestThread {
  id: string;
  buyerId: string;
  sellerId: string;
  productId: string | null;
  orderId: string | null;
  otherUserId: string;
  otherDisplayName: string | null;
  otherOnline: boolean;
  otherLastSeen: number | null;
  lastMessage: { messageId: string; from: string; type: MessageType; text: string; createdAt: number } | null;
  lastMessageAt: number | null;
  unreadCount: number;
  unreadBuyer: number;
  unreadSeller: number;
  createdAt: number;
}

const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function cardFromRest(card: Record<string, unknown> | null): Card | null {
  if (!card) return null;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(card)) out[snake(k)] = v;
  return out as unknown as Card;
}

export function messageFromRest(m: RestMessage): Message {
  return {
    id: m.id,
    thread_id: m.threadId,
    from: m.from,
    type: m.type,
    content: m.content,
    card: cardFromRest(m.card),
    client_msg_id: m.clientMsgId ?? null,
    created_at: m.createdAt,
  };
}

export function threadStateFromRest(t: RestThread): ThreadState {
  return {
    thread_id: t.id,
    buyer_id: t.buyerId,
    seller_id: t.sellerId,
    product_id: t.productId,
    order_id: t.orderId,
    last_message: t.lastMessage
      ? {
          message_id: t.lastMessage.messageId,
          from: t.lastMessage.from,
          type: t.lastMessage.type,
          text: t.lastMessage.text,
          created_at: t.lastMessage.createdAt,
        }
      : null,
    last_message_at: t.lastMessageAt,
    unread_buyer: t.unreadBuyer,
    unread_seller: t.unreadSeller,
  };
}
