// Messages not yet acknowledged. Each keeps its client_msg_id for life,
// so a resend after a reconnect is a retry the server deduplicates, never
// a second message. Pure: the client feeds it acks and asks what to send.

import { FINAL_ERRORS, type ErrorBody } from "./protocol.js";

export type OutboxState = "pending" | "sent" | "failed";

export interface OutboxEntry {
  clientMsgId: string;
  threadId: string;
  type: "text" | "image";
  content: string;
  state: OutboxState;
  attempts: number;
  /** Not before this time (ms) may it be sent again. */
  notBefore: number;
  messageId?: string;
  error?: ErrorBody;
}

export class Outbox {
  private entries = new Map<string, OutboxEntry>();

  add(entry: Pick<OutboxEntry, "clientMsgId" | "threadId" | "type" | "content">): OutboxEntry {
    const existing = this.entries.get(entry.clientMsgId);
    if (existing) return existing;
    const created: OutboxEntry = { ...entry, state: "pending", attempts: 0, notBefore: 0 };
    this.entries.set(entry.clientMsgId, created);
    return created;
  }

  /** Entries to (re)send now, oldest first. */
  due(now: number): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.state === "pending" && e.notBefore <= now);
  }

  /** Called when an entry was published; it waits for its ack. */
  sent(clientMsgId: string, now: number, ackTimeoutMs = 10_000): void {
    const e = this.entries.get(clientMsgId);
    if (!e) return;
    e.attempts += 1;
    // If no ack comes (connection lost), it becomes due again.
    e.notBefore = now + ackTimeoutMs;
  }

  /** An ack: stored (done) or refused (final, or retry later). */
  acked(clientMsgId: string, messageId: string | null, error: ErrorBody | null, now: number): void {
    const e = this.entries.get(clientMsgId);
    if (!e) return;
    if (messageId) {
      e.state = "sent";
      e.messageId = messageId;
      this.entries.delete(clientMsgId);
      return;
    }
    if (error && FINAL_ERRORS.has(error.code)) {
      e.state = "failed";
      e.error = error;
      return;
    }
    // unavailable, rate_limited, muted: try again later, same id.
    const wait = error?.retry_after_ms ?? Math.min(30_000, 1_000 * 2 ** Math.min(e.attempts, 5));
    e.notBefore = now + wait;
  }

  /** After a reconnect everything pending goes again at once (same ids). */
  reconnected(): void {
    for (const e of this.entries.values()) {
      if (e.state === "pending") e.notBefore = 0;
    }
  }

  /** A thread's unacknowledged entries (pending and failed), oldest first. */
  ofThread(threadId: string): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.threadId === threadId);
  }

  /** Forgets a failed entry (the user dismissed it). */
  discard(clientMsgId: string): void {
    this.entries.delete(clientMsgId);
  }

  /** Everything not yet acknowledged, to keep across a page reload. */
  snapshot(): OutboxEntry[] {
    return [...this.entries.values()].map((e) => ({ ...e }));
  }

  /** Entries saved by `snapshot`: pending ones go again at once, same ids. */
  restore(entries: OutboxEntry[]): void {
    for (const e of entries) {
      if (this.entries.has(e.clientMsgId)) continue;
      this.entries.set(e.clientMsgId, { ...e, notBefore: 0 });
    }
  }

  failed(): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.state === "failed");
  }

  get size(): number {
    return this.entries.size;
  }
}
