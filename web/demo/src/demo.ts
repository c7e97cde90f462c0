// The demo storefront's pages: who is who (index), a product page and an
// order page with the chat widget, and Seller Center. A real platform
// does what this file does with its own login: fetch a chat token for the
// signed-in user and hand the widget or inbox a ChatClient.

import type * as Kit from "./chat-ui.js";

declare const ChatUI: typeof Kit;

type Lang = "vi" | "en";

interface DemoUser {
  id: string;
  displayName: string;
  role: "buyer" | "seller";
  locale: string;
}
interface DemoProduct {
  id: string;
  sellerId: string;
  title: string;
  price: number;
  currency: string;
  imageUrl: string | null;
}
interface DemoOrder {
  id: string;
  buyerId: string;
  sellerId: string;
  summary: string;
}
interface Catalog {
  users: DemoUser[];
  products: DemoProduct[];
  orders: DemoOrder[];
}
interface Session {
  token: string;
  userId: string;
  role: string;
  displayName: string;
  locale: string;
  mqttUrl: string;
  restUrl: string;
}

const T = {
  vi: {
    title: "Cửa hàng demo",
    intro: "Mở hai cửa sổ: một cửa sổ là người mua (trang sản phẩm hoặc đơn hàng), cửa sổ kia là Kênh Người Bán của shop. Nhắn tin qua lại.",
    buyers: "Người mua",
    sellers: "Người bán",
    productsOf: "Sản phẩm",
    ordersOf: "Đơn hàng",
    openSellerCenter: "Mở Kênh Người Bán",
    signedInAs: "Đang dùng tài khoản",
    switchUser: "Đổi người dùng",
    chatNow: "Chat ngay",
    contactShop: "Liên hệ Shop",
    soldBy: "Bán bởi",
    buy: "Mua ngay",
    orderTitle: "Chi tiết đơn hàng",
    status: "Trạng thái: Đang giao",
    notFound: "Không tìm thấy",
    language: "English",
    asBuyer: "với tư cách",
  },
  en: {
    title: "Demo store",
    intro: "Open two windows: one as a buyer (a product or an order page), the other as the shop's Seller Center. Chat between them.",
    buyers: "Buyers",
    sellers: "Sellers",
    productsOf: "Products",
    ordersOf: "Orders",
    openSellerCenter: "Open Seller Center",
    signedInAs: "Signed in as",
    switchUser: "Switch user",
    chatNow: "Chat now",
    contactShop: "Contact the shop",
    soldBy: "Sold by",
    buy: "Buy now",
    orderTitle: "Order details",
    status: "Status: on its way",
    notFound: "Not found",
    language: "Tiếng Việt",
    asBuyer: "as",
  },
};

const params = new URLSearchParams(location.search);

/** The language chosen on this page or before; else the user's locale. */
let userLocale: string | undefined;

function lang(): Lang {
  const chosen = params.get("lang") ?? localStorage.getItem("chat-demo-lang") ?? userLocale;
  return chosen?.startsWith("en") ? "en" : "vi";
}

