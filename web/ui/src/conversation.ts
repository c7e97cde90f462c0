// One conversation: history with infinite scroll, live messages, typing,
// read receipts, delivery state of one's own messages, image sending with
// preview and progress, and the composer. Shared by the widget and the
// Seller Center inbox.

import { topics, type Card, type ChatClient, type Message, type RestThread, type ServerEvent } from "@chat/sdk";
import { h, fill } from "./dom.js";
import { clock, price, strings, type Lang } from "./i18n.js";

/** How long a typing indicator lasts without a refresh from its sender. */
const TYPING_SHOWN_MS = 6_000;
/** How often "still typing" is repeated while the user types. */
const TYPING_REPEAT_MS = 3_000;
const TYPING_IDLE_MS = 4_000;

export interface ConversationOptions {
  client: ChatClient;
  thread: RestThread;
  lang: Lang;
  /** Shown above the messages (names, context, close button). */
  header?: HTMLElement;
}

export class ConversationView {
  readonly element: HTMLElement;
  private readonly list: HTMLElement;
  private readonly typingLine: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly fileInput: HTMLInputElement;
  private readonly unsubscribe: (() => void)[] = [];
  private typingUntil = 0;
  private typingTimer?: ReturnType<typeof setTimeout>;
  private sentTypingAt = 0;
  private idleTimer?: ReturnType<typeof setTimeout>;
  private loadingOlder = false;
  private active = true;
  private lang: Lang;

  constructor(private readonly options: ConversationOptions) {
    this.lang = options.lang;
    const t = strings(this.lang);
    this.list = h("div", { class: "chat-messages", role: "log", "aria-live": "polite", "data-testid": "messages" });
    this.typingLine = h("div", { class: "chat-typing", "data-testid": "typing", hidden: true });
    this.banner = h("div", { class: "chat-banner", "data-testid": "connection", role: "status" });
    this.notice = h("div", { class: "chat-notice", role: "alert", hidden: true });
    this.input = h("textarea", {
      class: "chat-input",
      rows: 1,
      placeholder: t.placeholder,
      "aria-label": t.placeholder,
      "data-testid": "composer",
      onkeydown: (e: Event) => this.onKey(e as KeyboardEvent),
      oninput: () => this.onInput(),
    });
    this.fileInput = h("input", {
      type: "file",
      accept: "image/jpeg,image/png,image/webp",
      hidden: true,
      "data-testid": "image-input",
      onchange: () => this.onFile(),
    });
    const composer = h(
      "div",
      { class: "chat-composer" },
      h("button", { class: "chat-icon-btn", type: "button", title: t.sendImage, "aria-label": t.sendImage, onclick: () => this.fileInput.click() }, "🖼"),
      this.fileInput,
      this.input,
      h("button", { class: "chat-send", type: "button", "data-testid": "send", onclick: () => this.submit() }, t.send),
    );
    this.element = h(
      "section",
      { class: "chat-conversation", "data-thread": options.thread.id },
      options.header,
      this.banner,
      this.list,
      this.typingLine,
      this.notice,
      composer,
    );
    this.list.addEventListener("scroll", () => this.onScroll());
    const { client } = options;
    this.unsubscribe.push(
      client.onChange((change) => {
        if (change.kind === "state") this.renderBanner();
        else if (change.kind === "refused" && change.threadId === options.thread.id) {
          // Refused by its PUBACK or an `ack`: the server's text, in the user's language.
          const t = strings(this.lang);
          this.showNotice(change.error.msg ? `${t.failed}: ${change.error.msg}` : t.failed);
          this.render();
        } else if ("threadId" in change && change.threadId === options.thread.id && change.kind !== "unread") this.render();
      }),
      client.on((event) => this.onEvent(event)),
    );
    const visible = () => this.maybeMarkRead();
    document.addEventListener("visibilitychange", visible);
    window.addEventListener("focus", visible);
    this.unsubscribe.push(() => {
      document.removeEventListener("visibilitychange", visible);
      window.removeEventListener("focus", visible);
    });
    this.renderBanner();
    this.render();
  }

  /** Loads the newest history and follows the thread. */
  async start(): Promise<void> {
    await this.options.client.open(this.options.thread.id);
    this.render(true);
  }

  focus(): void {
    this.input.focus();
  }

  /** Only an active (visible) conversation marks messages read. */
  setActive(active: boolean): void {
    this.active = active;
    if (active) this.maybeMarkRead();
  }

  destroy(): void {
    this.sendTyping(false);
    for (const off of this.unsubscribe) off();
    clearTimeout(this.typingTimer);
    clearTimeout(this.idleTimer);
    this.element.remove();
  }

