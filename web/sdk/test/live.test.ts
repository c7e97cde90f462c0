// The SDK against a real chatd over real MQTT-over-WebSocket. Run by the
// Rust end-to-end test `tests/e2e/web_sdk.rs`, which starts chatd, opens a
// thread and passes the addresses and tokens in the environment; skipped
// when run on its own (`npm test`), as there is no server then.
import { describe, expect, it } from "vitest";
import { ChatClient } from "../src/client.js";

const env = process.env;
const live = env.CHAT_LIVE_MQTT_URL !== undefined;

async function until<T>(what: string, check: () => T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!live)("against a running chatd", () => {
  it("sends, receives, and after a network drop resyncs every message once, in order", async () => {
    const common = { mqttUrl: env.CHAT_LIVE_MQTT_URL!, restUrl: env.CHAT_LIVE_REST_URL! };
    const thread = env.CHAT_LIVE_THREAD!;
    const buyer = new ChatClient({ ...common, userId: env.CHAT_LIVE_BUYER!, device: "web", getToken: async () => env.CHAT_LIVE_BUYER_TOKEN! });
    const seller = new ChatClient({ ...common, userId: env.CHAT_LIVE_SELLER!, device: "web", getToken: async () => env.CHAT_LIVE_SELLER_TOKEN! });
    try {
      await buyer.connect();
      await seller.connect();
      await until("both online", () => buyer.state === "online" && seller.state === "online");
      await buyer.open(thread);
      await seller.open(thread);

      buyer.send(thread, "Shop ơi còn size M không?");
      await until("the seller gets it", () =>
        seller.messages(thread).some((m) => m.content === "Shop ơi còn size M không?"),
      );
      await until("the buyer's outbox empties", () => buyer.outbox.size === 0);
      await until("the seller's unread count", () => seller.unread.count(thread) === 1);

      // The buyer's network drops; the seller writes meanwhile.
      buyer.dropConnectionForTests();
      await until("the buyer to notice", () => buyer.state !== "online");
      const texts = ["Dạ còn ạ", "Bạn lấy mấy cái?", "Shop freeship nhé", "Hàng về hôm qua", "Cảm ơn bạn"];
      for (const text of texts) seller.send(thread, text);
      await until("the seller's outbox empties", () => seller.outbox.size === 0);

      // Back online: every message exactly once, in server order.
      await until("the buyer back online", () => buyer.state === "online", 30_000);
      const got = await until("the resync", () => {
        const contents = buyer.messages(thread).map((m) => m.content);
        return texts.every((t) => contents.includes(t)) ? contents : undefined;
      });
      for (const text of texts) expect(got.filter((c) => c === text)).toHaveLength(1);
      const ids = buyer.messages(thread).map((m) => m.id);
      expect([...ids].sort()).toEqual(ids);
      expect(texts.map((t) => got.indexOf(t))).toEqual([...texts.map((t) => got.indexOf(t))].sort((a, b) => a - b));
    } finally {
      buyer.close();
      seller.close();
    }
  }, 60_000);
});
