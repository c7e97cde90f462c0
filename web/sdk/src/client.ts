// The chat client: MQTT (v5, over WebSocket in browsers, TCP in Node or
// React Native with a TCP transport) to the broker, the REST facade for
// history and inbox. Reconnects with backoff, resyncs every open thread
// after a reconnect, resends its outbox with the same client_msg_ids,
// refreshes its token before it expires.

import mqtt, { type MqttClient } from "mqtt";
import { Backoff } from "./backoff.js";
import { decodeServer, encodeClient } from "./codec.js";
import { Outbox, type OutboxEntry } from "./outbox.js";
import { topics, type ErrorBody, type Message, type ServerEvent } from "./protocol.js";
import { Timeline, resync } from "./timeline.js";
import { UnreadCounts } from "./unread.js";
import { messageFromRest, threadStateFromRest, type RestMessage, type RestThread } from "./rest.js";

export interface ChatClientOptions {
  /** `ws://host:8083/mqtt` (or `wss://…`). */
  mqttUrl: string;
  /** `http://host:8080` — the REST facade (`""`: same origin). */
  restUrl: string;
  userId: string;
  /** A device name: one MQTT session per device (`<user>:<device>`). */
  device: string;
  /** Returns a valid token; called at connect and before expiry. */
  getToken: () => Promise<string>;
  /** Seconds before `exp` at which a new token is fetched. */
  refreshBeforeSecs?: number;
  /** Where unsent messages are kept across a page reload or app restart
   * (e.g. `sessionStorage`, or AsyncStorage behind this interface). */
  storage?: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  /** Follow the browser's online/offline events (default: when in a browser). */
  watchNetwork?: boolean;
  fetch?: typeof fetch;
}

export type ConnectionState = "connecting" | "online" | "offline";

/** What changed locally, for a UI to re-render. */
export type Change =
  | { kind: "state"; state: ConnectionState }
  | { kind: "timeline"; threadId: string }
  | { kind: "pending"; threadId: string }
  | { kind: "read"; threadId: string }
  | { kind: "unread"; threadId: string };

/** Where a thread is opened from: a product page or an order page. */
export type OpenTarget = { sellerId: string; productId?: string } | { orderId: string };

/** An image on its way: uploading, then an outbox entry like a text. */
export interface PendingImage {
  clientMsgId: string;
  threadId: string;
  /** 0..1 of the upload. */
  progress: number;
  /** A local object URL of the picked file, for the preview. */
  previewUrl?: string;
  state: "uploading" | "failed";
  error?: string;
}

export interface ReadMarker {
  userId: string;
  upTo: string;
  readAt: number;
}

type Listener = (event: ServerEvent) => void;
type ChangeListener = (change: Change) => void;

/** `exp` of a JWT, in seconds (no signature check: the server does it). */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const json = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    return typeof json.exp === "number" ? json.exp : undefined;
  } catch {
    return undefined;
  }
}

/** A v4 UUID; `crypto.randomUUID` exists only in secure contexts. */
export function newClientMsgId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** mqtt.js wants a Buffer where Node has one; browsers get a polyfilled one. */
function payload(bytes: Uint8Array): Buffer {
  const B = (globalThis as { Buffer?: typeof Buffer }).Buffer;
  return (B ? B.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes) as Buffer;
}

export class ChatClient {
  readonly outbox = new Outbox();
  readonly unread: UnreadCounts;
  private readonly timelines = new Map<string, Timeline>();
  /** Threads opened by the user: subscribed, and resynced after reconnects. */
  private readonly followed = new Set<string>();
  /** Per thread: whether history older than the oldest held message exists. */
  private readonly older = new Map<string, boolean>();
  private readonly markers = new Map<string, Map<string, ReadMarker>>();
  private readonly images = new Map<string, PendingImage>();
  private readonly listeners = new Set<Listener>();
  private readonly changeListeners = new Set<ChangeListener>();
  private readonly backoff = new Backoff();
  private mqtt?: MqttClient;
  private token = "";
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private flushTimer?: ReturnType<typeof setInterval>;
  private closed = false;
  private unwatchNetwork?: () => void;
  state: ConnectionState = "offline";

  constructor(private readonly options: ChatClientOptions) {
    this.unread = new UnreadCounts(options.userId);
    this.restoreOutbox();
  }

  private get outboxKey(): string {
    return `chat-outbox:${this.options.userId}:${this.options.device}`;
  }

  private restoreOutbox(): void {
    const saved = this.options.storage?.getItem(this.outboxKey);
    if (!saved) return;
    try {
      this.outbox.restore(JSON.parse(saved) as OutboxEntry[]);
    } catch {
      this.options.storage?.removeItem(this.outboxKey);
    }
  }

