export * from "./protocol.js";
export * from "./codec.js";
export * from "./backoff.js";
export * from "./outbox.js";
export * from "./timeline.js";
export * from "./unread.js";
export * from "./rest.js";
export * from "./client.js";
