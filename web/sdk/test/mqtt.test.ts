// ChatClient on protocol v2, with a fake mqtt.js (test/fake-mqtt.ts) and a
// fake REST facade: what it subscribes to and publishes (bytes included),
// and what it makes of PUBACKs and of the events on u/<me>. The live test
// runs the same against chatd with the real mqtt.js.
import { describe, expect, it } from "vitest";
import { decode, encode } from "@msgpack/msgpack";
import fixtures from "./fixtures/v2.json" with { type: "json" };
import { ChatClient, type Change } from "../src/client.js";
import { encodeCommand, msgCommand } from "../src/codec.js";
import type { RestMessage, RestThread } from "../src/rest.js";
import { fakeConnector, until, type FakeMqtt } from "./fake-mqtt.js";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const fixture = (name: string) => hex(fixtures.find((f) => f.name === name)!.hex);

const M1 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
const M2 = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c";
const M0 = "0190a1b2-0000-7e5f-8a9b-0c1d2e3f4a5b";
const T = 1795717800000;

const row = (id: string, buyer: string, seller: string, me: string, extra: Partial<RestThread> = {}): RestThread => ({
  id, buyerId: buyer, sellerId: seller, productId: null, orderId: null, otherUserId: me === buyer ? seller : buyer,
  otherDisplayName: `Tên ${me === buyer ? seller : buyer}`, otherOnline: true, otherLastSeen: null, lastMessage: null,
  lastMessageAt: null, unreadCount: 0, unreadBuyer: 0, unreadSeller: 0, createdAt: 1, ...extra,
});

/** A REST facade: history per thread, an inbox, uploads; records calls. */
function fakeRest() {
  const history = new Map<string, RestMessage[]>();
  let inbox: RestThread[] = [];
  const calls: string[] = [];
  const down = { history: false };
  const fetch = (async (url: string, init?: RequestInit) => {
    calls.push(`${init?.method ?? "GET"} ${url}`);
    const u = new URL(url, "http://chat.test");
    const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200 });
    let m: RegExpMatchArray | null;
    if (u.pathname === "/chat/threads" && (init?.method ?? "GET") === "GET") return json({ threads: inbox });
    if ((m = u.pathname.match(/^\/chat\/threads\/([^/]+)\/messages$/))) {
      if (down.history) return new Response(JSON.stringify({ error: { code: "unavailable", message: "bận" } }), { status: 503 });
      const all = history.get(m[1]!) ?? [];
      const after = u.searchParams.get("after");
      const page = after ? all.filter((x) => x.id > after) : all.slice(-Number(u.searchParams.get("limit")));
      return json({ messages: page, hasMore: false, readMarkers: [] });
    }
    if (u.pathname.endsWith("/uploads")) return new Response(JSON.stringify({ uploadId: "up_1", method: "PUT", url: "http://chat.test/files/up_1", headers: [] }), { status: 201 });
    if (u.pathname.startsWith("/files/")) return new Response(null, { status: 200 });
    return new Response(JSON.stringify({ error: { code: "not_found", message: "Không tìm thấy." } }), { status: 404 });
  }) as typeof globalThis.fetch;
  return {
    history,
    calls,
    down,
    fetch,
    setInbox: (rows: RestThread[]) => (inbox = rows),
  };
}

async function online(userId: string, rest = fakeRest()) {
  const mqtt = fakeConnector();
  const changes: Change[] = [];
  const client = new ChatClient({
    mqttUrl: "ws://chat.test/mqtt", restUrl: "http://chat.test", userId, device: "web-1",
    getToken: async () => "token", watchNetwork: false, fetch: rest.fetch, connectMqtt: mqtt.connect,
  });
  client.onChange((c) => changes.push(c));
  await client.connect();
  const fake = mqtt.made[0]!;
  fake.emit("connect", { cmd: "connack" });
  await until("online", () => client.state === "online");
  return { client, fake, mqtt, rest, changes };
}

/** The `msg` commands published, decoded. */
const sends = (fake: FakeMqtt) => fake.published.filter((p) => (decode(p.bytes) as { e: string }).e === "msg");