  private saveOutbox(): void {
    const storage = this.options.storage;
    if (!storage) return;
    try {
      if (this.outbox.size === 0) storage.removeItem(this.outboxKey);
      else storage.setItem(this.outboxKey, JSON.stringify(this.outbox.snapshot()));
    } catch {
      // Storage full or forbidden: the outbox still lives in memory.
    }
  }

  get userId(): string {
    return this.options.userId;
  }

  on(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onChange(listener: ChangeListener): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  private changed(change: Change): void {
    if (change.kind === "pending") this.saveOutbox();
    for (const listener of this.changeListeners) listener(change);
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.changed({ kind: "state", state });
  }

  async connect(): Promise<void> {
    this.closed = false;
    this.watchNetwork();
    this.token = await this.options.getToken();
    if (this.closed) return;
    this.setState("connecting");
    const client = mqtt.connect(this.options.mqttUrl, {
      protocolVersion: 5,
      clientId: `${this.options.userId}:${this.options.device}`,
      username: this.options.userId,
      password: this.token,
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      reconnectPeriod: 0,
      connectTimeout: 15_000,
      keepalive: 30,
    });
    this.mqtt = client;
    client.on("connect", () => void this.online(client));
    client.on("message", (_topic, bytes) => this.receive(bytes));
    // A draining server says "use another server" (0x9C) or "server moved"
    // (0x9D): reconnect after the shortest delay (through the load balancer,
    // to another node), jittered so a drained node's clients do not all
    // arrive in the same millisecond.
    client.on("disconnect", (packet) => {
      if (packet.reasonCode === 0x9c || packet.reasonCode === 0x9d) this.backoff.reset();
    });
    client.on("close", () => this.offline(client));
    client.on("error", () => this.offline(client));
    this.flushTimer ??= setInterval(() => this.flush(), 1_000);
  }

  /** A browser knows before TCP does that the network went away. */
  private watchNetwork(): void {
    if (this.unwatchNetwork || this.options.watchNetwork === false) return;
    const w = (globalThis as { window?: Window }).window;
    if (!w?.addEventListener) return;
    const down = () => this.dropConnectionForTests();
    const up = () => {
      if (this.state !== "offline" || this.closed) return;
      clearTimeout(this.retryTimer);
      this.backoff.reset();
      void this.connect().catch(() => this.offline(this.mqtt));
    };
    w.addEventListener("offline", down);
    w.addEventListener("online", up);
    this.unwatchNetwork = () => {
      w.removeEventListener("offline", down);
      w.removeEventListener("online", up);
    };
  }

  private async online(client: MqttClient): Promise<void> {
    if (client !== this.mqtt) return;
    this.setState("online");
    this.backoff.reset();
    this.scheduleRefresh();
    const subs = [topics.user(this.options.userId), ...[...this.followed].map(topics.thread)];
    client.subscribe(subs, { qos: 1 });
    // Whatever happened while offline: fetched, merged, nothing twice.
    for (const threadId of this.followed) await this.resyncThread(threadId).catch(() => undefined);
    this.outbox.reconnected();
    this.flush();
  }

  private offline(client: MqttClient | undefined): void {
    if (client !== this.mqtt || this.state === "offline") return;
    this.setState("offline");
    this.mqtt?.end(true);
    if (this.closed) return;
    const delay = this.backoff.next();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect().catch(() => this.offline(this.mqtt)), delay);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const ahead = (this.options.refreshBeforeSecs ?? 60) * 1000;
    const wait = Math.max(1_000, exp * 1000 - Date.now() - ahead);
    // A new token means a new CONNECT (the password); the session resumes.
    this.refreshTimer = setTimeout(() => {
      const old = this.mqtt;
      this.mqtt = undefined;
      old?.end(true);
      this.setState("offline");
      void this.connect();
    }, wait);
  }

  private receive(bytes: Uint8Array): void {
    const event = decodeServer(bytes);
    if (!event) return;
    switch (event.event) {
      case "message_new": {
        const threadId = event.message.thread_id;
        this.timeline(threadId).merge([event.message]);
        this.unread.received(threadId, event.message.from, event.message.created_at);
        this.changed({ kind: "timeline", threadId });
        this.changed({ kind: "unread", threadId });
        break;
      }
      case "message_sent_ack":
        this.outbox.acked(event.client_msg_id, event.message_id, event.error, Date.now());
        this.changed({ kind: "pending", threadId: event.thread_id });
        break;
      case "message_read":
        this.setMarker(event.thread_id, { userId: event.user_id, upTo: event.up_to, readAt: event.read_at });
        break;
      case "thread_updated":
        this.unread.server(event.thread);
        this.changed({ kind: "unread", threadId: event.thread.thread_id });
        break;
      default:
        break;
    }
    for (const listener of this.listeners) listener(event);
  }

