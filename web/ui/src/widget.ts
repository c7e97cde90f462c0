// The embeddable chat widget: a launcher button and a panel, inside a
// shadow root so the host page's CSS and ours never meet. A product page
// opens it with {sellerId, productId}, an order page with {orderId}; the
// server finds or creates the one thread and adds the product/order card.

import { RestError, type ChatClient, type OpenTarget, type RestThread } from "@chat/sdk";
import { ConversationView } from "./conversation.js";
import { h } from "./dom.js";
import { ago, strings, type Lang } from "./i18n.js";
import { widgetCss } from "./styles.js";

export interface WidgetOptions {
  client: ChatClient;
  lang: Lang;
  /** Where the widget's host element goes (default: document.body). */
  container?: HTMLElement;
}

export class ChatWidget {
  readonly host: HTMLElement;
  private readonly root: ShadowRoot;
  private readonly panel: HTMLElement;
  private readonly badge: HTMLElement;
  private conversation?: ConversationView;
  private lastTarget?: OpenTarget;

  constructor(private readonly options: WidgetOptions) {
    const t = strings(options.lang);
    this.host = h("div", { class: "chat-widget-host", "data-testid": "chat-widget" });
    this.root = this.host.attachShadow({ mode: "open" });
    this.badge = h("span", { class: "chat-badge", "data-testid": "widget-unread", hidden: true });
    this.panel = h("div", { class: "chat-panel", hidden: true, role: "dialog", "aria-label": t.chat });
    const launcher = h(
      "button",
      { class: "chat-launcher", type: "button", "data-testid": "launcher", onclick: () => this.toggle() },
      h("span", { "aria-hidden": "true" }, "💬"),
      ` ${t.chat}`,
      this.badge,
    );
    this.root.append(h("style", {}, widgetCss), launcher, this.panel);
    (options.container ?? document.body).appendChild(this.host);
    options.client.onChange((change) => {
      if (change.kind === "unread") this.renderBadge();
    });
    // The badge counts every thread of the user, not only this page's.
    void options.client.inbox().then(() => this.renderBadge(), () => undefined);
  }

  /** Opens (or resumes) the thread for a product or an order and shows it. */
  async open(target: OpenTarget): Promise<RestThread> {
    const t = strings(this.options.lang);
    this.lastTarget = target;
    this.panel.hidden = false;
    let thread: RestThread;
    try {
      thread = await this.options.client.openThread(target);
    } catch (e) {
      this.panel.replaceChildren(
        this.header(t.chat),
        h("div", { class: "chat-error", role: "alert" }, e instanceof RestError ? e.message : String(e), " ", h("button", { class: "chat-link", type: "button", onclick: () => void this.open(target) }, t.loadFailed)),
      );
      throw e;
    }
    if (this.conversation?.element.dataset.thread !== thread.id) {
      this.conversation?.destroy();
      this.conversation = new ConversationView({
        client: this.options.client,
        thread,
        lang: this.options.lang,
        header: this.header(thread.otherDisplayName ?? thread.otherUserId, thread),
      });
      this.panel.replaceChildren(this.conversation.element);
      await this.conversation.start();
    }
    this.conversation.setActive(true);
    this.conversation.focus();
    return thread;
  }

  close(): void {
    this.panel.hidden = true;
    this.conversation?.setActive(false);
  }

  private toggle(): void {
    if (!this.panel.hidden) return this.close();
    if (this.conversation) {
      this.panel.hidden = false;
      this.conversation.setActive(true);
      this.conversation.focus();
    } else if (this.lastTarget) {
      void this.open(this.lastTarget);
    }
  }

  private header(name: string, thread?: RestThread): HTMLElement {
    const t = strings(this.options.lang);
    const presence = thread ? (thread.otherOnline ? t.online : thread.otherLastSeen ? t.lastSeen(ago(this.options.lang, thread.otherLastSeen)) : "") : "";
    return h(
      "header",
      { class: "chat-header" },
      h("div", { class: "chat-avatar", "aria-hidden": "true" }, name.slice(0, 1).toUpperCase()),
      h("div", { class: "chat-header-text" }, h("div", { class: "chat-header-name", "data-testid": "peer-name" }, name), h("div", { class: "chat-header-sub" }, presence)),
      h("button", { class: "chat-icon-btn", type: "button", title: t.close, "aria-label": t.close, "data-testid": "close", onclick: () => this.close() }, "✕"),
    );
  }

  private renderBadge(): void {
    const total = this.options.client.unread.total();
    this.badge.hidden = total === 0;
    this.badge.textContent = total > 99 ? "99+" : String(total);
  }
}