describe("connecting", () => {
  it("MQTT 5, a persistent session, one subscription: u/<me> at QoS 1 with No Local", async () => {
    const { client, fake } = await online("buyer-1");
    expect(fake.options).toMatchObject({ protocolVersion: 5, clientId: "buyer-1:web-1", username: "buyer-1", password: "token", clean: false });
    await until("subscribed", () => fake.subscriptions.length > 0);
    await client.open("t_01");
    expect(fake.subscriptions).toEqual([{ topic: "u/buyer-1", options: { qos: 1, nl: true } }]);
    client.close();
  });
});

describe("sending", () => {
  it("publishes the reference's bytes to t/<thread>; the PUBACK's id and ts store it, once", async () => {
    const { client, fake } = await online("buyer-1");
    await client.open("t_01");
    const entry = client.send("t_01", "xin chào");
    const [p] = sends(fake);
    expect(p).toMatchObject({ topic: "t/t_01", qos: 1 });
    expect(toHex(p!.bytes)).toBe(toHex(encodeCommand(msgCommand(entry.clientMsgId, "xin chào"))));
    expect(decode(p!.bytes)).toEqual({ e: "msg", k: entry.clientMsgId, b: "xin chào" });
    expect(client.pending("t_01").outbox).toHaveLength(1);

    fake.puback(p!, 0, { userProperties: { id: M1, ts: String(T) } });
    expect(client.outbox.size).toBe(0);
    expect(client.messages("t_01")).toEqual([
      { id: M1, threadId: "t_01", from: "buyer-1", type: "text", content: "xin chào", card: null, clientMsgId: entry.clientMsgId, createdAt: T },
    ]);
    // Sending reads: our marker is at our message.
    expect(client.readUpTo("t_01", "buyer-1")).toBe(M1);
    // The same message again (a QoS 1 duplicate, a retry's ack): still one.
    fake.deliver("u/buyer-1", encode({ e: "msg", th: "t_01", id: M1, f: "buyer-1", b: "xin chào", k: entry.clientMsgId, ts: T }));
    fake.deliver("u/buyer-1", encode({ e: "ack", th: "t_01", k: entry.clientMsgId, id: M1, ts: T }));
    expect(client.messages("t_01").map((m) => m.id)).toEqual([M1]);
    expect(sends(fake)).toHaveLength(1);
    client.close();
  });

  it("a refusing PUBACK: retried with the same key after `retry`, or failed for good with the server's text", async () => {
    const { client, fake, changes } = await online("buyer-1");
    await client.open("t_01");
    const slow = client.send("t_01", "nhanh quá");
    fake.puback(sends(fake)[0]!, 0x97, { reasonString: "Bạn gửi quá nhanh", userProperties: { code: "rate_limited", retry: "50" } });
    expect(changes).toContainEqual({ kind: "refused", threadId: "t_01", clientMsgId: slow.clientMsgId, error: { code: "rate_limited", msg: "Bạn gửi quá nhanh", retry: 50 } });
    expect(client.outbox.get(slow.clientMsgId)?.state).toBe("pending");
    await until("the retry", () => sends(fake).length === 2, 2_500);
    expect(toHex(sends(fake)[1]!.bytes)).toBe(toHex(sends(fake)[0]!.bytes));
    fake.puback(sends(fake)[1]!, 0, { userProperties: { id: M1, ts: String(T) } });
    expect(client.messages("t_01").map((m) => m.content)).toEqual(["nhanh quá"]);

    const blocked = client.send("t_01", "nội dung cấm");
    fake.puback(sends(fake)[2]!, 0x87, { reasonString: "Tin nhắn vi phạm quy định của sàn nên không được gửi.", userProperties: { code: "content_blocked" } });
    expect(client.outbox.failed().map((e) => [e.clientMsgId, e.error])).toEqual([
      [blocked.clientMsgId, { code: "content_blocked", msg: "Tin nhắn vi phạm quy định của sàn nên không được gửi." }],
    ]);
    await new Promise((r) => setTimeout(r, 1_200));
    expect(sends(fake)).toHaveLength(3);
    expect(client.messages("t_01")).toHaveLength(1);
    client.close();
  }, 10_000);

  it("a PUBACK without an answer (persistence workers): the own copy settles it, or an ack", async () => {
    const { client, fake } = await online("buyer-1");
    await client.open("t_01");
    const a = client.send("t_01", "qua worker");
    fake.puback(sends(fake)[0]!, 0);
    expect(client.outbox.get(a.clientMsgId)?.state).toBe("pending");
    expect(client.messages("t_01")).toEqual([]);
    fake.deliver("u/buyer-1", encode({ e: "msg", th: "t_01", id: M1, f: "buyer-1", b: "qua worker", k: a.clientMsgId, ts: T }));
    expect(client.outbox.size).toBe(0);
    expect(client.messages("t_01")).toMatchObject([{ id: M1, clientMsgId: a.clientMsgId, content: "qua worker" }]);

    const b = client.send("t_01", "x".repeat(5000));
    fake.puback(sends(fake)[1]!, 0);
    // Another device's refusal is not ours.
    fake.deliver("u/buyer-1", encode({ e: "ack", th: "t_01", k: "phone:7", err: { code: "too_large", msg: "Tin nhắn quá dài." } }));
    expect(client.outbox.failed()).toEqual([]);
    fake.deliver("u/buyer-1", encode({ e: "ack", th: "t_01", k: b.clientMsgId, err: { code: "too_large", msg: "Tin nhắn quá dài." } }));
    expect(client.outbox.failed().map((e) => e.error)).toEqual([{ code: "too_large", msg: "Tin nhắn quá dài." }]);
    client.close();
  });

  it("masked: the stored text replaces what was typed, before or after the answer", async () => {
    const { client, fake } = await online("buyer-1");
    await client.open("t_01");
    const before = client.send("t_01", "gọi 0912345678");
    fake.deliver("u/buyer-1", encode({ e: "masked", th: "t_01", k: before.clientMsgId, id: M1, b: "gọi [ẩn số điện thoại]", cats: ["phone"], msg: "Đã ẩn" }));
    fake.puback(sends(fake)[0]!, 0, { userProperties: { id: M1, ts: String(T) } });
    const after = client.send("t_01", "mail a@b.vn");
    fake.puback(sends(fake)[1]!, 0, { userProperties: { id: M2, ts: String(T + 1) } });
    fake.deliver("u/buyer-1", encode({ e: "masked", th: "t_01", k: after.clientMsgId, id: M2, b: "mail [ẩn email]", cats: ["email"], msg: "Đã ẩn" }));
    expect(client.messages("t_01").map((m) => m.content)).toEqual(["gọi [ẩn số điện thoại]", "mail [ẩn email]"]);
    client.close();
  });

  it("an image: uploaded, sent by its upload id, stored by its PUBACK; its card comes from history", async () => {
    const rest = fakeRest();
    const old: RestMessage = { id: M0, threadId: "t_01", from: "seller-1", type: "text", content: "cũ", card: null, clientMsgId: null, createdAt: T - 1 };
    rest.history.set("t_01", [old]);
    const { client, fake } = await online("buyer-1", rest);
    await client.open("t_01");
    await client.sendImage("t_01", new Blob([new Uint8Array([0x89, 0x50])], { type: "image/png" }));
    expect(rest.calls).toContain("POST http://chat.test/chat/threads/t_01/uploads");
    expect(rest.calls).toContain("PUT http://chat.test/files/up_1");
    const [p] = sends(fake);
    const k = (decode(p!.bytes) as { k: string }).k;
    expect(decode(p!.bytes)).toEqual({ e: "msg", k, b: "up_1", t: "image" });
    expect(toHex(p!.bytes)).toBe(toHex(encodeCommand(msgCommand(k, "up_1", "image"))));
    const card = { card: "image", width: 64, height: 48, mime: "image/png", thumbWidth: 64, thumbHeight: 48, imageKey: "i", thumbKey: "t", url: "http://chat.test/files/i", thumbUrl: "http://chat.test/files/t" };
    rest.history.set("t_01", [old, { id: M1, threadId: "t_01", from: "buyer-1", type: "image", content: "", card, clientMsgId: k, createdAt: T }]);
    fake.puback(p!, 0, { userProperties: { id: M1, ts: String(T) } });
    // Until history answers, it shows as pending (no gap, no blank bubble).
    expect(client.pending("t_01").outbox.map((e) => e.state)).toEqual(["stored"]);
    await until("the image from history", () => client.messages("t_01").length === 2);
    expect(rest.calls).toContain(`GET http://chat.test/chat/threads/t_01/messages?after=${M0}&limit=100`);
    expect(client.messages("t_01")[1]).toMatchObject({ id: M1, type: "image", card: { card: "image", thumb_width: 64, thumb_url: "http://chat.test/files/t" } });
    expect(client.outbox.size).toBe(0);
    client.close();
  });
});