  private setMarker(threadId: string, marker: ReadMarker): void {
    let markers = this.markers.get(threadId);
    if (!markers) {
      markers = new Map();
      this.markers.set(threadId, markers);
    }
    const current = markers.get(marker.userId);
    if (current && current.upTo >= marker.upTo) return;
    markers.set(marker.userId, marker);
    this.changed({ kind: "read", threadId });
  }

  /** How far `userId` has read `threadId` (a message id), if known. */
  readUpTo(threadId: string, userId: string): string | undefined {
    return this.markers.get(threadId)?.get(userId)?.upTo;
  }

  private timeline(threadId: string): Timeline {
    let t = this.timelines.get(threadId);
    if (!t) {
      t = new Timeline();
      this.timelines.set(threadId, t);
    }
    return t;
  }

  /** Opens (or finds) the thread of a product or an order page. */
  async openThread(target: OpenTarget): Promise<RestThread> {
    return (await this.rest("/chat/threads", { method: "POST", body: target })) as unknown as RestThread;
  }

  /** Starts following a thread: live events plus its newest history. */
  async open(threadId: string): Promise<Message[]> {
    if (!this.followed.has(threadId)) {
      this.followed.add(threadId);
      this.mqtt?.subscribe(topics.thread(threadId), { qos: 1 });
    }
    await this.resyncThread(threadId);
    return this.timeline(threadId).messages();
  }

  messages(threadId: string): Message[] {
    return this.timeline(threadId).messages();
  }

  hasOlder(threadId: string): boolean {
    return this.older.get(threadId) ?? false;
  }

  /** Loads the page before the oldest message held (infinite scroll). */
  async loadOlder(threadId: string, limit = 30): Promise<boolean> {
    const timeline = this.timeline(threadId);
    const before = timeline.oldestId();
    if (!before) return false;
    const page = await this.page(threadId, { before, limit: String(limit) });
    timeline.merge(page.messages);
    this.older.set(threadId, page.hasMore);
    this.changed({ kind: "timeline", threadId });
    return page.hasMore;
  }

  private async page(threadId: string, query: Record<string, string>): Promise<{ messages: Message[]; hasMore: boolean }> {
    const body = await this.rest(`/chat/threads/${encodeURIComponent(threadId)}/messages?${new URLSearchParams(query)}`);
    for (const m of (body.readMarkers as ReadMarker[] | undefined) ?? []) this.setMarker(threadId, m);
    return { messages: (body.messages as RestMessage[]).map(messageFromRest), hasMore: Boolean(body.hasMore) };
  }

  private async resyncThread(threadId: string): Promise<void> {
    const timeline = this.timeline(threadId);
    const first = timeline.size === 0;
    await resync(timeline, async (after) => {
      const query: Record<string, string> = { limit: "50" };
      if (after) query.after = after;
      const page = await this.page(threadId, query);
      // The first page of an empty timeline is the newest one: its
      // `hasMore` says whether older history exists.
      if (first && !after) this.older.set(threadId, page.hasMore);
      return page;
    });
    this.changed({ kind: "timeline", threadId });
  }

  /** Queues a text; it goes now if online, after reconnecting otherwise. */
  send(threadId: string, text: string): OutboxEntry {
    const entry = this.outbox.add({ clientMsgId: newClientMsgId(), threadId, type: "text", content: text });
    this.changed({ kind: "pending", threadId });
    this.flush();
    return entry;
  }

  /** Uploads an image (progress reported), then sends it like a text. */
  async sendImage(threadId: string, file: Blob): Promise<void> {
    const image: PendingImage = {
      clientMsgId: newClientMsgId(),
      threadId,
      progress: 0,
      previewUrl: typeof URL.createObjectURL === "function" ? URL.createObjectURL(file) : undefined,
      state: "uploading",
    };
    this.images.set(image.clientMsgId, image);
    this.changed({ kind: "pending", threadId });
    try {
      const slot = await this.rest(`/chat/threads/${encodeURIComponent(threadId)}/uploads`, {
        method: "POST",
        body: { contentType: file.type, size: file.size },
      });
      await upload(slot as unknown as UploadSlot, file, (p) => {
        image.progress = p;
        this.changed({ kind: "pending", threadId });
      });
      this.images.delete(image.clientMsgId);
      this.outbox.add({ clientMsgId: image.clientMsgId, threadId, type: "image", content: String(slot.uploadId) });
      this.changed({ kind: "pending", threadId });
      this.flush();
    } catch (e) {
      image.state = "failed";
      image.error = e instanceof RestError ? e.message : String(e);
      this.changed({ kind: "pending", threadId });
    }
  }