function toggleLanguage(): void {
  localStorage.setItem("chat-demo-lang", lang() === "vi" ? "en" : "vi");
  params.delete("lang");
  location.search = params.toString();
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

async function json<T>(path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, body === undefined ? {} : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return (await response.json()) as T;
}

/** One MQTT session per browser tab, so two tabs of one user coexist. */
function device(): string {
  let id = sessionStorage.getItem("chat-demo-device");
  if (!id) {
    id = `web-${Math.random().toString(36).slice(2, 10)}`;
    sessionStorage.setItem("chat-demo-device", id);
  }
  return id;
}

async function client(userId: string): Promise<InstanceType<typeof ChatUI.ChatClient>> {
  const first = await json<Session>("/demo/api/session", { userId });
  let token: string | undefined = first.token;
  const c = new ChatUI.ChatClient({
    mqttUrl: first.mqttUrl,
    restUrl: first.restUrl,
    userId,
    device: device(),
    // Unsent messages survive a reload of this tab (same device id).
    storage: sessionStorage,
    // The first token, then a fresh one at every refresh (before `exp`).
    getToken: async () => {
      const t = token ?? (await json<Session>("/demo/api/session", { userId })).token;
      token = undefined;
      return t;
    },
  });
  await c.connect();
  return c;
}

function topBar(user: DemoUser | undefined): HTMLElement {
  const t = T[lang()];
  return el(
    "nav",
    { class: "demo-bar" },
    el("a", { href: "./", class: "demo-brand" }, "🛒 ", t.title),
    el("span", { class: "demo-spacer" }),
    user ? el("span", { "data-testid": "signed-in" }, `${t.signedInAs}: `, el("strong", {}, user.displayName)) : "",
    user ? el("a", { href: "./" }, t.switchUser) : "",
    languageButton(),
  );
}

function languageButton(): HTMLElement {
  const b = el("button", { type: "button", class: "demo-lang" }, T[lang()].language);
  b.addEventListener("click", toggleLanguage);
  return b;
}

function link(href: string, text: string, testId?: string): HTMLElement {
  return el("a", testId ? { href, "data-testid": testId } : { href }, text);
}

function money(amount: number, currency: string): string {
  return ChatUI.price(lang(), amount, currency);
}

async function indexPage(root: HTMLElement, catalog: Catalog): Promise<void> {
  const t = T[lang()];
  const buyers = catalog.users.filter((u) => u.role === "buyer");
  const sellers = catalog.users.filter((u) => u.role === "seller");
  root.append(
    topBar(undefined),
    el(
      "main",
      { class: "demo-main" },
      el("h1", {}, t.title),
      el("p", { class: "demo-intro" }, t.intro),
      el(
        "section",
        { class: "demo-cols" },
        el(
          "div",
          { class: "demo-card" },
          el("h2", {}, t.buyers),
          ...buyers.map((b) =>
            el(
              "div",
              { class: "demo-persona" },
              el("strong", {}, b.displayName),
              el(
                "ul",
                {},
                ...catalog.products.map((p) => el("li", {}, link(`product.html?id=${p.id}&as=${b.id}`, p.title, `product-${p.id}-${b.id}`))),
                ...catalog.orders.filter((o) => o.buyerId === b.id).map((o) => el("li", {}, link(`order.html?id=${o.id}&as=${b.id}`, o.summary, `order-${o.id}`))),
              ),
            ),
          ),
        ),
        el(
          "div",
          { class: "demo-card" },
          el("h2", {}, t.sellers),
          ...sellers.map((s) => el("div", { class: "demo-persona" }, el("strong", {}, s.displayName), " ", link(`seller.html?as=${s.id}`, t.openSellerCenter, `seller-${s.id}`))),
        ),
      ),
    ),
  );
}

async function productPage(root: HTMLElement, catalog: Catalog, me: DemoUser): Promise<void> {
  const t = T[lang()];
  const product = catalog.products.find((p) => p.id === params.get("id"));
  const seller = catalog.users.find((u) => u.id === product?.sellerId);
  root.append(topBar(me));
  if (!product || !seller) {
    root.append(el("main", { class: "demo-main" }, t.notFound));
    return;
  }
  const chatButton = el("button", { type: "button", class: "demo-chat", "data-testid": "chat-with-shop" }, "💬 ", t.chatNow);
  root.append(
    el(
      "main",
      { class: "demo-main demo-product" },
      el("img", { src: product.imageUrl ?? "", alt: product.title, class: "demo-product-img" }),
      el(
        "div",
        {},
        el("h1", {}, product.title),
        el("div", { class: "demo-price" }, money(product.price, product.currency)),
        el("p", {}, `${t.soldBy} `, el("strong", {}, seller.displayName)),
        el("div", { class: "demo-actions" }, el("button", { type: "button", class: "demo-buy" }, t.buy), chatButton),
      ),
    ),
  );
  const widget = new ChatUI.ChatWidget({ client: await client(me.id), lang: lang() });
  chatButton.addEventListener("click", () => void widget.open({ sellerId: seller.id, productId: product.id }));
}

async function orderPage(root: HTMLElement, catalog: Catalog, me: DemoUser): Promise<void> {
  const t = T[lang()];
  const order = catalog.orders.find((o) => o.id === params.get("id"));
  const seller = catalog.users.find((u) => u.id === order?.sellerId);
  root.append(topBar(me));
  if (!order || !seller) {
    root.append(el("main", { class: "demo-main" }, t.notFound));
    return;
  }
  const contact = el("button", { type: "button", class: "demo-chat", "data-testid": "contact-shop" }, "💬 ", t.contactShop);
  root.append(
    el(
      "main",
      { class: "demo-main" },
      el("h1", {}, t.orderTitle),
      el("div", { class: "demo-card" }, el("p", {}, el("strong", {}, order.summary)), el("p", {}, t.status), el("p", {}, `${t.soldBy} `, el("strong", {}, seller.displayName)), contact),
    ),
  );
  const widget = new ChatUI.ChatWidget({ client: await client(me.id), lang: lang() });
  contact.addEventListener("click", () => void widget.open({ orderId: order.id }));
}

async function sellerPage(root: HTMLElement, catalog: Catalog, me: DemoUser): Promise<void> {
  const describe = (thread: { productId: string | null; orderId: string | null }) => {
    if (thread.orderId) return catalog.orders.find((o) => o.id === thread.orderId)?.summary;
    const product = catalog.products.find((p) => p.id === thread.productId);
    return product ? `🛍 ${product.title}` : undefined;
  };
  const inbox = new ChatUI.SellerInbox({ client: await client(me.id), lang: lang(), root, describe, title: me.displayName, onLanguage: toggleLanguage });
  await inbox.start();
}

async function main(): Promise<void> {
  const root = document.getElementById("app")!;
  const catalog = await json<Catalog>("/demo/api/catalog");
  const page = document.body.dataset.page;
  const me = catalog.users.find((u) => u.id === params.get("as"));
  userLocale = me?.locale;
  document.documentElement.lang = lang();
  if (page === "index") return indexPage(root, catalog);
  if (!me) {
    location.href = "./";
    return;
  }
  if (page === "product") return productPage(root, catalog, me);
  if (page === "order") return orderPage(root, catalog, me);
  if (page === "seller") return sellerPage(root, catalog, me);
}

main().catch((e) => {
  document.getElementById("app")?.append(el("pre", { class: "demo-error", role: "alert" }, String(e)));
});
