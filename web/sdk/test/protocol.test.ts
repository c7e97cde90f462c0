// The SDK's v2 codec against the bytes the Rust protocol crate writes
// (protocol/tests/fixtures.rs → test/fixtures/v2.json): every command the
// SDK encodes is byte for byte the server's own encoding, every event
// decodes to the same value with the kinds the types declare, and what is
// not a v2 event decodes to nothing. Also the PUBACK's answer.
import { describe, expect, it } from "vitest";
import { decode, encode } from "@msgpack/msgpack";
import fixtures from "./fixtures/v2.json" with { type: "json" };
import { decodeEvent, encodeCommand, msgCommand, pubackAnswer } from "../src/codec.js";
import { messageOf, topics, type Card, type Command, type ServerEvent } from "../src/protocol.js";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const fixture = (name: string) => {
  const f = fixtures.find((x) => x.name === name);
  if (!f) throw new Error(`no fixture ${name}`);
  return f;
};

type Kind = "str" | "int" | "bool" | "map" | "strs";
const kindOf = (v: unknown): Kind | "other" =>
  typeof v === "string" ? "str" : Number.isInteger(v) ? "int" : typeof v === "boolean" ? "bool" : Array.isArray(v) ? "strs" : typeof v === "object" && v ? "map" : "other";

/** Every key an event may carry, with its kind; `?` marks the optional ones. */
const SHAPES: Record<ServerEvent["e"], Record<string, `${Kind}` | `${Kind}?`>> = {
  msg: { th: "str", id: "str", ts: "int", f: "str?", t: "str?", b: "str?", c: "map?", k: "str?", n: "int?" },
  ack: { th: "str", k: "str", id: "str?", ts: "int?", err: "map?" },
  read: { th: "str", u: "str", id: "str", ts: "int", n: "int?" },
  typing: { th: "str", u: "str", on: "bool" },
  thread: { th: "str", buyer: "str", seller: "str", product: "str?", order: "str?", last: "map?", n: "int?" },
  masked: { th: "str", k: "str", id: "str", b: "str", cats: "strs", msg: "str" },
  error: { code: "str", msg: "str", retry: "int?", topic: "str?", ref: "str?" },
};
const CARDS: Record<Card["card"], Record<string, Kind | "str|nil">> = {
  product: { product_id: "str", title: "str", price: "int", currency: "str", image_url: "str|nil" },
  order: { order_id: "str", summary: "str" },
  notice: { code: "str", text: "str" },
  image: { width: "int", height: "int", mime: "str", thumb_width: "int", thumb_height: "int", image_key: "str", thumb_key: "str", url: "str|nil", thumb_url: "str|nil" },
};

function checkShape(event: ServerEvent, where: string) {
  const shape = SHAPES[event.e];
  const map = event as unknown as Record<string, unknown>;
  for (const key of Object.keys(map)) expect(key === "e" || key in shape, `${where}: unexpected key ${key}`).toBe(true);
  for (const [key, spec] of Object.entries(shape)) {
    const optional = spec.endsWith("?");
    if (!(key in map)) {
      expect(optional, `${where}.${key} present`).toBe(true);
      continue;
    }
    expect(map[key], `${where}.${key} is never nil once decoded`).not.toBeNull();
    expect(kindOf(map[key]), `${where}.${key}`).toBe(spec.replace("?", ""));
  }
  if (event.e === "msg" && event.c) {
    for (const [key, spec] of Object.entries(CARDS[event.c.card])) {
      const v = (event.c as unknown as Record<string, unknown>)[key];
      if (spec === "str|nil") expect(v === null || typeof v === "string", `${where}.c.${key}`).toBe(true);
      else expect(kindOf(v), `${where}.c.${key}`).toBe(spec);
    }
  }
}