describe("an image whose history could not be fetched", () => {
  it("stays pending, and comes with the resync after a reconnect", async () => {
    const rest = fakeRest();
    const { client, fake, mqtt } = await online("buyer-1", rest);
    await client.open("t_01");
    await client.sendImage("t_01", new Blob([new Uint8Array([0x89, 0x50])], { type: "image/png" }));
    const [p] = sends(fake);
    const k = (decode(p!.bytes) as { k: string }).k;
    rest.down.history = true;
    fake.puback(p!, 0, { userProperties: { id: M1, ts: String(T) } });
    await new Promise((r) => setTimeout(r, 100));
    expect(client.pending("t_01").outbox.map((e) => e.state)).toEqual(["stored"]);
    expect(client.messages("t_01")).toEqual([]);
    rest.down.history = false;
    const card = { card: "image", width: 8, height: 8, mime: "image/png", thumbWidth: 8, thumbHeight: 8, imageKey: "i", thumbKey: "t", url: "u", thumbUrl: "tu" };
    // A newer message arrives live: a resync from the newest held would
    // not reach the image.
    fake.deliver("u/buyer-1", encode({ e: "msg", th: "t_01", id: M2, f: "seller-1", b: "đẹp", ts: T + 1, n: 1 }));
    rest.history.set("t_01", [
      { id: M1, threadId: "t_01", from: "buyer-1", type: "image", content: "", card, clientMsgId: k, createdAt: T },
      { id: M2, threadId: "t_01", from: "seller-1", type: "text", content: "đẹp", card: null, clientMsgId: null, createdAt: T + 1 },
    ]);
    fake.stream.destroy();
    await until("a new connection", () => mqtt.made.length === 2, 3_000);
    mqtt.made[1]!.emit("connect", {});
    await until("the image", () => client.messages("t_01").length === 2);
    expect(client.messages("t_01").map((m) => [m.id, m.type])).toEqual([
      [M1, "image"],
      [M2, "text"],
    ]);
    expect(client.outbox.size).toBe(0);
    // Stored: never sent again.
    expect(sends(mqtt.made[1]!)).toEqual([]);
    client.close();
  });
});

