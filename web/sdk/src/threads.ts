// The inbox (the user's threads, newest activity first) as the SDK keeps
// it: rows from REST (`GET /chat/threads`: names, presence, counts), then
// moved along by what arrives live, as protocol v2 has no per-message
// thread event: a `msg` (or one's own send) sets the row's last message
// and activity, a `thread` event its product/order context. A thread the
// list does not know yet is reported, for the client to fetch the inbox
// (the row's other party's name comes only from REST). Pure.

import type { Message, MessageType, ThreadEvent } from "./protocol.js";
import type { RestThread } from "./rest.js";

/** As the server cuts previews: 100 characters (code points), then `…`. */
export const PREVIEW_CHARS = 100;

export function previewText(text: string): string {
  const chars = [...text];
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS).join("")}…` : text;
}

/** A message as an inbox row's `lastMessage`, as the server previews it. */
export function previewOf(m: Message): NonNullable<RestThread["lastMessage"]> {
  let text: string;
  if (m.type === "image") text = "[image]";
  else if (m.card?.card === "product") text = m.card.title;
  else if (m.card?.card === "order") text = m.card.summary;
  else if (m.card?.card === "notice") text = m.card.text;
  else text = m.content;
  return { messageId: m.id, from: m.from, type: m.type, text: previewText(text), createdAt: m.createdAt };
}

const activity = (t: RestThread) => t.lastMessageAt ?? t.createdAt;

export class ThreadList {
  private rows = new Map<string, RestThread>();

  /** Rows of an inbox page. A row replaces the one held, except for a last
   * message newer than the page's (the page was read before it arrived). */
  page(threads: RestThread[]): void {
    for (const fresh of threads) {
      const held = this.rows.get(fresh.id);
      const row = { ...fresh };
      if (held?.lastMessage && (fresh.lastMessageAt ?? 0) < held.lastMessage.createdAt) {
        row.lastMessage = held.lastMessage;
        row.lastMessageAt = held.lastMessageAt;
      }
      this.rows.set(row.id, row);
    }
  }

  /** A stored message (live, or one's own): false when the thread is unknown. */
  message(m: Message): boolean {
    const row = this.rows.get(m.threadId);
    if (!row) return false;
    if (!row.lastMessage || row.lastMessage.messageId <= m.id) {
      row.lastMessage = previewOf(m);
      row.lastMessageAt = m.createdAt;
    }
    return true;
  }

  /** A `thread` event: the row's context and last message. False when unknown. */
  thread(event: ThreadEvent): boolean {
    const row = this.rows.get(event.th);
    if (!row) return false;
    row.productId = event.product ?? null;
    row.orderId = event.order ?? null;
    const last = event.last;
    if (last && (!row.lastMessage || row.lastMessage.messageId <= last.id)) {
      row.lastMessage = { messageId: last.id, from: last.f ?? "", type: (last.t ?? "text") as MessageType, text: last.b ?? "", createdAt: last.ts };
      row.lastMessageAt = last.ts;
    }
    return true;
  }

  get(threadId: string): RestThread | undefined {
    return this.rows.get(threadId);
  }

  has(threadId: string): boolean {
    return this.rows.has(threadId);
  }

  /** Newest activity first. */
  list(): RestThread[] {
    return [...this.rows.values()].sort((a, b) => activity(b) - activity(a));
  }

  get size(): number {
    return this.rows.size;
  }
}
