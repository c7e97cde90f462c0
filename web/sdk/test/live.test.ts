// The SDK against a real chatd over real MQTT 5 over WebSocket (mqtt.js)
// and the REST facade, protocol v2. Run by the Rust end-to-end test
// `tests/e2e/web_sdk.rs`, which starts chatd, opens a thread and passes
// the addresses and tokens in the environment; skipped when run on its
// own (`npm test`), as there is no server then.
import { describe, expect, it } from "vitest";
import { ChatClient, type Change } from "../src/client.js";
import type { ServerEvent } from "../src/protocol.js";

const env = process.env;
const live = env.CHAT_LIVE_MQTT_URL !== undefined;

async function until<T>(what: string, check: () => T | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function chat(user: "BUYER" | "SELLER" | "BUYER2", device: string) {
  const client = new ChatClient({
    mqttUrl: env.CHAT_LIVE_MQTT_URL!,
    restUrl: env.CHAT_LIVE_REST_URL!,
    userId: env[`CHAT_LIVE_${user}`]!,
    device,
    getToken: async () => env[`CHAT_LIVE_${user}_TOKEN`]!,
  });
  const events: ServerEvent[] = [];
  const changes: Change[] = [];
  client.on((e) => events.push(e));
  client.onChange((c) => changes.push(c));
  return { client, events, changes };
}

describe.skipIf(!live)("against a running chatd", () => {
  const thread = env.CHAT_LIVE_THREAD!;
  const buyerId = env.CHAT_LIVE_BUYER!;
  const sellerId = env.CHAT_LIVE_SELLER!;

  it("protocol v2: the PUBACK answers the sender, No Local spares it its copy, its other device gets it; counts, inbox, reads, typing, a refusal", async () => {
    const buyer = chat("BUYER", "web");
    const phone = chat("BUYER", "phone");
    const seller = chat("SELLER", "web");
    const all = [buyer, phone, seller];
    try {
      for (const c of all) await c.client.connect();
      await until("all online", () => all.every((c) => c.client.state === "online"));
      await seller.client.inbox(30);
      for (const c of all) await c.client.open(thread);

      // Buyer → seller: settled by its PUBACK (id and ts), shown once.
      const entry = buyer.client.send(thread, "Shop ơi còn size M không?");
      const got = await until("the seller gets it", () => seller.client.messages(thread).find((m) => m.content === "Shop ơi còn size M không?"));
      await until("the buyer's outbox empties", () => buyer.client.outbox.size === 0);
      expect(got.from).toBe(buyerId);
      expect(got.clientMsgId).toBeNull(); // the key is the sender's business
      expect(buyer.client.messages(thread).filter((m) => m.content === got.content)).toEqual([{ ...got, clientMsgId: entry.clientMsgId }]);
      // The buyer's phone gets the own copy, with the key.
      await until("the phone's copy", () => phone.client.messages(thread).some((m) => m.id === got.id && m.clientMsgId === entry.clientMsgId));
      expect(phone.events.some((e) => e.e === "msg" && e.k === entry.clientMsgId)).toBe(true);
      // No Local: the sending connection never got it (its PUBACK answered).
      await new Promise((r) => setTimeout(r, 500));
      expect(buyer.events.filter((e) => e.e === "msg" && e.id === got.id)).toEqual([]);

      // The seller's count and inbox row, from the `msg` alone.
      await until("the seller's unread count", () => seller.client.unread.count(thread) === 1);
      const row = seller.client.threads().find((t) => t.id === thread);
      expect(row?.lastMessage).toMatchObject({ messageId: got.id, from: buyerId, text: "Shop ơi còn size M không?" });
      expect(row?.lastMessageAt).toBe(got.createdAt);

      // Typing reaches the other side only.
      seller.client.typing(thread, true);
      await until("the buyer sees typing", () => buyer.events.some((e) => e.e === "typing" && e.u === sellerId && e.on && e.th === thread));

      // The seller reads: the buyer's "Đã xem"; the seller's count is zero.
      seller.client.markRead(thread, got.id);
      expect(seller.client.unread.count(thread)).toBe(0);
      await until("the buyer learns it was read", () => buyer.client.readUpTo(thread, sellerId) === got.id);
      // The seller's reply: the buyer's count from its `n`.
      seller.client.send(thread, "Dạ còn ạ");
      const reply = await until("the reply", () => buyer.client.messages(thread).find((m) => m.content === "Dạ còn ạ"));
      await until("the buyer's unread count", () => buyer.client.unread.count(thread) === 1);
      expect(buyer.client.readUpTo(thread, sellerId)).toBe(reply.id);
      expect(seller.client.messages(thread).map((m) => m.id)).toEqual(buyer.client.messages(thread).map((m) => m.id));

      // Refused in the PUBACK (reason code 0x99, code too_large), for good.
      const long = buyer.client.send(thread, "x".repeat(4001));
      const failed = await until("the refusal", () => buyer.client.outbox.failed().find((e) => e.clientMsgId === long.clientMsgId));
      expect(failed.error).toEqual({ code: "too_large", msg: "Tin nhắn quá dài." });
      expect(buyer.changes).toContainEqual({ kind: "refused", threadId: thread, clientMsgId: long.clientMsgId, error: failed.error });
      expect(seller.client.messages(thread).some((m) => m.content.startsWith("xxxx"))).toBe(false);

      // A buyer the seller has never talked to opens a thread: the
      // seller's inbox gets its row (the name from REST).
      const other = chat("BUYER2", "web");
      const opened = await other.client.openThread({ sellerId });
      const newRow = await until("the new buyer's row", () => seller.client.threads().find((t) => t.id === opened.id));
      expect(newRow.otherUserId).toBe(env.CHAT_LIVE_BUYER2);
      expect(newRow.otherDisplayName).toBe(`Tên ${env.CHAT_LIVE_BUYER2}`);
      other.client.close();
    } finally {
      for (const c of all) c.client.close();
    }
  }, 60_000);

  it("after a network drop: resyncs every message once, in order, and sends what was written offline once", async () => {
    const buyer = chat("BUYER", "web");
    const seller = chat("SELLER", "web");
    try {
      await buyer.client.connect();
      await seller.client.connect();
      await until("both online", () => buyer.client.state === "online" && seller.client.state === "online");
      await buyer.client.open(thread);
      await seller.client.open(thread);

      // The buyer's network drops; both write meanwhile.
      buyer.client.dropConnectionForTests();
      await until("the buyer to notice", () => buyer.client.state !== "online");
      const offline = buyer.client.send(thread, "Gửi lúc mất mạng");
      const texts = ["Shop gửi bảng size", "Size M: ngực 96cm", "Shop freeship nhé", "Hàng về hôm qua", "Cảm ơn bạn"];
      for (const text of texts) seller.client.send(thread, text);
      await until("the seller's outbox empties", () => seller.client.outbox.size === 0);

      // Back online: every message exactly once, in server order.
      await until("the buyer back online", () => buyer.client.state === "online", 30_000);
      const got = await until("the resync", () => {
        const contents = buyer.client.messages(thread).map((m) => m.content);
        return texts.every((t) => contents.includes(t)) ? contents : undefined;
      });
      for (const text of texts) expect(got.filter((c) => c === text)).toHaveLength(1);
      const ids = buyer.client.messages(thread).map((m) => m.id);
      expect([...ids].sort()).toEqual(ids);
      expect(new Set(ids).size).toBe(ids.length);
      expect(texts.map((t) => got.indexOf(t))).toEqual([...texts.map((t) => got.indexOf(t))].sort((a, b) => a - b));

      // What the buyer wrote offline went out after the reconnect, once.
      await until("the offline message stored", () => buyer.client.outbox.get(offline.clientMsgId) === undefined);
      await until("the seller gets it", () => seller.client.messages(thread).some((m) => m.content === "Gửi lúc mất mạng"));
      await new Promise((r) => setTimeout(r, 500));
      expect(seller.client.messages(thread).filter((m) => m.content === "Gửi lúc mất mạng")).toHaveLength(1);
      expect(buyer.client.messages(thread).filter((m) => m.content === "Gửi lúc mất mạng")).toHaveLength(1);
    } finally {
      buyer.client.close();
      seller.client.close();
    }
  }, 60_000);
});