describe("events on u/<me>", () => {
  it("the other side's message, reads, typing; the inbox follows them", async () => {
    const rest = fakeRest();
    rest.setInbox([row("t_01", "buyer-1", "seller-1", "seller-1", { lastMessageAt: T - 10, lastMessage: { messageId: M0, from: "buyer-1", type: "text", text: "cũ", createdAt: T - 10 } })]);
    const { client, fake } = await online("seller-1", rest);
    const events: string[] = [];
    client.on((e) => events.push(e.e));
    await client.inbox(30);
    await client.open("t_01");
    // The server's bytes for a buyer's text, n = 1.
    fake.deliver("u/seller-1", fixture("server/msg/text"));
    expect(client.messages("t_01")).toMatchObject([{ id: M1, from: "buyer-1", content: "Shop ơi còn hàng không?" }]);
    expect(client.unread.count("t_01")).toBe(1);
    // A reply means having read everything before it.
    expect(client.readUpTo("t_01", "buyer-1")).toBe(M1);
    expect(client.threads()[0]).toMatchObject({ id: "t_01", lastMessageAt: T, lastMessage: { messageId: M1, text: "Shop ơi còn hàng không?" } });
    // Read on the seller's phone: its own read, with the count.
    fake.deliver("u/seller-1", encode({ e: "read", th: "t_01", u: "seller-1", id: M1, ts: T + 5, n: 0 }));
    expect(client.unread.count("t_01")).toBe(0);
    expect(client.readUpTo("t_01", "seller-1")).toBe(M1);
    // The buyer read the seller's message.
    fake.deliver("u/seller-1", encode({ e: "read", th: "t_01", u: "buyer-1", id: M2, ts: T + 9 }));
    expect(client.readUpTo("t_01", "buyer-1")).toBe(M2);
    fake.deliver("u/seller-1", fixture("server/typing"));
    fake.deliver("u/seller-1", encode({ e: "something_new", th: "t_01" }));
    expect(events).toEqual(["msg", "read", "read", "typing"]);
    client.close();
  });

  it("a thread it does not know: the inbox is fetched for its row; a known one takes the thread event", async () => {
    const rest = fakeRest();
    rest.setInbox([row("t_01", "buyer-1", "seller-1", "seller-1")]);
    const { client, fake, changes } = await online("seller-1", rest);
    await client.inbox(30);
    const fetches = () => rest.calls.filter((c) => c.startsWith("GET http://chat.test/chat/threads?")).length;
    expect(fetches()).toBe(1);
    fake.deliver("u/seller-1", fixture("server/thread")); // t_01: product p1, n 3
    expect(client.threads()[0]).toMatchObject({ id: "t_01", productId: "p1", lastMessage: { messageId: M1, text: "Shop ơi" } });
    expect(client.unread.count("t_01")).toBe(3);
    expect(changes).toContainEqual({ kind: "inbox" });
    // A new buyer's first message, in a thread not listed.
    rest.setInbox([row("t_02", "buyer-2", "seller-1", "seller-1", { lastMessageAt: T, unreadCount: 0 }), row("t_01", "buyer-1", "seller-1", "seller-1")]);
    fake.deliver("u/seller-1", encode({ e: "msg", th: "t_02", id: M2, t: "system", c: { card: "product", product_id: "p2", title: "Nồi cơm", price: 1, currency: "VND", image_url: null }, ts: T }));
    await until("the inbox fetched again", () => fetches() === 2);
    await until("the new row", () => client.threads().some((t) => t.id === "t_02"));
    expect(rest.calls.at(-1)).toBe("GET http://chat.test/chat/threads?limit=30");
    expect(client.threads().find((t) => t.id === "t_02")?.otherDisplayName).toBe("Tên buyer-2");
    // A thread event alone (an order thread opened, no message yet).
    rest.setInbox([row("t_03", "buyer-3", "seller-1", "seller-1", { orderId: "o3", createdAt: T + 1 }), ...client.threads()]);
    fake.deliver("u/seller-1", encode({ e: "thread", th: "t_03", buyer: "buyer-3", seller: "seller-1", order: "o3" }));
    await until("the inbox fetched once more", () => fetches() === 3);
    await until("the order thread's row", () => client.threads()[0]?.id === "t_03");
    // Events for known threads fetch nothing.
    fake.deliver("u/seller-1", encode({ e: "thread", th: "t_03", buyer: "buyer-3", seller: "seller-1", order: "o3" }));
    fake.deliver("u/seller-1", encode({ e: "msg", th: "t_02", id: M2, f: "buyer-2", b: "alo", ts: T + 2, n: 1 }));
    await new Promise((r) => setTimeout(r, 400));
    expect(fetches()).toBe(3);
    client.close();
  });
});

