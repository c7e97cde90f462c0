// One thread's messages as the user sees them: live events and history
// pages merged by id, so a resync after a reconnect leaves no gap and no
// duplicate, in server order (ids are time-ordered UUIDv7 strings).

import type { Message } from "./protocol.js";

export class Timeline {
  private byId = new Map<string, Message>();
  /** Own messages by their key `k`. */
  private byKey = new Map<string, string>();

  /** A live `msg`, one's own stored send, or a history page: same treatment. */
  merge(messages: Message[]): void {
    for (const m of messages) {
      this.byId.set(m.id, m);
      if (m.clientMsgId) this.byKey.set(m.clientMsgId, m.id);
    }
  }

  get(id: string): Message | undefined {
    return this.byId.get(id);
  }

  /** Whether one's own message of key `k` is here. */
  hasKey(k: string): boolean {
    return this.byKey.has(k);
  }

  /** The newest id held older than `id` (where to fetch `id` from). */
  newestBefore(id: string): string | undefined {
    let found: string | undefined;
    for (const other of this.byId.keys()) if (other < id && (found === undefined || other > found)) found = other;
    return found;
  }

  /** The newest message id seen, where a resync starts (`after`). */
  newestId(): string | undefined {
    let newest: string | undefined;
    for (const id of this.byId.keys()) if (newest === undefined || id > newest) newest = id;
    return newest;
  }

  /** The oldest message id held, where loading older history starts (`before`). */
  oldestId(): string | undefined {
    let oldest: string | undefined;
    for (const id of this.byId.keys()) if (oldest === undefined || id < oldest) oldest = id;
    return oldest;
  }

  get size(): number {
    return this.byId.size;
  }

  messages(): Message[] {
    return [...this.byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

export interface HistoryPage {
  messages: Message[];
  hasMore: boolean;
}

/** Fetches every message after `after`, page by page, into `timeline`. */
export async function resync(
  timeline: Timeline,
  fetchPage: (after: string | undefined) => Promise<HistoryPage>,
  maxPages = 50,
): Promise<number> {
  let after = timeline.newestId();
  let added = 0;
  for (let page = 0; page < maxPages; page++) {
    const { messages, hasMore } = await fetchPage(after);
    const before = timeline.messages().length;
    timeline.merge(messages);
    added += timeline.messages().length - before;
    if (!hasMore || messages.length === 0) break;
    after = timeline.newestId();
  }
  return added;
}
