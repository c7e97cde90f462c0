// The Seller Center inbox: every buyer's thread, newest activity first,
// unread badges and a filter, beside the open conversation. Keyboard:
// ↑/↓ (or j/k) move through threads, Enter opens, Esc returns to the list.
// Below 720 px wide it shows the list or the conversation, not both.
// The rows are the SDK's (`client.threads()`): inbox pages from REST, kept
// current by the live `msg`, `read` and `thread` events; a thread it has
// never seen (a new buyer) makes the SDK fetch the inbox again.

import type { ChatClient, RestThread } from "@chat/sdk";
import { ConversationView } from "./conversation.js";
import { h, fill } from "./dom.js";
import { ago, clock, strings, type Lang } from "./i18n.js";
import { inboxCss } from "./styles.js";

export interface InboxOptions {
  client: ChatClient;
  lang: Lang;
  root: HTMLElement;
  /** The platform names a thread's product or order (it owns that data). */
  describe?: (thread: RestThread) => string | undefined;
  /** Shown in the header, e.g. the shop's name. */
  title?: string;
  onLanguage?: () => void;
}

type Filter = "all" | "unread";

/** Threads per inbox page. */
const PAGE = 30;

export class SellerInbox {
  private filter: Filter = "all";
  private selected?: string;
  private conversation?: ConversationView;
  private readonly listEl: HTMLElement;
  private readonly paneEl: HTMLElement;
  private readonly totalEl: HTMLElement;
  private readonly dotEl: HTMLElement;
  private readonly tabs: Record<Filter, HTMLButtonElement>;
  /** Where the next page of older threads starts; none: all loaded. */
  private nextCursor?: string;
  private loadingMore = false;
  private renderQueued = false;