/** The command a fixture shows, built the way the client builds it. */
function build(json: Record<string, unknown>): Command {
  switch (json.e) {
    case "msg":
      return msgCommand(json.k as string, json.b as string, json.t === "image" ? "image" : "text");
    case "read":
      return { e: "read", id: json.id as string };
    case "typing":
      return { e: "typing", on: json.on as boolean };
  }
  throw new Error(`not a command: ${JSON.stringify(json)}`);
}

describe("v2 fixtures from the Rust crate", () => {
  it("cover every command and every event the server sends, and every card", () => {
    const client = fixtures.filter((f) => f.name.startsWith("client/")).map((f) => (f.json as { e: string }).e);
    const server = fixtures.filter((f) => f.name.startsWith("server/")).map((f) => (f.json as { e: string }).e);
    expect(new Set(client)).toEqual(new Set(["msg", "read", "typing"]));
    expect(new Set(server)).toEqual(new Set(Object.keys(SHAPES)));
    const cards = fixtures.map((f) => (f.json as { c?: { card: string } }).c?.card).filter(Boolean);
    expect(new Set(cards)).toEqual(new Set(Object.keys(CARDS)));
    expect(fixtures).toHaveLength(19);
  });

  for (const f of fixtures.filter((x) => x.name.startsWith("client/"))) {
    it(`${f.name}: the SDK writes the server's bytes exactly`, () => {
      const json = f.json as Record<string, unknown>;
      expect(toHex(encodeCommand(build(json)))).toBe(f.hex);
      // Whatever the key order of the object handed in (the fixture's is
      // alphabetical), the bytes are the reference's.
      expect(toHex(encodeCommand(json as unknown as Command))).toBe(f.hex);
      expect(decode(hex(f.hex))).toEqual(json);
    });
  }

  for (const f of fixtures.filter((x) => x.name.startsWith("server/"))) {
    it(`${f.name}: decodes to the server's value`, () => {
      const event = decodeEvent(hex(f.hex));
      expect(event).not.toBeNull();
      expect(event).toEqual(f.json);
      checkShape(event!, f.name);
    });
  }
});

describe("decoding", () => {
  it("reads a msg into the SDK's message", () => {
    const own = decodeEvent(hex(fixture("server/msg/own").hex));
    expect(own?.e).toBe("msg");
    if (own?.e !== "msg") return;
    expect(messageOf(own)).toEqual({
      id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
      threadId: "t_01",
      from: "buyer-1",
      type: "text",
      content: "Shop ơi còn hàng không?",
      card: null,
      clientMsgId: "c-1",
      createdAt: 1795717800000,
    });
    const system = decodeEvent(hex(fixture("server/msg/product").hex));
    if (system?.e !== "msg") throw new Error("not a msg");
    expect(messageOf(system)).toMatchObject({ from: "", type: "system", content: "", clientMsgId: null, card: { card: "product", title: "Áo thun", image_url: null } });
  });

  it("takes nil as absent, accepts every integer width, ignores unknown keys", () => {
    const wide = encode({ e: "msg", th: "t", id: "m", f: null, k: null, ts: 5, n: null, extra: [1, 2] });
    expect(decodeEvent(wide)).toEqual({ e: "msg", th: "t", id: "m", ts: 5, extra: [1, 2] });
    // ts as uint8, uint16, uint32, uint64, int64: the same value.
    const read = (ts: string) => hex(`85a165a472656164a27468a174a175a173a26964a16da27473${ts}`);
    for (const ts of ["05", "cd0005", "ce00000005", "cf0000000000000005", "d30000000000000005"]) {
      expect(decodeEvent(read(ts))).toEqual({ e: "read", th: "t", u: "s", id: "m", ts: 5 });
    }
    // A card without its nullable fields gets them as nil.
    const card = decodeEvent(encode({ e: "msg", th: "t", id: "m", ts: 1, t: "system", c: { card: "product", product_id: "p", title: "x", price: 1, currency: "VND" } }));
    expect(card).toMatchObject({ c: { image_url: null } });
  });

  it("gives nothing for what is not a v2 event", () => {
    const nothing = [
      new Uint8Array([0xc1]), // not MessagePack
      new Uint8Array([0x80, 0x01]), // a map, then a byte more
      encode(["msg"]), // not a map
      encode("msg"),
      encode({ th: "t", id: "m", ts: 1 }), // no `e`
      encode({ e: "new_thing", th: "t" }), // an event from a newer server
      encode({ e: "msg", th: "t", ts: 1 }), // no id
      encode({ e: "msg", th: "t", id: "m", ts: "1" }), // ts not an int
      encode({ e: "msg", th: "t", id: "m", ts: 1.5 }),
      encode({ e: "msg", th: "t", id: "m", ts: 1, c: "card" }),
      encode({ e: "msg", th: "t", id: "m", ts: 1, c: { title: "no kind" } }),
      encode({ e: "ack", th: "t", k: "c", err: { code: "rate_limited" } }), // err without msg
      encode({ e: "read", th: "t", u: "s", id: "m" }), // no ts
      encode({ e: "typing", th: "t", u: "s", on: 1 }),
      encode({ e: "thread", th: "t", buyer: "b", seller: "s", last: { id: "m" } }),
      encode({ e: "masked", th: "t", k: "c", id: "m", b: "x", cats: [1], msg: "x" }),
      encode({ e: "error", code: "forbidden" }),
      // The v1 envelope of a typing event: no `e`.
      encode({ v: 1, event: "typing", thread_id: "t", user_id: "s", active: true }),
    ];
    for (const bytes of nothing) expect(decodeEvent(bytes), toHex(bytes)).toBeNull();
  });
});

