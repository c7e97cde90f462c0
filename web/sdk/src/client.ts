// The chat client, protocol v2: MQTT 5 (over WebSocket in browsers, TCP
// in Node or React Native with a TCP transport) to the broker, the REST
// facade for history and inbox. One subscription, `u/<me>` with No Local;
// commands to `t/<thread>`; a send is answered by its PUBACK. Reconnects
// with backoff, resyncs every open thread and the inbox after a reconnect,
// resends its outbox with the same keys `k`, refreshes its token before it
// expires.
//
// The PUBACK's answer: mqtt.js hands a publish callback the PUBACK itself
// only on a refusal (reason code >= 0x80: `err` set, `packet` = the PUBACK,
// with its User Properties and Reason String); on success it hands the
// stored PUBLISH, without the PUBACK's properties. So every PUBACK is also
// caught on `packetreceive` (emitted before mqtt.js settles the publish),
// kept by packet id, and taken by the publish callback, whose packet has
// that id; the id is not reused before the callback has run.

import mqtt, { type IClientOptions, type MqttClient, type Packet } from "mqtt";
import { Backoff } from "./backoff.js";
import { decodeEvent, encodeCommand, msgCommand, pubackAnswer, type PubackLike, type SendAnswer } from "./codec.js";
import { Outbox, type OutboxEntry } from "./outbox.js";
import {
  messageOf,
  topics,
  type AckEvent,
  type ErrorBody,
  type MaskedEvent,
  type Message,
  type MsgEvent,
  type ReadEvent,
  type ServerEvent,
  type ThreadEvent,
} from "./protocol.js";
import { Timeline, resync } from "./timeline.js";
import { ThreadList } from "./threads.js";
import { UnreadCounts } from "./unread.js";
import { messageFromRest, type RestMessage, type RestThread } from "./rest.js";

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
  /** Opens the MQTT connection (default: mqtt.js's `connect`); for tests
   * and custom transports. */
  connectMqtt?: (url: string, options: IClientOptions) => MqttClient;
}

export type ConnectionState = "connecting" | "online" | "offline";

/** What changed locally, for a UI to re-render. */
export type Change =
  | { kind: "state"; state: ConnectionState }
  | { kind: "timeline"; threadId: string }
  | { kind: "pending"; threadId: string }
  | { kind: "read"; threadId: string }
  | { kind: "unread"; threadId: string }
  /** The thread list (`threads()`) changed. */
  | { kind: "inbox" }
  /** A send was refused (by its PUBACK or an `ack`): for good (the entry
   * is `failed`), or to be retried (`unavailable`, `rate_limited`, `muted`). */
  | { kind: "refused"; threadId: string; clientMsgId: string; error: ErrorBody };

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

/** A v4 UUID (a valid `k`); `crypto.randomUUID` exists only in secure contexts. */
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

/** A PUBACK as mqtt.js parses it (mqtt-packet's IPubackPacket). */
type Puback = PubackLike & { cmd: "puback"; messageId?: number };

const isPuback = (packet: Packet | undefined): packet is Packet & Puback => packet?.cmd === "puback";

/** Texts whose `masked` came before their own answer: kept this long. */
const MASKED_KEPT = 100;

export class ChatClient {
  readonly outbox = new Outbox();
  readonly unread = new UnreadCounts();
  private readonly threadList = new ThreadList();
  private readonly timelines = new Map<string, Timeline>();
  /** Threads opened by the user: in memory, and resynced after reconnects. */
  private readonly followed = new Set<string>();
  /** Per thread: whether history older than the oldest held message exists. */
  private readonly older = new Map<string, boolean>();
  private readonly markers = new Map<string, Map<string, ReadMarker>>();
  private readonly images = new Map<string, PendingImage>();
  /** Stored texts of masked sends not yet in a timeline, by message id. */
  private readonly maskedText = new Map<string, string>();
  /** Reads made while offline, sent once online: thread → message id. */
  private readonly unsentReads = new Map<string, string>();
  private readonly listeners = new Set<Listener>();
  private readonly changeListeners = new Set<ChangeListener>();
  private readonly backoff = new Backoff();
  private mqtt?: MqttClient;
  /** The current connection's PUBACKs not yet taken, by packet id. */
  private pubacks = new Map<number, Puback>();
  private token = "";
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private flushTimer?: ReturnType<typeof setInterval>;
  private inboxTimer?: ReturnType<typeof setTimeout>;
  /** The size of the inbox's first page as the app asked it, once it did. */
  private inboxLimit?: number;
  private closed = false;
  private unwatchNetwork?: () => void;
  state: ConnectionState = "offline";

