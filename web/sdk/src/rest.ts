// The REST facade's JSON (camelCase): history pages become the SDK's
// messages (cards with the wire's snake_case keys, as in `msg` events), so
// the rest of the SDK sees one shape.

import type { Card, Message, MessageType } from "./protocol.js";

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
  otherAvatarUrl?: string | null;
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
    threadId: m.threadId,
    from: m.from,
    type: m.type,
    content: m.content,
    card: cardFromRest(m.card),
    clientMsgId: m.clientMsgId ?? null,
    createdAt: m.createdAt,
  };
}
