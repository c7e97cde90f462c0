// Reconnect delays: exponential with full jitter, capped, so that a
// thousand phones coming back after an outage do not all retry at once.

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** 0..1 → a delay; Math.random by default (tests pass their own). */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  constructor(private readonly options: BackoffOptions = { initialMs: 500, maxMs: 30_000 }) {}

  /** The delay before the next attempt. */
  next(): number {
    const ceiling = Math.min(this.options.maxMs, this.options.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    const random = this.options.random ?? Math.random;
    return Math.round(ceiling / 2 + (random() * ceiling) / 2);
  }

  /** After a successful connection. */
  reset(): void {
    this.attempt = 0;
  }
}
