// Messages not yet answered. Each keeps its key `k` for life, so a resend
// after a timeout or a reconnect is a retry the server deduplicates (same
// message id), never a second message. Pure: the client feeds it the
// answers (PUBACK, own copy, `ack`) and asks what to send.

import { RETRYABLE_ERRORS, type ErrorBody } from "./protocol.js";

/** `pending`: to send, or sent and waiting for its answer; `stored`: the
 * server has it, the timeline does not yet (an image whose card comes from
 * history); `failed`: refused for good, until the user dismisses it. */
export type OutboxState = "pending" | "stored" | "failed";

export interface OutboxEntry {
  /** The `k` of the `msg`. */
  clientMsgId: string;
  threadId: string;
  type: "text" | "image";
  /** The text, or the image's upload id. */
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

  get(clientMsgId: string): OutboxEntry | undefined {
    return this.entries.get(clientMsgId);
  }

  /** Entries to (re)send now, oldest first. */
  due(now: number): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.state === "pending" && e.notBefore <= now);
  }

  /** Called when an entry was published; it waits for its answer. */
  sent(clientMsgId: string, now: number, answerTimeoutMs = 10_000): void {
    const e = this.entries.get(clientMsgId);
    if (!e) return;
    e.attempts += 1;
    // If no answer comes (connection lost), it becomes due again.
    e.notBefore = now + answerTimeoutMs;
  }

  /** Stored as `messageId`: the entry leaves the outbox, unless `keep` (it
   * stays as `stored` until the timeline has the message). Returns the entry
   * when it was this outbox's (an answer to another device's key is not). */
  stored(clientMsgId: string, messageId: string, keep = false): OutboxEntry | undefined {
    const e = this.entries.get(clientMsgId);
    if (!e || e.state === "stored") return undefined;
    e.state = "stored";
    e.messageId = messageId;
    delete e.error;
    if (!keep) this.entries.delete(clientMsgId);
    return e;
  }

  /** Refused: for good, or (unavailable, rate_limited, muted) to retry
   * later with the same key. Returns the entry when it was this outbox's. */
  refused(clientMsgId: string, error: ErrorBody, now: number): OutboxEntry | undefined {
    const e = this.entries.get(clientMsgId);
    if (!e || e.state !== "pending") return undefined;
    e.error = error;
    if (!RETRYABLE_ERRORS.has(error.code)) {
      e.state = "failed";
      return e;
    }
    const wait = error.retry ?? Math.min(30_000, 1_000 * 2 ** Math.min(e.attempts, 5));
    e.notBefore = now + wait;
    return e;
  }

  /** After a reconnect everything pending goes again at once (same keys). */
  reconnected(): void {
    for (const e of this.entries.values()) {
      if (e.state === "pending") e.notBefore = 0;
    }
  }

  /** A thread's entries not yet in its timeline (all states), oldest first. */
  ofThread(threadId: string): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.threadId === threadId);
  }

  /** Forgets an entry (dismissed by the user, or its message arrived). */
  discard(clientMsgId: string): void {
    this.entries.delete(clientMsgId);
  }

  /** Everything not yet answered, to keep across a page reload. */
  snapshot(): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.state !== "stored").map((e) => ({ ...e }));
  }

  /** Entries saved by `snapshot`: pending ones go again at once, same keys. */
  restore(entries: OutboxEntry[]): void {
    for (const e of entries) {
      if (this.entries.has(e.clientMsgId) || (e.state !== "pending" && e.state !== "failed")) continue;
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