  private get me(): string {
    return this.options.client.userId;
  }

  private get otherName(): string {
    const { thread } = this.options;
    return thread.otherDisplayName ?? thread.otherUserId;
  }

  private onEvent(event: ServerEvent): void {
    const threadId = this.options.thread.id;
    if (event.e === "typing" && event.th === threadId && event.u !== this.me) {
      this.typingUntil = event.on ? Date.now() + TYPING_SHOWN_MS : 0;
      this.renderTyping();
    } else if (event.e === "msg" && event.th === threadId && event.f !== undefined && event.f !== this.me) {
      // A message ends the sender's typing.
      this.typingUntil = 0;
      this.renderTyping();
    } else if (event.e === "masked" && event.th === threadId) {
      this.showNotice(event.msg);
    } else if (event.e === "error" && event.topic === topics.thread(threadId)) {
      this.showNotice(event.msg);
    }
  }

  private showNotice(text: string): void {
    this.notice.textContent = text;
    this.notice.hidden = false;
    setTimeout(() => (this.notice.hidden = true), 8_000);
  }

  private renderBanner(): void {
    const t = strings(this.lang);
    const state = this.options.client.state;
    this.banner.dataset.state = state;
    this.banner.textContent = state === "online" ? "" : state === "connecting" ? t.connecting : t.offline;
    this.banner.hidden = state === "online";
  }

  private renderTyping(): void {
    const showing = this.typingUntil > Date.now();
    this.typingLine.hidden = !showing;
    this.typingLine.textContent = showing ? strings(this.lang).typing(this.otherName) : "";
    clearTimeout(this.typingTimer);
    if (showing) this.typingTimer = setTimeout(() => this.renderTyping(), this.typingUntil - Date.now() + 10);
  }

  private render(scrollToEnd = false): void {
    const { client, thread } = this.options;
    const t = strings(this.lang);
    const atEnd = scrollToEnd || this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    const fromBottom = this.list.scrollHeight - this.list.scrollTop;
    const messages = client.messages(thread.id);
    const stored = new Set(messages.map((m) => m.clientMsgId).filter(Boolean));
    const pending = client.pending(thread.id);
    const seenUpTo = client.readUpTo(thread.id, thread.otherUserId);
    const lastOwn = [...messages].reverse().find((m) => m.from === this.me);
    const rows: HTMLElement[] = [];
    rows.push(
      h("div", { class: "chat-history-edge", "data-testid": "history-edge" }, client.hasOlder(thread.id) ? (this.loadingOlder ? t.loadingOlder : "") : t.beginning),
    );
    let lastDay = "";
    for (const m of messages) {
      const day = new Date(m.createdAt).toLocaleDateString(this.lang === "en" ? "en-GB" : "vi-VN");
      if (day !== lastDay) {
        rows.push(h("div", { class: "chat-day" }, day));
        lastDay = day;
      }
      let status: string | undefined;
      if (m === lastOwn) status = seenUpTo !== undefined && seenUpTo >= m.id ? t.seen : t.sent;
      rows.push(this.messageRow(m, status));
    }
    for (const image of pending.images) {
      rows.push(
        h(
          "div",
          { class: "chat-row mine pending", "data-testid": "pending-image" },
          h(
            "div",
            { class: "chat-bubble image" },
            image.previewUrl ? h("img", { src: image.previewUrl, alt: "", class: "chat-thumb" }) : null,
            h("progress", { max: 1, value: image.progress, "data-testid": "upload-progress" }),
          ),
          h(
            "div",
            { class: "chat-status" },
            image.state === "failed" ? `${t.failed}: ${image.error ?? ""}` : t.uploading,
            image.state === "failed" ? this.dismissButton(image.clientMsgId) : null,
          ),
        ),
      );
    }
    for (const entry of pending.outbox) {
      if (stored.has(entry.clientMsgId)) continue;
      const failed = entry.state === "failed";
      rows.push(
        h(
          "div",
          { class: `chat-row mine pending${failed ? " failed" : ""}`, "data-testid": "pending" },
          h("div", { class: "chat-bubble" }, entry.type === "image" ? t.image : entry.content),
          h("div", { class: "chat-status" }, failed ? (entry.error?.msg ? `${t.failed}: ${entry.error.msg}` : t.failed) : t.sending, failed ? this.dismissButton(entry.clientMsgId) : null),
        ),
      );
    }
    fill(this.list, rows);
    if (atEnd) this.list.scrollTop = this.list.scrollHeight;
    else this.list.scrollTop = this.list.scrollHeight - fromBottom;
    this.maybeMarkRead();
  }

