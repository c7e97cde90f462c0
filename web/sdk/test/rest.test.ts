import { describe, expect, it } from "vitest";
import { messageFromRest, threadStateFromRest, type RestMessage, type RestThread } from "../src/rest.js";
import { tokenExpiry } from "../src/client.js";

describe("REST shapes", () => {
  it("history messages become protocol messages, cards included", () => {
    const rest: RestMessage = {
      id: "m1", threadId: "t1", from: "b", type: "image", content: "",
      card: { card: "image", width: 64, height: 48, mime: "image/jpeg", thumbWidth: 64, thumbHeight: 48, url: "u", thumbUrl: "tu" },
      clientMsgId: "c1", createdAt: 5,
    };
    const m = messageFromRest(rest);
    expect(m).toMatchObject({ id: "m1", thread_id: "t1", client_msg_id: "c1", created_at: 5 });
    expect(m.card).toMatchObject({ card: "image", thumb_width: 64, thumb_url: "tu" });
  });

  it("inbox rows feed the unread counts in the protocol's shape", () => {
    const row = {
      id: "t1", buyerId: "b", sellerId: "s", productId: null, orderId: null, otherUserId: "s",
      otherDisplayName: null, otherOnline: false, otherLastSeen: null,
      lastMessage: { messageId: "m1", from: "s", type: "text", text: "hi", createdAt: 3 },
      lastMessageAt: 3, unreadCount: 2, unreadBuyer: 2, unreadSeller: 0, createdAt: 1,
    } satisfies RestThread;
    expect(threadStateFromRest(row)).toMatchObject({ thread_id: "t1", unread_buyer: 2, last_message: { message_id: "m1" } });
  });
});

describe("token refresh", () => {
  it("reads exp from a JWT", () => {
    const payload = Buffer.from(JSON.stringify({ sub: "b", exp: 1795717800 })).toString("base64url");
    expect(tokenExpiry(`h.${payload}.s`)).toBe(1795717800);
    expect(tokenExpiry("garbage")).toBeUndefined();
  });
});