  constructor(private readonly options: ChatClientOptions) {
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
      const entries = this.outbox.snapshot();
      if (entries.length === 0) storage.removeItem(this.outboxKey);
      else storage.setItem(this.outboxKey, JSON.stringify(entries));
    } catch {
      // Storage full or forbidden: the outbox still lives in memory.
    }
  }

  get userId(): string {
    return this.options.userId;
  }

  /** Every decoded server event, after the client has applied it. */
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
    const connect = this.options.connectMqtt ?? mqtt.connect;
    const client = connect(this.options.mqttUrl, {
      protocolVersion: 5,
      clientId: `${this.options.userId}:${this.options.device}`,
      username: this.options.userId,
      password: this.token,
      // The session (and the events queued while offline) survives.
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      reconnectPeriod: 0,
      connectTimeout: 15_000,
      keepalive: 30,
    });
    this.mqtt = client;
    const pubacks = new Map<number, Puback>();
    this.pubacks = pubacks;
    client.on("packetreceive", (packet) => {
      if (isPuback(packet) && packet.messageId !== undefined) pubacks.set(packet.messageId, packet);
    });
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
    // One subscription for everything, every thread included. No Local:
    // this connection's own messages and reads are not echoed back to it
    // (their PUBACKs answered them); the user's other devices get them.
    client.subscribe(topics.user(this.options.userId), { qos: 1, nl: true }, (err, granted) => {
      if (err || granted?.some((g) => g.qos >= 0x80)) this.offline(client);
    });
    for (const [threadId, upTo] of this.unsentReads) this.publishRead(client, threadId, upTo);
    this.unsentReads.clear();
    // Whatever happened while offline: fetched, merged, nothing twice.
    for (const threadId of this.followed) await this.resyncThread(threadId).catch(() => undefined);
    if (this.inboxLimit !== undefined) await this.inboxPage(undefined, this.inboxLimit).catch(() => undefined);
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

  /** A QoS 1 publish whose PUBACK (if one came) goes to `answered`. */
  private publishAcked(client: MqttClient, topic: string, bytes: Uint8Array, answered: (puback: PubackLike) => void): void {
    const pubacks = this.pubacks;
    client.publish(topic, payload(bytes), { qos: 1 }, (err, packet) => {
      const id = packet?.messageId;
      let puback: PubackLike | undefined;
      if (err) {
        // A refusal hands over the PUBACK; a closed connection hands nothing.
        puback = isPuback(packet) ? packet : undefined;
      } else if (id !== undefined) {
        puback = pubacks.get(id);
      }
      if (id !== undefined) pubacks.delete(id);
      // No PUBACK: the connection went away first (resent later), or a
      // success PUBACK that was not seen (read as "handed over").
      if (err && !puback) return;
      answered(puback ?? {});
    });
  }

  private receive(bytes: Uint8Array): void {
    const event = decodeEvent(bytes);
    if (!event) return;
    switch (event.e) {
      case "msg":
        this.onMsg(event);
        break;
      case "ack":
        this.onAck(event);
        break;
      case "read":
        this.onRead(event);
        break;
      case "thread":
        this.onThread(event);
        break;
      case "masked":
        this.onMasked(event);
        break;
      default:
        // typing, error: for the listeners.
        break;
    }
    for (const listener of this.listeners) listener(event);
  }

  private onMsg(event: MsgEvent): void {
    // Our own copy (MQTT 3.1.1, a workers deployment): it answers the send.
    if (event.k && event.f === this.options.userId && this.outbox.stored(event.k, event.id)) {
      this.changed({ kind: "pending", threadId: event.th });
    }
    this.landed(messageOf(event), event.n ?? 0);
  }

  /** A stored message, live or one's own: timeline, markers, counts, inbox. */
  private landed(m: Message, unread: number | undefined, inTimeline = true): void {
    const threadId = m.threadId;
    const me = this.options.userId;
    if (inTimeline && this.followed.has(threadId)) {
      this.timeline(threadId).merge([m]);
      this.settleFromTimeline(threadId);
      this.changed({ kind: "timeline", threadId });
    }
    if (m.from === me) {
      // Sending reads the thread: the server moved our marker.
      this.unread.read(threadId, m.createdAt);
      this.setMarker(threadId, { userId: me, upTo: m.id, readAt: m.createdAt });
    } else if (m.from !== "") {
      // Replying means having read everything before it.
      this.setMarker(threadId, { userId: m.from, upTo: m.id, readAt: m.createdAt });
    }
    if (unread !== undefined) this.unread.set(threadId, unread, m.createdAt);
    this.changed({ kind: "unread", threadId });
    if (this.threadList.message(m)) this.changed({ kind: "inbox" });
    else this.unknownThread();
  }

  private onAck(event: AckEvent): void {
    if (event.err) this.answered(event.k, { kind: "refused", error: event.err });
    else if (event.id && event.ts !== undefined) this.answered(event.k, { kind: "stored", id: event.id, ts: event.ts });
  }

  /** The answer to one of this device's sends (PUBACK or `ack`). */
  private answered(clientMsgId: string, answer: SendAnswer): void {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    const threadId = entry.threadId;
    if (answer.kind === "refused") {
      if (!this.outbox.refused(clientMsgId, answer.error, Date.now())) return;
      this.changed({ kind: "pending", threadId });
      this.changed({ kind: "refused", threadId, clientMsgId, error: answer.error });
      return;
    }
    if (answer.kind !== "stored") return;
    const { id, ts } = answer;
    const image = entry.type === "image";
    // An image's card (sizes, signed URLs) comes from history: the entry
    // stays, as `stored`, until the message is in the timeline.
    const keep = image && this.followed.has(threadId);
    if (!this.outbox.stored(clientMsgId, id, keep)) return;
    const content = image ? "" : (this.maskedText.get(id) ?? entry.content);
    this.maskedText.delete(id);
    const message: Message = {
      id,
      threadId: threadId,
      from: this.options.userId,
      type: entry.type,
      content,
      card: null,
      clientMsgId: clientMsgId,
      createdAt: ts,
    };
    this.changed({ kind: "pending", threadId });
    this.landed(message, undefined, !image);
    if (keep) void this.fetchMessage(threadId, id).catch(() => undefined);
  }

  private onRead(event: ReadEvent): void {
    this.setMarker(event.th, { userId: event.u, upTo: event.id, readAt: event.ts });
    if (event.u === this.options.userId && event.n !== undefined) {
      // Read on another device (or, without No Local, here).
      this.unread.set(event.th, event.n, event.ts);
      this.changed({ kind: "unread", threadId: event.th });
    }
  }

  private onThread(event: ThreadEvent): void {
    this.unread.set(event.th, event.n ?? 0, event.last?.ts ?? 0);
    this.changed({ kind: "unread", threadId: event.th });
    if (this.threadList.thread(event)) this.changed({ kind: "inbox" });
    else this.unknownThread();
  }

  private onMasked(event: MaskedEvent): void {
    const timeline = this.timelines.get(event.th);
    const held = timeline?.get(event.id);
    if (timeline && held) {
      const shown = { ...held, content: event.b };
      timeline.merge([shown]);
      this.threadList.message(shown);
      this.changed({ kind: "timeline", threadId: event.th });
      return;
    }
    // Before the send's own answer: the stored text is used when it comes.
    this.maskedText.set(event.id, event.b);
    if (this.maskedText.size > MASKED_KEPT) this.maskedText.delete(this.maskedText.keys().next().value!);
  }

  /** A thread the list does not know: the inbox is fetched again (names
   * come from REST), if the app shows the inbox at all. */
  private unknownThread(): void {
    const limit = this.inboxLimit;
    if (limit === undefined) return;
    clearTimeout(this.inboxTimer);
    this.inboxTimer = setTimeout(() => void this.inboxPage(undefined, limit).catch(() => undefined), 200);
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

  /** Outbox entries whose message the timeline holds are done. */
  private settleFromTimeline(threadId: string): void {
    const timeline = this.timelines.get(threadId);
    if (!timeline) return;
    let settled = false;
    for (const entry of this.outbox.ofThread(threadId)) {
      if (entry.state !== "failed" && timeline.hasKey(entry.clientMsgId)) {
        this.outbox.discard(entry.clientMsgId);
        settled = true;
      }
    }
    if (settled) this.changed({ kind: "pending", threadId });
  }

  /** Fetches one stored message (an image's card) from history. */
  private async fetchMessage(threadId: string, id: string): Promise<void> {
    const timeline = this.timeline(threadId);
    if (!timeline.get(id)) {
      const after = timeline.newestBefore(id);
      const page = await this.page(threadId, after ? { after, limit: "100" } : { limit: "50" });
      timeline.merge(page.messages);
    }
    this.settleFromTimeline(threadId);
    this.changed({ kind: "timeline", threadId });
  }

  /** Opens (or finds) the thread of a product or an order page. */
  async openThread(target: OpenTarget): Promise<RestThread> {
    const thread = (await this.rest("/chat/threads", { method: "POST", body: target })) as unknown as RestThread;
    this.threadList.page([thread]);
    this.unread.set(thread.id, thread.unreadCount, thread.lastMessageAt ?? 0);
    this.changed({ kind: "inbox" });
    return thread;
  }

  /** Starts following a thread: its newest history, then live events. */
  async open(threadId: string): Promise<Message[]> {
    this.followed.add(threadId);
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
    // Sends whose answer was lost are in history with their key: done.
    this.settleFromTimeline(threadId);
    this.changed({ kind: "timeline", threadId });
    // Stored images whose fetch failed (offline): fetched now.
    for (const entry of this.outbox.ofThread(threadId)) {
      if (entry.state === "stored" && entry.messageId) await this.fetchMessage(threadId, entry.messageId);
    }
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
      await upload(this.options.fetch ?? fetch, slot as unknown as UploadSlot, file, (p) => {
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

  /** The thread's messages not yet in its timeline: uploads, then the outbox. */
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

  /** Marks `threadId` read up to message `upTo` (sent when online). */
  markRead(threadId: string, upTo: string): void {
    const read = this.timelines.get(threadId)?.get(upTo);
    this.unread.read(threadId, read?.createdAt ?? 0);
    this.setMarker(threadId, { userId: this.options.userId, upTo, readAt: Date.now() });
    this.changed({ kind: "unread", threadId });
    if (this.state === "online" && this.mqtt) this.publishRead(this.mqtt, threadId, upTo);
    else this.unsentReads.set(threadId, upTo);
  }

  private publishRead(client: MqttClient, threadId: string, upTo: string): void {
    // The other side gets `read`; our other devices get it with our count.
    this.publishAcked(client, topics.thread(threadId), encodeCommand({ e: "read", id: upTo }), () => undefined);
  }

  typing(threadId: string, active: boolean): void {
    if (this.state !== "online") return;
    this.mqtt?.publish(topics.thread(threadId), payload(encodeCommand({ e: "typing", on: active })), { qos: 0 });
  }

  private flush(): void {
    const client = this.mqtt;
    if (this.state !== "online" || !client) return;
    const now = Date.now();
    for (const entry of this.outbox.due(now)) {
      const bytes = encodeCommand(msgCommand(entry.clientMsgId, entry.content, entry.type));
      const k = entry.clientMsgId;
      this.publishAcked(client, topics.thread(entry.threadId), bytes, (puback) => this.answered(k, pubackAnswer(puback)));
      this.outbox.sent(k, now);
    }
  }

  /** The inbox's first page (also loads the unread counts it shows). */
  async inbox(limit = 50): Promise<RestThread[]> {
    return (await this.inboxPage(undefined, limit)).threads;
  }

  /** One page of the inbox; pass `nextCursor` back for the next one. The
   * rows join `threads()`; the first page is fetched again after every
   * reconnect, and when a thread the list does not know shows up. */
  async inboxPage(cursor?: string, limit = 50): Promise<{ threads: RestThread[]; nextCursor?: string }> {
    if (!cursor) this.inboxLimit ??= limit;
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    const body = await this.rest(`/chat/threads?${query}`);
    const threads = body.threads as RestThread[];
    this.threadList.page(threads);
    for (const t of threads) {
      this.unread.set(t.id, t.unreadCount, t.lastMessageAt ?? 0);
      this.changed({ kind: "unread", threadId: t.id });
    }
    this.changed({ kind: "inbox" });
    return { threads, nextCursor: (body.nextCursor as string | null | undefined) ?? undefined };
  }

  /** The threads known (inbox pages, kept current by live events), newest activity first. */
  threads(): RestThread[] {
    return this.threadList.list();
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
    clearTimeout(this.inboxTimer);
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
    // REST's error body: `{"error": {"code", "message"}}`.
    const error = (json.error ?? {}) as { code?: string; message?: string };
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
function upload(f: typeof fetch, slot: UploadSlot, file: Blob, progress: (p: number) => void): Promise<void> {
  const XHR = (globalThis as { XMLHttpRequest?: typeof XMLHttpRequest }).XMLHttpRequest;
  if (!XHR) {
    return f(slot.url, { method: slot.method, headers: slot.headers, body: file }).then((r) => {
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