describe("an app that never shows the inbox", () => {
  it("fetches no inbox for threads it does not know", async () => {
    const rest = fakeRest();
    const { client, fake } = await online("buyer-1", rest);
    fake.deliver("u/buyer-1", encode({ e: "msg", th: "t_09", id: M1, f: "seller-9", b: "alo", ts: T, n: 1 }));
    fake.deliver("u/buyer-1", encode({ e: "thread", th: "t_09", buyer: "buyer-1", seller: "seller-9" }));
    await new Promise((r) => setTimeout(r, 400));
    expect(rest.calls.filter((c) => c.includes("/chat/threads?"))).toEqual([]);
    // Its count is still known (the widget's badge).
    expect(client.unread.count("t_09")).toBe(1);
    client.close();
  });
});

describe("reads and typing", () => {
  it("publish the server's bytes: read at QoS 1, typing at QoS 0; a read made offline goes once online", async () => {
    const { client, fake } = await online("buyer-1");
    client.markRead("t_01", M1);
    client.typing("t_01", true);
    expect(fake.published.map((p) => [p.topic, p.qos, toHex(p.bytes)])).toEqual([
      ["t/t_01", 1, fixtures.find((f) => f.name === "client/read")!.hex],
      ["t/t_01", 0, fixtures.find((f) => f.name === "client/typing")!.hex],
    ]);
    client.close();

    const mqtt = fakeConnector();
    const later = new ChatClient({
      mqttUrl: "ws://chat.test/mqtt", restUrl: "http://chat.test", userId: "buyer-1", device: "web-2",
      getToken: async () => "token", watchNetwork: false, fetch: fakeRest().fetch, connectMqtt: mqtt.connect,
    });
    later.markRead("t_01", M1);
    later.typing("t_01", true); // offline: dropped, typing is not worth queueing
    await later.connect();
    expect(mqtt.made[0]!.published).toEqual([]);
    mqtt.made[0]!.emit("connect", {});
    await until("the read sent", () => mqtt.made[0]!.published.length === 1);
    expect(toHex(mqtt.made[0]!.published[0]!.bytes)).toBe(fixtures.find((f) => f.name === "client/read")!.hex);
    later.close();
  });
});

