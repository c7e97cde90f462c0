import { describe, expect, it } from "vitest";
import { messageFromRest, type RestMessage } from "../src/rest.js";
import { tokenExpiry } from "../src/client.js";

describe("REST shapes", () => {
  it("history messages become protocol messages, cards included", () => {
    const rest: RestMessage = {
      id: "m1", threadId: "t1", from: "b", type: "image", content: "",
      card: { card: "image", width: 64, height: 48, mime: "image/jpeg", thumbWidth: 64, thumbHeight: 48, url: "u", thumbUrl: "tu" },
      clientMsgId: "c1", createdAt: 5,
    };
    const m = messageFromRest(rest);
    expect(m).toMatchObject({ id: "m1", threadId: "t1", clientMsgId: "c1", createdAt: 5 });
    expect(m.card).toMatchObject({ card: "image", thumb_width: 64, thumb_url: "tu" });
    // The same card keys as a v2 `msg` carries.
    expect(Object.keys(m.card!).sort()).toEqual(["card", "height", "mime", "thumb_height", "thumb_url", "thumb_width", "url", "width"]);
  });
});

describe("token refresh", () => {
  it("reads exp from a JWT", () => {
    const payload = Buffer.from(JSON.stringify({ sub: "b", exp: 1795717800 })).toString("base64url");
    expect(tokenExpiry(`h.${payload}.s`)).toBe(1795717800);
    expect(tokenExpiry("garbage")).toBeUndefined();
  });
});
