// Unread counts that cannot drift. The server states the user's count in
// every `msg` (`n`), in the reader's own `read`, in `thread` events and in
// inbox rows (REST); each statement holds as of a time (the message's or
// the read's, in server ms), and an older statement never overwrites a
// newer one. Reading a thread here sets zero at once; a statement about
// nothing newer than what was read here (a REST page fetched before the
// read landed) cannot bring the badge back.

interface Entry {
  count: number;
  /** Server time of the statement the count comes from. */
  at: number;
  /** Server time of the newest message read here (or sent: sending reads). */
  readTs: number;
}

export class UnreadCounts {
  private threads = new Map<string, Entry>();

  /** The server's count for the user in `threadId`, as of `at` (ms). */
  set(threadId: string, count: number, at: number): void {
    const current = this.threads.get(threadId);
    if (current && at < current.at) return;
    const readTs = current?.readTs ?? 0;
    this.threads.set(threadId, { count: at <= readTs ? 0 : count, at, readTs });
  }

  /** The user read (or wrote in) `threadId` up to a message of time `upToTs`. */
  read(threadId: string, upToTs: number): void {
    const current = this.threads.get(threadId);
    this.threads.set(threadId, { count: 0, at: current?.at ?? 0, readTs: Math.max(current?.readTs ?? 0, upToTs) });
  }

  count(threadId: string): number {
    return this.threads.get(threadId)?.count ?? 0;
  }

  /** The badge: "99+" past the server's cap (100). */
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
