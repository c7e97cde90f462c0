// ChatClient's REST side and local state, with a fake fetch and no broker
// (the live test and the browser tests cover it against a real chatd).
import { describe, expect, it } from "vitest";
import { ChatClient, newClientMsgId } from "../src/client.js";
import type { RestMessage } from "../src/rest.js";

const rest = (id: string, from = "shop"): RestMessage => ({
  id, threadId: "t1", from, type: "text", content: `tin ${id}`, card: null, clientMsgId: null, createdAt: Number(id),
});

/** A REST facade holding 75 messages, paging like chatd does. */
function fakeServer(markers: unknown[] = []) {
  const all = Array.from({ length: 75 }, (_, i) => rest(String(i + 1).padStart(3, "0")));
  const calls: string[] = [];
  const fetch = (async (url: string) => {
    calls.push(url);
    const u = new URL(url, "http://chat.test");
    const limit = Number(u.searchParams.get("limit"));
    const before = u.searchParams.get("before");
    const after = u.searchParams.get("after");
    let page: RestMessage[];
    let hasMore: boolean;
    if (after) {
      const rest = all.filter((m) => m.id > after);
      page = rest.slice(0, limit);
      hasMore = rest.length > limit;
    } else {
      const rest = before ? all.filter((m) => m.id < before) : all;
      page = rest.slice(-limit);
      hasMore = rest.length > limit;
    }
    return new Response(JSON.stringify({ messages: page, hasMore, readMarkers: markers }), { status: 200 });
  }) as typeof globalThis.fetch;
  return { all, calls, fetch };
}

function memoryStorage() {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k: string) => data.get(k) ?? null,
    setItem: (k: string, v: string) => void data.set(k, v),
    removeItem: (k: string) => void data.delete(k),
  };
}

const options = (extra: Partial<ConstructorParameters<typeof ChatClient>[0]> = {}) => ({
  mqttUrl: "ws://chat.test/mqtt", restUrl: "http://chat.test", userId: "buyer", device: "web-1",
  getToken: async () => "token", watchNetwork: false, ...extra,
});

describe("ChatClient history", () => {
  it("opens with the newest page, then loads older pages until the start: each message once, in order", async () => {
    const server = fakeServer();
    const client = new ChatClient(options({ fetch: server.fetch }));
    const first = await client.open("t1");
    expect(first.map((m) => m.id)).toEqual(server.all.slice(-50).map((m) => m.id));
    expect(client.hasOlder("t1")).toBe(true);
    expect(await client.loadOlder("t1", 20)).toBe(true);
    expect(await client.loadOlder("t1", 20)).toBe(false);
    expect(client.hasOlder("t1")).toBe(false);
    expect(client.messages("t1").map((m) => m.id)).toEqual(server.all.map((m) => m.id));
    expect(server.calls.some((c) => c.includes("before=026"))).toBe(true);
  });

  it("takes read markers from history pages; a marker never moves back", async () => {
    const server = fakeServer([{ userId: "shop", upTo: "070", readAt: 1 }]);
    const client = new ChatClient(options({ fetch: server.fetch }));
    const changes: string[] = [];
    client.onChange((c) => changes.push(c.kind));
    await client.open("t1");
    expect(client.readUpTo("t1", "shop")).toBe("070");
    expect(changes).toContain("read");
    client.markRead("t1", "075");
    expect(client.readUpTo("t1", "buyer")).toBe("075");
    client.markRead("t1", "060");
    expect(client.readUpTo("t1", "buyer")).toBe("075");
  });

  it("sends REST errors back with the server's code and message", async () => {
    const fetch = (async () =>
      new Response(JSON.stringify({ error: { code: "forbidden", message: "Bạn không có quyền." } }), { status: 403 })) as typeof globalThis.fetch;
    const client = new ChatClient(options({ fetch }));
    await expect(client.openThread({ orderId: "DH-1" })).rejects.toMatchObject({ status: 403, code: "forbidden", message: "Bạn không có quyền." });
  });
});

describe("ChatClient outbox across a reload", () => {
  it("keeps unsent messages in storage and resends them with the same clientMsgId", () => {
    const storage = memoryStorage();
    const before = new ChatClient(options({ storage }));
    const entry = before.send("t1", "Gửi lúc mất sóng");
    expect(before.pending("t1").outbox.map((e) => e.clientMsgId)).toEqual([entry.clientMsgId]);
    before.close();
    // The page reloads: a new client on the same device and storage.
    const after = new ChatClient(options({ storage }));
    expect(after.outbox.due(Date.now()).map((e) => [e.clientMsgId, e.content])).toEqual([[entry.clientMsgId, "Gửi lúc mất sóng"]]);
    // Another device of the same user does not take it over.
    const other = new ChatClient(options({ storage, device: "web-2" }));
    expect(other.outbox.size).toBe(0);
    // Discarded: gone from storage too.
    after.discard("t1", entry.clientMsgId);
    expect(storage.data.size).toBe(0);
  });
});

describe("client message ids", () => {
  it("are v4 UUIDs, unique", () => {
    const ids = new Set(Array.from({ length: 1000 }, newClientMsgId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