  /** The thread's messages not yet stored: uploads, then the outbox. */
  pending(threadId: string): { images: PendingImage[]; outbox: OutboxEntry[] } {
    return {
      images: [...this.images.values()].filter((i) => i.threadId === threadId),
      outbox: this.outbox.ofThread(threadId),
    };
  }

  /** Forgets a failed message or upload. */
  discard(threadId: string, clientMsgId: string): void {
    const image = this.images.get(clientMsgId);
    if (image?.previewUrl) URL.revokeObjectURL(image.previewUrl);
    this.images.delete(clientMsgId);
    this.outbox.discard(clientMsgId);
    this.changed({ kind: "pending", threadId });
  }

  markRead(threadId: string, upTo: string): void {
    this.unread.read(threadId);
    this.setMarker(threadId, { userId: this.options.userId, upTo, readAt: Date.now() });
    this.changed({ kind: "unread", threadId });
    this.mqtt?.publish(topics.threadInbound(threadId), payload(encodeClient({ event: "mark_read", up_to: upTo })), { qos: 1 });
  }

  typing(threadId: string, active: boolean): void {
    if (this.state !== "online") return;
    this.mqtt?.publish(topics.threadInbound(threadId), payload(encodeClient({ event: "typing", active })), { qos: 0 });
  }

  private flush(): void {
    if (this.state !== "online" || !this.mqtt) return;
    const now = Date.now();
    for (const entry of this.outbox.due(now)) {
      const bytes = encodeClient({
        event: "send_message",
        client_msg_id: entry.clientMsgId,
        type: entry.type,
        content: entry.content,
      });
      this.mqtt.publish(topics.threadInbound(entry.threadId), payload(bytes), { qos: 1 });
      this.outbox.sent(entry.clientMsgId, now);
    }
  }

  /** The inbox: threads, newest activity first; server counts win. */
  async inbox(limit = 50): Promise<RestThread[]> {
    return (await this.inboxPage(undefined, limit)).threads;
  }

  /** One page of the inbox; pass `nextCursor` back for the next one. */
  async inboxPage(cursor?: string, limit = 50): Promise<{ threads: RestThread[]; nextCursor?: string }> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    const body = await this.rest(`/chat/threads?${query}`);
    const threads = body.threads as RestThread[];
    for (const t of threads) this.unread.server(threadStateFromRest(t));
    return { threads, nextCursor: (body.nextCursor as string | null | undefined) ?? undefined };
  }

  private async rest(path: string, init: { method?: string; body?: unknown } = {}): Promise<Record<string, unknown>> {
    const f = this.options.fetch ?? fetch;
    const headers: Record<string, string> = { authorization: `Bearer ${this.token || (await this.options.getToken())}` };
    if (init.body !== undefined) headers["content-type"] = "application/json";
    const response = await f(`${this.options.restUrl}${path}`, {
      method: init.method ?? "GET",
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    const json = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok) throw RestError.from(response.status, json);
    return json;
  }

  /** Cuts the socket as a network loss would (the client reconnects). */
  dropConnectionForTests(): void {
    this.mqtt?.stream?.destroy();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    this.unwatchNetwork?.();
    this.unwatchNetwork = undefined;
    this.setState("offline");
    this.mqtt?.end(true);
  }
}

/** A REST error with the server's stable code and localised message. */
export class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  static from(status: number, json: Record<string, unknown>): RestError {
    const error = (json.error ?? {}) as Partial<ErrorBody>;
    return new RestError(status, String(error.code ?? "http"), String(error.message ?? `HTTP ${status}`));
  }
}

interface UploadSlot {
  uploadId: string;
  method: string;
  url: string;
  headers: [string, string][];
}

/** PUT with upload progress where the platform has XMLHttpRequest. */
function upload(slot: UploadSlot, file: Blob, progress: (p: number) => void): Promise<void> {
  const XHR = (globalThis as { XMLHttpRequest?: typeof XMLHttpRequest }).XMLHttpRequest;
  if (!XHR) {
    return fetch(slot.url, { method: slot.method, headers: slot.headers, body: file }).then((r) => {
      if (!r.ok) throw new Error(`upload: HTTP ${r.status}`);
      progress(1);
    });
  }
  return new Promise((resolve, reject) => {
    const xhr = new XHR();
    xhr.open(slot.method, slot.url);
    // The browser sets Content-Length itself (it is forbidden to scripts).
    for (const [name, value] of slot.headers) if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => e.lengthComputable && progress(e.loaded / e.total);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? (progress(1), resolve()) : reject(new Error(`upload: HTTP ${xhr.status}`)));
    xhr.onerror = () => reject(new Error("upload: network error"));
    xhr.send(file);
  });
}
