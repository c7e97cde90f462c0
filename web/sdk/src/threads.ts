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

type Preview = NonNullable<RestThread["lastMessage"]>;

/** Threads not yet listed whose newest live message is kept for the page
 * that will list them; past this many the oldest is forgotten. */
export const EARLY_KEPT = 64;

export class ThreadList {
  private rows = new Map<string, RestThread>();
  /** The newest live message of each thread the list did not know when it
   * arrived: the inbox page fetched because of it may have been read
   * before the message was stored, and must not show an older one. */
  private early = new Map<string, Preview>();

  /** Rows of an inbox page. A row replaces the one held, except for a last
   * message newer than the page's (the page was read before it arrived). */
  page(threads: RestThread[]): void {
    for (const fresh of threads) {
      const held = this.rows.get(fresh.id)?.lastMessage ?? this.early.get(fresh.id);
      this.early.delete(fresh.id);
      const row = { ...fresh };
      if (held && (fresh.lastMessageAt ?? 0) < held.createdAt) {
        row.lastMessage = held;
        row.lastMessageAt = held.createdAt;
      }
      this.rows.set(row.id, row);
    }
  }

  /** A stored message (live, or one's own): false when the thread is unknown. */
  message(m: Message): boolean {
    return this.last(m.threadId, previewOf(m));
  }

  /** Moves `threadId`'s last message to `preview` if it is newer. */
  private last(threadId: string, preview: Preview): boolean {
    const row = this.rows.get(threadId);
    if (!row) {
      const kept = this.early.get(threadId);
      if (!kept || kept.messageId <= preview.messageId) {
        this.early.delete(threadId);
        this.early.set(threadId, preview);
        if (this.early.size > EARLY_KEPT) this.early.delete(this.early.keys().next().value!);
      }
      return false;
    }
    if (!row.lastMessage || row.lastMessage.messageId <= preview.messageId) {
      row.lastMessage = preview;
      row.lastMessageAt = preview.createdAt;
    }
    return true;
  }

  /** A `thread` event: the row's context and last message. False when unknown. */
  thread(event: ThreadEvent): boolean {
    const row = this.rows.get(event.th);
    if (row) {
      row.productId = event.product ?? null;
      row.orderId = event.order ?? null;
    }
    const last = event.last;
    if (!last) return row !== undefined;
    return this.last(event.th, { messageId: last.id, from: last.f ?? "", type: (last.t ?? "text") as MessageType, text: last.b ?? "", createdAt: last.ts });
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