describe("the PUBACK's answer", () => {
  it("stored: User Properties id and ts", () => {
    expect(pubackAnswer({ reasonCode: 0, properties: { userProperties: { id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", ts: "1795717800000" } } })).toEqual({
      kind: "stored",
      id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
      ts: 1795717800000,
    });
    // mqtt-packet gives a repeated property as an array.
    expect(pubackAnswer({ properties: { userProperties: { id: ["m1", "m2"], ts: "7" } } })).toEqual({ kind: "stored", id: "m1", ts: 7 });
  });

  it("refused: the code property wins over the reason code; retry and reason string", () => {
    expect(pubackAnswer({ reasonCode: 0x97, properties: { reasonString: "Bạn gửi quá nhanh", userProperties: { code: "rate_limited", retry: "850" } } })).toEqual({
      kind: "refused",
      error: { code: "rate_limited", msg: "Bạn gửi quá nhanh", retry: 850 },
    });
    expect(pubackAnswer({ reasonCode: 0x87, properties: { reasonString: "x", userProperties: { code: "content_blocked" } } })).toEqual({
      kind: "refused",
      error: { code: "content_blocked", msg: "x" },
    });
    expect(pubackAnswer({ reasonCode: 0x99, properties: { userProperties: { code: "too_large" } } })).toEqual({ kind: "refused", error: { code: "too_large", msg: "" } });
    // Beyond the refusal budget the code may come alone; without it, the class.
    expect(pubackAnswer({ reasonCode: 0x97 })).toEqual({ kind: "refused", error: { code: "rate_limited", msg: "" } });
    expect(pubackAnswer({ reasonCode: 0x80 })).toEqual({ kind: "refused", error: { code: "unavailable", msg: "" } });
  });

  it("neither: handed over (a workers deployment), the answer comes on u/<me>", () => {
    expect(pubackAnswer({})).toEqual({ kind: "handed_over" });
    expect(pubackAnswer({ reasonCode: 0x10 })).toEqual({ kind: "handed_over" });
    expect(pubackAnswer({ reasonCode: 0, properties: { userProperties: { id: "m1" } } })).toEqual({ kind: "handed_over" });
  });
});

describe("topics", () => {
  it("are v2's: u/<user>, t/<thread>", () => {
    expect(topics.user("b42")).toBe("u/b42");
    expect(topics.thread("t_01")).toBe("t/t_01");
  });
});
