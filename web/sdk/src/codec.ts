// MessagePack envelopes: `{v, event, ...fields}` in one map.
import { decode, encode } from "@msgpack/msgpack";
import { PROTOCOL_VERSION, type ClientEvent, type ServerEvent } from "./protocol.js";

const SERVER_EVENTS = new Set([
  "message_new",
  "message_sent_ack",
  "message_read",
  "typing",
  "thread_updated",
  "moderation_notice",
  "error",
]);

export function encodeClient(event: ClientEvent): Uint8Array {
  return encode({ v: PROTOCOL_VERSION, ...event });
}

/** A server event, or `null` for anything this SDK does not know (newer
 * servers add events; clients ignore what they do not understand). */
export function decodeServer(bytes: Uint8Array): ServerEvent | null {
  let value: unknown;
  try {
    value = decode(bytes);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const map = value as Record<string, unknown>;
  if (typeof map.v !== "number" || typeof map.event !== "string") return null;
  if (!SERVER_EVENTS.has(map.event)) return null;
  const { v: _version, ...event } = map;
  return event as unknown as ServerEvent;
}
