// The chat client: MQTT (v5, over WebSocket in browsers, TCP in Node or
// React Native with a TCP transport) to the broker, the REST facade for
// history and inbox. Reconnects with backoff, resyncs every open thread
// after a reconnect, resends its outbox with the same client_msg_ids,
// refreshes its token before it expires.

import mqtt, { type MqttClient } from "mqtt";
import { Backoff } from "./backoff.js";
import { decodeServer, encodeClient } from "./codec.js";
import { Outbox, type OutboxEntry } from "./outbox.js";
import { topics, type Message, type ServerEvent } from "./protocol.js";
import { Timeline, resync } from "./timeline.js";
import { UnreadCounts } from "./unread.js";
import { messageFromRest, threadStateFromRest, type RestMessage, type RestThread } from "./rest.js";

export interface ChatClientOptions {
  /** `ws://host:8083/mqtt` (or `wss://…`). */
  mqttUrl: string;
  /** `http://host:8080` — the REST facade. */
  restUrl: string;
  userId: string;
  /** A device name: one MQTT session per device (`<user>:<device>`). */
  device: string;
  /** Returns a valid token; called at connect and before expiry. */
  getToken: () => Promise<string>;
  /** Seconds before `exp` at which a new token is fetched. */
  refreshBeforeSecs?: number;
  fetch?: typeof fetch;
}

export type ConnectionState = "connecting" | "online" | "offline";

type Listener = (event: ServerEvent) => void;

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

export class ChatClient {
  readonly outbox = new Outbox();
  readonly unread: UnreadCounts;
  private readonly timelines = new Map<string, Timeline>();
  private readonly listeners = new Set<Listener>();
  private readonly backoff = new Backoff();
  private mqtt?: MqttClient;
  private token = "";
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private flushTimer?: ReturnType<typeof setInterval>;
  state: ConnectionState = "offline";

  constructor(private readonly options: ChatClientOptions) {
    this.unread = new UnreadCounts(options.userId);
  }

  on(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async connect(): Promise<void> {
    this.token = await this.options.getToken();
    this.state = "connecting";
    const client = mqtt.connect(this.options.mqttUrl, {
      protocolVersion: 5,
      clientId: `${this.options.userId}:${this.options.device}`,
      username: this.options.userId,
      password: this.token,
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
      reconnectPeriod: 0,
      connectTimeout: 15_000,
    });
    this.mqtt = client;
    client.on("connect", () => void this.online());
    client.on("message", (_topic, payload) => this.receive(payload));
    client.on("close", () => this.offline());
    client.on("error", () => this.offline());
    this.flushTimer ??= setInterval(() => this.flush(), 1_000);
  }

  private async online(): Promise<void> {
    this.state = "online";
    this.backoff.reset();
    this.scheduleRefresh();
    const subs = [topics.user(this.options.userId), ...[...this.timelines.keys()].map(topics.thread)];
    this.mqtt?.subscribe(subs, { qos: 1 });
    // Whatever happened while offline: fetched, merged, nothing twice.
    for (const threadId of this.timelines.keys()) await this.resyncThread(threadId);
    this.outbox.reconnected();
    this.flush();
  }

  private offline(): void {
    if (this.state === "offline") return;
    this.state = "offline";
    this.mqtt?.end(true);
    const delay = this.backoff.next();
    setTimeout(() => void this.connect().catch(() => this.offline()), delay);
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (!exp) return;
    const ahead = (this.options.refreshBeforeSecs ?? 60) * 1000;
    const wait = Math.max(1_000, exp * 1000 - Date.now() - ahead);
    // A new token means a new CONNECT (the password); the session resumes.
    this.refreshTimer = setTimeout(() => {
      this.mqtt?.end(true);
      this.state = "offline";
      void this.connect();
    }, wait);
  }

  private receive(payload: Uint8Array): void {
    const event = decodeServer(payload);
    if (!event) return;
    switch (event.event) {
      case "message_new":
        this.timeline(event.message.thread_id).merge([event.message]);
        this.unread.received(event.message.thread_id, event.message.from, event.message.created_at);
        break;
      case "message_sent_ack":
        this.outbox.acked(event.client_msg_id, event.message_id, event.error, Date.now());
        break;
      case "thread_updated":
        this.unread.server(event.thread);
        break;
      default:
        break;
    }
    for (const listener of this.listeners) listener(event);
  }

  private timeline(threadId: string): Timeline {
    let t = this.timelines.get(threadId);
    if (!t) {
      t = new Timeline();
      this.timelines.set(threadId, t);
    }
    return t;
  }

  /** Starts following a thread: live events plus its history. */
  async open(threadId: string): Promise<Message[]> {
    const fresh = !this.timelines.has(threadId);
    this.timeline(threadId);
    if (fresh) this.mqtt?.subscribe(topics.thread(threadId), { qos: 1 });
    await this.resyncThread(threadId);
    return this.timeline(threadId).messages();
  }

  messages(threadId: string): Message[] {
    return this.timeline(threadId).messages();
  }

  private async resyncThread(threadId: string): Promise<void> {
    await resync(this.timeline(threadId), async (after) => {
      const query = new URLSearchParams({ limit: "50" });
      if (after) query.set("after", after);
      const body = await this.rest(`/chat/threads/${threadId}/messages?${query}`);
      const messages = (body.messages as RestMessage[]).map(messageFromRest);
      return { messages, hasMore: Boolean(body.hasMore) };
    });
  }

  /** Queues a text; it goes now if online, after reconnecting otherwise. */
  send(threadId: string, text: string): OutboxEntry {
    const entry = this.outbox.add({
      clientMsgId: crypto.randomUUID(),
      threadId,
      type: "text",
      content: text,
    });
    this.flush();
    return entry;
  }

  markRead(threadId: string, upTo: string): void {
    this.unread.read(threadId);
    this.mqtt?.publish(topics.threadInbound(threadId), Buffer.from(encodeClient({ event: "mark_read", up_to: upTo })), { qos: 1 });
  }

  typing(threadId: string, active: boolean): void {
    if (this.state !== "online") return;
    this.mqtt?.publish(topics.threadInbound(threadId), Buffer.from(encodeClient({ event: "typing", active })), { qos: 0 });
  }

  private flush(): void {
    if (this.state !== "online" || !this.mqtt) return;
    const now = Date.now();
    for (const entry of this.outbox.due(now)) {
      const payload = encodeClient({
        event: "send_message",
        client_msg_id: entry.clientMsgId,
        type: entry.type,
        content: entry.content,
      });
      this.mqtt.publish(topics.threadInbound(entry.threadId), Buffer.from(payload), { qos: 1 });
      this.outbox.sent(entry.clientMsgId, now);
    }
  }

  /** The inbox: threads, newest activity first; server counts win. */
  async inbox(): Promise<RestThread[]> {
    const body = await this.rest("/chat/threads?limit=50");
    const threads = body.threads as RestThread[];
    for (const t of threads) this.unread.server(threadStateFromRest(t));
    return threads;
  }

  private async rest(path: string): Promise<Record<string, unknown>> {
    const f = this.options.fetch ?? fetch;
    const response = await f(`${this.options.restUrl}${path}`, {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return (await response.json()) as Record<string, unknown>;
  }

  /** Cuts the socket as a network loss would (the client reconnects). */
  dropConnectionForTests(): void {
    this.mqtt?.stream?.destroy();
  }

  close(): void {
    clearTimeout(this.refreshTimer);
    clearInterval(this.flushTimer);
    this.state = "offline";
    this.mqtt?.end(true);
  }
}
