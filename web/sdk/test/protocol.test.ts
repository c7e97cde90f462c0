// The SDK's types and codec against the fixtures the Rust protocol crate
// writes (protocol/tests/fixtures.rs): every envelope decodes to the same
// value, every field the types declare is there with the declared kind,
// and what the SDK encodes decodes to what the server's encoding does.
import { describe, expect, it } from "vitest";
import fixtures from "./fixtures/envelopes.json" with { type: "json" };
import { decodeServer, encodeClient } from "../src/codec.js";
import type { Card, ClientEvent, Message, ServerEvent, ThreadState } from "../src/protocol.js";
import { decode } from "@msgpack/msgpack";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

type Kind = "string" | "number" | "boolean" | "string?" | "number?" | "object?" | "array";
function check(value: Record<string, unknown>, shape: Record<string, Kind>, where: string) {
  for (const [key, kind] of Object.entries(shape)) {
    expect(key in value, `${where}.${key} present`).toBe(true);
    const v = value[key];
    const optional = kind.endsWith("?");
    if (optional && v === null) continue;
    const base = kind.replace("?", "");
    if (base === "array") expect(Array.isArray(v), `${where}.${key}`).toBe(true);
    else if (base === "object") expect(typeof v, `${where}.${key}`).toBe("object");
    else expect(typeof v, `${where}.${key}`).toBe(base);
  }
}

const MESSAGE: Record<keyof Message, Kind> = {
  id: "string", thread_id: "string", from: "string", type: "string", content: "string",
  card: "object?", client_msg_id: "string?", created_at: "number",
};
const THREAD: Record<keyof ThreadState, Kind> = {
  thread_id: "string", buyer_id: "string", seller_id: "string", product_id: "string?",
  order_id: "string?", last_message: "object?", last_message_at: "number?",
  unread_buyer: "number", unread_seller: "number",
};
const CARDS: Record<Card["card"], Record<string, Kind>> = {
  product: { product_id: "string", title: "string", price: "number", currency: "string", image_url: "string?" },
  order: { order_id: "string", summary: "string" },
  notice: { code: "string", text: "string" },
  image: {
    width: "number", height: "number", mime: "string", thumb_width: "number", thumb_height: "number",
    image_key: "string", thumb_key: "string", url: "string?", thumb_url: "string?",
  },
};

function checkServer(event: ServerEvent, where: string) {
  const e = event as unknown as Record<string, unknown>;
  switch (event.event) {
    case "message_new": {
      check(event.message as unknown as Record<string, unknown>, MESSAGE, where);
      const card = event.message.card;
      if (card) check(card as unknown as Record<string, unknown>, CARDS[card.card], `${where}.card`);
      break;
    }
    case "message_sent_ack":
      check(e, { client_msg_id: "string", thread_id: "string", message_id: "string?", created_at: "number?", error: "object?" }, where);
      if (event.error) check(event.error as unknown as Record<string, unknown>, { code: "string", message: "string", retry_after_ms: "number?" }, where);
      break;
    case "message_read":
      check(e, { thread_id: "string", user_id: "string", up_to: "string", read_at: "number" }, where);
      break;
    case "typing":
      check(e, { thread_id: "string", user_id: "string", active: "boolean" }, where);
      break;
    case "thread_updated":
      check(event.thread as unknown as Record<string, unknown>, THREAD, where);
      break;
    case "moderation_notice":
      check(e, { code: "string", message: "string", thread_id: "string", client_msg_id: "string", message_id: "string", categories: "array" }, where);
      break;
    case "error":
      check(e, { code: "string", message: "string", retry_after_ms: "number?", topic: "string?", reference: "string?" }, where);
      break;
  }
}

describe("protocol fixtures from the Rust crate", () => {
  it("covers every server event and card", () => {
    const names = fixtures.map((f) => f.name);
    for (const event of ["message_new/image", "message_sent_ack/error", "thread_updated", "moderation_notice", "error", "typing", "message_read"]) {
      expect(names).toContain(`server/${event}`);
    }
  });

  for (const fixture of fixtures) {
    it(fixture.name, () => {
      const bytes = hex(fixture.hex);
      const { v: _v, ...expected } = fixture.json as Record<string, unknown>;
      if (fixture.name.startsWith("server/")) {
        const event = decodeServer(bytes);
        expect(event).not.toBeNull();
        expect(event).toEqual(expected);
        checkServer(event!, fixture.name);
      } else {
        // What the SDK sends decodes to what the server's own encoding
        // does (keys are looked up by name; their order does not matter).
        const event = expected as unknown as ClientEvent;
        expect(decode(encodeClient(event))).toEqual(decode(bytes));
      }
    });
  }

  it("ignores what it does not know", () => {
    expect(decodeServer(new Uint8Array([0xc1]))).toBeNull();
    expect(decodeServer(hex("82a17601a56576656e74a86e65775f7468696e67"))).toBeNull(); // {v:1,event:"new_thing"}
  });
});
