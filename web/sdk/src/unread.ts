// Unread counts that cannot drift: the server's count (thread_updated,
// inbox) always wins; between two server counts, a local estimate (a
// message_new from the other side adds one, reading sets zero) keeps the
// badge responsive. An older server snapshot never overwrites a newer one.

import type { ThreadState } from "./protocol.js";

interface Entry {
  count: number;
  /** last_message_at of the snapshot the count came from. */
  at: number;
  estimated: boolean;
}

export class UnreadCounts {
  private threads = new Map<string, Entry>();
  constructor(private readonly me: string) {}

  /** A server snapshot (thread_updated or an inbox row). */
  server(thread: ThreadState): void {
    const count = thread.buyer_id === this.me ? thread.unread_buyer : thread.unread_seller;
    const at = thread.last_message_at ?? 0;
    const current = this.threads.get(thread.thread_id);
    if (current && !current.estimated && current.at > at) return;
    this.threads.set(thread.thread_id, { count, at, estimated: false });
  }

  /** A new message arrived live (before the server's snapshot). */
  received(threadId: string, from: string, createdAt: number): void {
    if (from === this.me || from === "") return;
    const current = this.threads.get(threadId) ?? { count: 0, at: 0, estimated: true };
    if (createdAt <= current.at) return;
    this.threads.set(threadId, { count: Math.min(current.count + 1, 100), at: createdAt, estimated: true });
  }

  /** The user read the thread (the server will confirm). */
  read(threadId: string): void {
    const current = this.threads.get(threadId);
    this.threads.set(threadId, { count: 0, at: current?.at ?? 0, estimated: true });
  }

  count(threadId: string): number {
    return this.threads.get(threadId)?.count ?? 0;
  }

  /** The badge: "99+" past the server's cap. */
  label(threadId: string): string {
    const n = this.count(threadId);
    return n >= 100 ? "99+" : String(n);
  }

  total(): number {
    let sum = 0;
    for (const e of this.threads.values()) sum += e.count;
    return sum;
  }
}
