import { describe, expect, it } from "vitest";
import { Backoff } from "../src/backoff.js";
import { Outbox } from "../src/outbox.js";
import { Timeline, resync } from "../src/timeline.js";
import { UnreadCounts } from "../src/unread.js";
import { EARLY_KEPT, ThreadList, previewOf, previewText } from "../src/threads.js";
import type { Message } from "../src/protocol.js";
import type { RestThread } from "../src/rest.js";

const msg = (id: string, from = "seller", createdAt = 0): Message => ({
  id, threadId: "t1", from, type: "text", content: `tin ${id}`, card: null, clientMsgId: null, createdAt,
});

describe("reconnect backoff", () => {
  it("grows, is capped, jitters within bounds and resets", () => {
    const b = new Backoff({ initialMs: 500, maxMs: 8_000, random: () => 1 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([500, 1000, 2000, 4000, 8000, 8000]);
    b.reset();
    expect(b.next()).toBe(500);
    const low = new Backoff({ initialMs: 1000, maxMs: 8_000, random: () => 0 });
    expect(low.next()).toBe(500);
  });
});

describe("outbox", () => {
  it("resends after a reconnect with the same key, and forgets stored ones", () => {
    const o = new Outbox();
    o.add({ clientMsgId: "c1", threadId: "t1", type: "text", content: "a" });
    o.add({ clientMsgId: "c1", threadId: "t1", type: "text", content: "a" });
    expect(o.size).toBe(1);
    expect(o.due(0).map((e) => e.clientMsgId)).toEqual(["c1"]);
    o.sent("c1", 0);
    expect(o.due(1_000)).toEqual([]);
    // The connection dropped before the answer: everything goes again.
    o.reconnected();
    expect(o.due(1_000).map((e) => e.clientMsgId)).toEqual(["c1"]);
    expect(o.stored("c1", "m1")?.messageId).toBe("m1");
    expect(o.size).toBe(0);
    // A second answer (a retry's), or another device's key: not ours.
    expect(o.stored("c1", "m1")).toBeUndefined();
    expect(o.refused("c9", { code: "forbidden", msg: "" }, 0)).toBeUndefined();
  });

  it("waits as the server says, retries only unavailable, rate_limited and muted", () => {
    const o = new Outbox();
    for (const k of ["c1", "c2", "c3", "c4"]) {
      o.add({ clientMsgId: k, threadId: "t1", type: "text", content: k });
      o.sent(k, 0);
    }
    o.refused("c1", { code: "rate_limited", msg: "", retry: 850 }, 100);
    o.refused("c2", { code: "content_blocked", msg: "Tin nhắn vi phạm quy định" }, 100);
    o.refused("c3", { code: "unavailable", msg: "" }, 100);
    o.refused("c4", { code: "too_large", msg: "Tin nhắn quá dài." }, 100);
    expect(o.due(900)).toEqual([]);
    expect(o.due(950).map((e) => e.clientMsgId)).toEqual(["c1"]);
    // unavailable without a retry: exponential, from 2 s after one attempt.
    expect(o.due(2_099).map((e) => e.clientMsgId)).toEqual(["c1"]);
    expect(o.due(2_100).map((e) => e.clientMsgId)).toEqual(["c1", "c3"]);
    expect(o.failed().map((e) => [e.clientMsgId, e.error?.msg])).toEqual([
      ["c2", "Tin nhắn vi phạm quy định"],
      ["c4", "Tin nhắn quá dài."],
    ]);
    // A failed entry is not sent again, and stays until dismissed.
    expect(o.due(100_000).map((e) => e.clientMsgId)).toEqual(["c1", "c3"]);
    o.discard("c2");
    expect(o.failed().map((e) => e.clientMsgId)).toEqual(["c4"]);
  });

  it("falls back to an answer timeout when no answer ever comes", () => {
    const o = new Outbox();
    o.add({ clientMsgId: "c1", threadId: "t1", type: "text", content: "a" });
    o.sent("c1", 0, 5_000);
    expect(o.due(4_999)).toEqual([]);
    expect(o.due(5_000).length).toBe(1);
  });

  it("keeps a stored image until its message arrives, but not across a reload", () => {
    const o = new Outbox();
    o.add({ clientMsgId: "c1", threadId: "t1", type: "image", content: "up_1" });
    o.add({ clientMsgId: "c2", threadId: "t1", type: "text", content: "b" });
    o.stored("c1", "m1", true);
    expect(o.ofThread("t1").map((e) => [e.clientMsgId, e.state])).toEqual([
      ["c1", "stored"],
      ["c2", "pending"],
    ]);
    expect(o.due(0).map((e) => e.clientMsgId)).toEqual(["c2"]);
    const reloaded = new Outbox();
    reloaded.restore(JSON.parse(JSON.stringify(o.snapshot())));
    expect(reloaded.ofThread("t1").map((e) => e.clientMsgId)).toEqual(["c2"]);
  });
});

describe("resync", () => {
  it("fills the gap after a reconnect with no duplicate, in order", async () => {
    const t = new Timeline();
    t.merge([msg("01"), msg("02")]);
    // While offline 03..07 were sent; 06 also arrived live before resync.
    t.merge([msg("06")]);
    const server = ["01", "02", "03", "04", "05", "06", "07"].map((id) => msg(id));
    const calls: (string | undefined)[] = [];
    const added = await resync(
      t,
      async (after) => {
        calls.push(after);
        const rest = server.filter((m) => after === undefined || m.id > after);
        return { messages: rest.slice(0, 2), hasMore: rest.length > 2 };
      },
    );
    // Resync starts after the newest seen (06) — so 03..05 come from a
    // full page-through in a real client; here the page source gives
    // everything after 06: 07.
    expect(calls[0]).toBe("06");
    expect(added).toBe(1);
    expect(t.messages().map((m) => m.id)).toEqual(["01", "02", "06", "07"]);
  });

  it("pages through a long gap", async () => {
    const t = new Timeline();
    t.merge([msg("01")]);
    const server = Array.from({ length: 25 }, (_, i) => msg(String(i + 1).padStart(2, "0")));
    await resync(t, async (after) => {
      const rest = server.filter((m) => after === undefined || m.id > after);
      return { messages: rest.slice(0, 10), hasMore: rest.length > 10 };
    });
    expect(t.messages().map((m) => m.id)).toEqual(server.map((m) => m.id));
  });
});

describe("unread counts", () => {
  it("takes the server's newest statement; an older one never overwrites it", () => {
    const u = new UnreadCounts();
    u.set("t1", 2, 10);
    u.set("t1", 3, 12);
    expect(u.count("t1")).toBe(3);
    // A REST page read before the last message: stale.
    u.set("t1", 2, 11);
    expect(u.count("t1")).toBe(3);
    u.set("t2", 1, 5);
    expect(u.total()).toBe(4);
  });

  it("reading here zeroes at once; a statement about nothing newer cannot bring it back", () => {
    const u = new UnreadCounts();
    u.set("t1", 4, 20);
    u.read("t1", 20);
    expect(u.count("t1")).toBe(0);
    // The inbox page fetched before the read landed says 4, as of 20.
    u.set("t1", 4, 20);
    expect(u.count("t1")).toBe(0);
    // A newer message counts again.
    u.set("t1", 1, 21);
    expect(u.count("t1")).toBe(1);
  });

  it("shows 99+ past the cap", () => {
    const u = new UnreadCounts();
    u.set("t1", 100, 1);
    expect(u.label("t1")).toBe("99+");
    u.set("t1", 99, 2);
    expect(u.label("t1")).toBe("99");
  });
});

describe("the thread list", () => {
  const row = (id: string, at: number, text = "x"): RestThread => ({
    id, buyerId: "me", sellerId: "shop", productId: null, orderId: null, otherUserId: "shop", otherDisplayName: "Shop",
    otherOnline: false, otherLastSeen: null, lastMessage: { messageId: `m${at}`, from: "shop", type: "text", text, createdAt: at },
    lastMessageAt: at, unreadCount: 0, unreadBuyer: 0, unreadSeller: 0, createdAt: 1,
  });

  it("follows live messages and thread events; unknown threads are reported", () => {
    const list = new ThreadList();
    list.page([row("t1", 10), row("t2", 20)]);
    expect(list.list().map((t) => t.id)).toEqual(["t2", "t1"]);
    expect(list.message({ ...msg("m30", "me", 30), threadId: "t1", content: "Còn hàng không?" })).toBe(true);
    expect(list.list().map((t) => t.id)).toEqual(["t1", "t2"]);
    expect(list.get("t1")?.lastMessage).toEqual({ messageId: "m30", from: "me", type: "text", text: "Còn hàng không?", createdAt: 30 });
    expect(list.message({ ...msg("m1", "shop", 1), threadId: "t9" })).toBe(false);
    expect(list.thread({ e: "thread", th: "t2", buyer: "me", seller: "shop", product: "p9", last: { id: "m40", b: "Áo thun", t: "system", ts: 40 } })).toBe(true);
    expect(list.get("t2")).toMatchObject({ productId: "p9", lastMessageAt: 40, lastMessage: { from: "", type: "system", text: "Áo thun" } });
    expect(list.thread({ e: "thread", th: "t9", buyer: "me", seller: "s" })).toBe(false);
  });

  it("keeps a live last message newer than a page read before it", () => {
    const list = new ThreadList();
    list.page([row("t1", 10)]);
    list.message({ ...msg("m30", "shop", 30), threadId: "t1", content: "mới" });
    list.page([{ ...row("t1", 10), otherDisplayName: "Shop Mới" }]);
    expect(list.get("t1")).toMatchObject({ otherDisplayName: "Shop Mới", lastMessageAt: 30, lastMessage: { text: "mới" } });
  });

  it("shows a live message of a thread it did not list when the page read before it lists the thread", () => {
    const list = new ThreadList();
    // The card opened a thread the inbox did not know: a page is fetched.
    expect(list.thread({ e: "thread", th: "t1", buyer: "b", seller: "me", product: "p1", last: { id: "m10", b: "Áo thun", t: "system", ts: 10 } })).toBe(false);
    // The buyer's text arrives while that page is on its way.
    expect(list.message({ ...msg("m20", "b", 20), threadId: "t1", content: "Còn size M không?" })).toBe(false);
    // An older live message of it changes nothing.
    expect(list.message({ ...msg("m05", "b", 5), threadId: "t1", content: "cũ" })).toBe(false);
    // The page was read after the card was stored, before the text.
    list.page([{ ...row("t1", 10), lastMessage: { messageId: "m10", from: "", type: "system", text: "Áo thun", createdAt: 10 } }]);
    expect(list.get("t1")).toMatchObject({ lastMessageAt: 20, lastMessage: { messageId: "m20", text: "Còn size M không?" } });
    // A later page that has it is taken as it is.
    list.page([{ ...row("t1", 30), otherDisplayName: "An" }]);
    expect(list.get("t1")).toMatchObject({ otherDisplayName: "An", lastMessageAt: 30 });
  });

  it("keeps the early messages of a bounded number of unlisted threads", () => {
    const list = new ThreadList();
    for (let i = 0; i <= EARLY_KEPT; i++) list.message({ ...msg(`m${i}`, "b", 100 + i), threadId: `t${i}` });
    list.page([row("t0", 1), row(`t${EARLY_KEPT}`, 1)]);
    // The oldest was forgotten; the newest was kept.
    expect(list.get("t0")?.lastMessageAt).toBe(1);
    expect(list.get(`t${EARLY_KEPT}`)?.lastMessageAt).toBe(100 + EARLY_KEPT);
  });

  it("previews as the server does", () => {
    expect(previewText("a".repeat(100))).toBe("a".repeat(100));
    expect(previewText("ă".repeat(101))).toBe(`${"ă".repeat(100)}…`);
    expect(previewText("😀".repeat(101))).toBe(`${"😀".repeat(100)}…`);
    expect(previewOf({ ...msg("m1"), type: "image", content: "" }).text).toBe("[image]");
    expect(previewOf({ ...msg("m1", ""), type: "system", content: "", card: { card: "order", order_id: "o1", summary: "Đơn #1" } }).text).toBe("Đơn #1");
  });
});