  private dismissButton(clientMsgId: string): HTMLElement {
    return h("button", { class: "chat-link", type: "button", onclick: () => this.options.client.discard(this.options.thread.id, clientMsgId) }, strings(this.lang).dismiss);
  }

  private messageRow(m: Message, status: string | undefined): HTMLElement {
    const mine = m.from === this.me;
    if (m.type === "system" || m.from === "") {
      return h("div", { class: "chat-row system", "data-testid": "system" }, m.card ? cardView(this.lang, m.card) : h("div", { class: "chat-system" }, m.content));
    }
    const body =
      m.card?.card === "image"
        ? h(
            "a",
            { href: m.card.url ?? "#", target: "_blank", rel: "noopener", class: "chat-image-link" },
            h("img", {
              class: "chat-thumb",
              src: m.card.thumb_url ?? "",
              // Sized before it loads, so the list does not jump.
              style: thumbSize(m.card.thumb_width, m.card.thumb_height),
              alt: strings(this.lang).image,
              "data-testid": "image",
            }),
          )
        : h("span", { class: "chat-text" }, m.content);
    return h(
      "div",
      { class: `chat-row ${mine ? "mine" : "theirs"}`, "data-testid": "message", "data-id": m.id },
      h("div", { class: `chat-bubble${m.card?.card === "image" ? " image" : ""}` }, body, h("time", { class: "chat-time" }, clock(this.lang, m.createdAt))),
      status ? h("div", { class: "chat-status", "data-testid": "receipt" }, status) : null,
    );
  }

  private maybeMarkRead(): void {
    if (!this.active || document.visibilityState === "hidden") return;
    const { client, thread } = this.options;
    const messages = client.messages(thread.id);
    const newest = messages[messages.length - 1];
    if (!newest) return;
    const mine = client.readUpTo(thread.id, this.me);
    const hasUnreadFromOther = messages.some((m) => m.from !== this.me && m.from !== "" && (mine === undefined || m.id > mine));
    if (hasUnreadFromOther || client.unread.count(thread.id) > 0) client.markRead(thread.id, newest.id);
  }

  private async onScroll(): Promise<void> {
    const { client, thread } = this.options;
    if (this.list.scrollTop > 60 || this.loadingOlder || !client.hasOlder(thread.id)) return;
    this.loadingOlder = true;
    try {
      await client.loadOlder(thread.id);
    } finally {
      this.loadingOlder = false;
      this.render();
    }
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    }
  }

  private onInput(): void {
    const now = Date.now();
    if (now - this.sentTypingAt > TYPING_REPEAT_MS) this.sendTyping(true);
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.sendTyping(false), TYPING_IDLE_MS);
  }

  private sendTyping(active: boolean): void {
    if (!active && this.sentTypingAt === 0) return;
    this.sentTypingAt = active ? Date.now() : 0;
    this.options.client.typing(this.options.thread.id, active);
  }

  private submit(): void {
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = "";
    clearTimeout(this.idleTimer);
    this.sendTyping(false);
    this.options.client.send(this.options.thread.id, text);
    this.render(true);
  }

  private onFile(): void {
    const file = this.fileInput.files?.[0];
    this.fileInput.value = "";
    if (!file) return;
    void this.options.client.sendImage(this.options.thread.id, file);
    this.render(true);
  }
}

const THUMB_BOX = 220;

function thumbSize(width: number, height: number): string {
  const scale = Math.min(1, THUMB_BOX / Math.max(1, width), THUMB_BOX / Math.max(1, height));
  return `width:${Math.round(width * scale)}px;height:${Math.round(height * scale)}px`;
}

/** Product, order and notice cards, as the thread shows them. */
export function cardView(lang: Lang, card: Card): HTMLElement {
  const t = strings(lang);
  switch (card.card) {
    case "product":
      return h(
        "div",
        { class: "chat-card", "data-testid": "product-card" },
        card.image_url ? h("img", { src: card.image_url, alt: "", class: "chat-card-img" }) : null,
        h("div", {}, h("div", { class: "chat-card-kicker" }, t.product), h("div", { class: "chat-card-title" }, card.title), h("div", { class: "chat-card-price" }, price(lang, card.price, card.currency))),
      );
    case "order":
      return h(
        "div",
        { class: "chat-card", "data-testid": "order-card" },
        h("div", { class: "chat-card-icon" }, "📦"),
        h("div", {}, h("div", { class: "chat-card-kicker" }, `${t.order} ${card.order_id}`), h("div", { class: "chat-card-title" }, card.summary)),
      );
    case "notice":
      return h("div", { class: "chat-system", "data-code": card.code }, card.text);
    case "image":
      return h("img", { class: "chat-thumb", src: card.thumb_url ?? "", alt: t.image });
  }
}