describe("after a reconnect", () => {
  it("resends with the same key, resyncs history and the inbox; a send found in history is done", async () => {
    const rest = fakeRest();
    rest.setInbox([row("t_01", "buyer-1", "seller-1", "buyer-1")]);
    const { client, fake, mqtt } = await online("buyer-1", rest);
    await client.inbox(20);
    await client.open("t_01");
    const lost = client.send("t_01", "mất sóng giữa chừng");
    const stored = client.send("t_01", "đã lưu, mất PUBACK");
    expect(sends(fake)).toHaveLength(2);
    // The answer of the second was lost, but it is stored: history has it.
    rest.history.set("t_01", [{ id: M1, threadId: "t_01", from: "buyer-1", type: "text", content: "đã lưu, mất PUBACK", card: null, clientMsgId: stored.clientMsgId, createdAt: T }]);
    const callsBefore = rest.calls.length;
    fake.stream.destroy();
    expect(client.state).toBe("offline");
    await until("a new connection", () => mqtt.made.length === 2, 3_000);
    const next = mqtt.made[1]!;
    next.emit("connect", {});
    await until("the resend", () => sends(next).length === 1);
    expect(toHex(sends(next)[0]!.bytes)).toBe(toHex(sends(fake)[0]!.bytes));
    expect((decode(sends(next)[0]!.bytes) as { k: string }).k).toBe(lost.clientMsgId);
    expect(client.outbox.get(stored.clientMsgId)).toBeUndefined();
    expect(client.messages("t_01").map((m) => m.content)).toEqual(["đã lưu, mất PUBACK"]);
    const after = rest.calls.slice(callsBefore);
    expect(after).toContain("GET http://chat.test/chat/threads/t_01/messages?limit=50");
    expect(after).toContain("GET http://chat.test/chat/threads?limit=20");
    expect(next.subscriptions).toEqual([{ topic: "u/buyer-1", options: { qos: 1, nl: true } }]);
    client.close();
  });
});