  constructor(private readonly options: InboxOptions) {
    const t = strings(options.lang);
    const style = h("style", {}, inboxCss);
    document.head.appendChild(style);
    this.listEl = h("ul", { class: "inbox-list", role: "listbox", "aria-label": t.inbox, "data-testid": "thread-list", onkeydown: (e: Event) => this.onListKey(e as KeyboardEvent) });
    this.paneEl = h("main", { class: "inbox-pane" }, h("div", { class: "inbox-empty" }, t.pickThread));
    this.totalEl = h("span", { class: "chat-badge", "data-testid": "total-unread", hidden: true });
    this.dotEl = h("span", { class: "inbox-dot", "data-testid": "connection-dot", title: t.connecting });
    this.tabs = {
      all: h("button", { type: "button", class: "inbox-tab", "aria-pressed": "true", onclick: () => this.setFilter("all") }, t.all),
      unread: h("button", { type: "button", class: "inbox-tab", "data-testid": "filter-unread", onclick: () => this.setFilter("unread") }, t.unread),
    };
    fill(
      options.root,
      h(
        "div",
        { class: "inbox" },
        h(
          "header",
          { class: "inbox-top" },
          h("strong", {}, t.sellerCenter),
          h("span", { class: "inbox-title" }, options.title ?? t.inbox),
          this.totalEl,
          h("span", { class: "inbox-spacer" }),
          this.dotEl,
          options.onLanguage ? h("button", { type: "button", class: "inbox-lang", onclick: () => options.onLanguage?.() }, t.language) : null,
        ),
        h("aside", { class: "inbox-side" }, h("div", { class: "inbox-tabs" }, this.tabs.all, this.tabs.unread), this.listEl, h("div", { class: "inbox-hint" }, t.keyboardHint)),
        this.paneEl,
      ),
    );
    this.listEl.addEventListener("scroll", () => {
      const el = this.listEl;
      if (el.scrollHeight - el.scrollTop - el.clientHeight < 80) void this.loadMore();
    });
    options.client.onChange((change) => {
      if (change.kind === "unread" || change.kind === "inbox") this.scheduleList();
      if (change.kind === "state") this.renderDot();
    });
    options.root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.selected) this.backToList();
    });
  }

  async start(): Promise<void> {
    this.renderDot();
    await this.reload();
  }

  private async reload(): Promise<void> {
    const page = await this.options.client.inboxPage(undefined, PAGE);
    this.nextCursor = page.nextCursor;
    this.renderList();
  }

  /** Infinite scroll of the thread list: the next page of older threads. */
  private async loadMore(): Promise<void> {
    if (!this.nextCursor || this.loadingMore) return;
    this.loadingMore = true;
    try {
      const page = await this.options.client.inboxPage(this.nextCursor, PAGE);
      this.nextCursor = page.nextCursor;
      this.renderList();
    } finally {
      this.loadingMore = false;
    }
  }

  /** One render for a burst of changes (an inbox page changes every row). */
  private scheduleList(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      this.renderList();
    });
  }

  private setFilter(filter: Filter): void {
    this.filter = filter;
    this.tabs.all.setAttribute("aria-pressed", String(filter === "all"));
    this.tabs.unread.setAttribute("aria-pressed", String(filter === "unread"));
    this.renderList();
  }

  private renderDot(): void {
    const t = strings(this.options.lang);
    const state = this.options.client.state;
    this.dotEl.dataset.state = state;
    this.dotEl.title = state === "online" ? t.connected : state === "connecting" ? t.connecting : t.offline;
    this.dotEl.textContent = state === "online" ? "" : this.dotEl.title;
  }

  private renderList(): void {
    const { client, lang } = this.options;
    const t = strings(lang);
    const shown = client.threads().filter((thread) => this.filter === "all" || client.unread.count(thread.id) > 0);
    const total = client.unread.total();
    this.totalEl.hidden = total === 0;
    this.totalEl.textContent = total > 99 ? "99+" : String(total);
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.threadId;
    if (shown.length === 0) {
      fill(this.listEl, h("li", { class: "inbox-none" }, this.filter === "unread" ? t.noUnread : t.noThreads));
      return;
    }
    fill(
      this.listEl,
      shown.map((thread) => {
        const unread = client.unread.count(thread.id);
        const name = thread.otherDisplayName ?? thread.otherUserId;
        const last = thread.lastMessage;
        const preview = last ? `${last.from === client.userId ? `${t.you}: ` : ""}${last.type === "image" ? t.image : last.text}` : "";
        const context = this.options.describe?.(thread) ?? (thread.orderId ? `${t.order} ${thread.orderId}` : thread.productId ? `${t.product} ${thread.productId}` : "");
        return h(
          "li",
          {
            class: `inbox-item${thread.id === this.selected ? " selected" : ""}${unread > 0 ? " unread" : ""}`,
            role: "option",
            tabindex: 0,
            "aria-selected": String(thread.id === this.selected),
            "data-testid": "thread",
            "data-thread-id": thread.id,
            onclick: () => void this.select(thread.id),
          },
          h("div", { class: "chat-avatar", "aria-hidden": "true" }, name.slice(0, 1).toUpperCase(), thread.otherOnline ? h("span", { class: "inbox-online" }) : null),
          h(
            "div",
            { class: "inbox-item-body" },
            h("div", { class: "inbox-item-top" }, h("span", { class: "inbox-name", "data-testid": "buyer-name" }, name), h("time", {}, thread.lastMessageAt ? clock(lang, thread.lastMessageAt) : "")),
            context ? h("div", { class: "inbox-context" }, context) : null,
            h("div", { class: "inbox-item-bottom" }, h("span", { class: "inbox-preview" }, preview), unread > 0 ? h("span", { class: "chat-badge", "data-testid": "unread-badge" }, client.unread.label(thread.id)) : null),
          ),
        );
      }),
    );
    if (focused) (this.listEl.querySelector(`[data-thread-id="${CSS.escape(focused)}"]`) as HTMLElement | null)?.focus();
    // A tall screen may show a whole page without a scroll bar: load on.
    if (this.nextCursor && this.listEl.scrollHeight <= this.listEl.clientHeight) void this.loadMore();
  }

  private async select(threadId: string): Promise<void> {
    const thread = this.options.client.threads().find((t) => t.id === threadId);
    if (!thread) return;
    this.options.root.querySelector(".inbox")?.classList.add("show-conversation");
    if (this.selected === threadId && this.conversation) {
      this.conversation.setActive(true);
      this.conversation.focus();
      return;
    }
    this.selected = threadId;
    this.conversation?.destroy();
    const t = strings(this.options.lang);
    const name = thread.otherDisplayName ?? thread.otherUserId;
    const presence = thread.otherOnline ? t.online : thread.otherLastSeen ? t.lastSeen(ago(this.options.lang, thread.otherLastSeen)) : "";
    const context = this.options.describe?.(thread);
    const header = h(
      "header",
      { class: "chat-header" },
      h(
        "button",
        {
          class: "chat-icon-btn inbox-back",
          type: "button",
          "aria-label": t.back,
          onclick: () => this.backToList(),
        },
        "←",
      ),
      h("div", { class: "chat-avatar", "aria-hidden": "true" }, name.slice(0, 1).toUpperCase()),
      h("div", { class: "chat-header-text" }, h("div", { class: "chat-header-name", "data-testid": "peer-name" }, name), h("div", { class: "chat-header-sub" }, [presence, context].filter(Boolean).join(" · "))),
    );
    this.conversation = new ConversationView({ client: this.options.client, thread, lang: this.options.lang, header });
    fill(this.paneEl, this.conversation.element);
    this.renderList();
    await this.conversation.start();
    this.conversation.focus();
  }

  /** On a phone the list hides the conversation: it stops marking read. */
  private backToList(): void {
    const inbox = this.options.root.querySelector(".inbox");
    inbox?.classList.remove("show-conversation");
    if (window.matchMedia("(max-width: 720px)").matches) this.conversation?.setActive(false);
    this.focusSelected();
  }

  private focusSelected(): void {
    const el = this.selected ? this.listEl.querySelector(`[data-thread-id="${CSS.escape(this.selected)}"]`) : this.listEl.querySelector("[data-thread-id]");
    (el as HTMLElement | null)?.focus();
  }

  private onListKey(e: KeyboardEvent): void {
    const items = [...this.listEl.querySelectorAll<HTMLElement>("[data-thread-id]")];
    const at = items.indexOf(document.activeElement as HTMLElement);
    if (e.key === "ArrowDown" || e.key === "j") items[Math.min(items.length - 1, at + 1)]?.focus();
    else if (e.key === "ArrowUp" || e.key === "k") items[Math.max(0, at - 1)]?.focus();
    else if (e.key === "Enter" && at >= 0) void this.select(items[at]!.dataset.threadId!);
    else return;
    e.preventDefault();
  }
}
