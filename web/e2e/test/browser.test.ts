// The demo storefront in real Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core; no browser is ever downloaded) against a real chatd.
// Run by the Rust end-to-end test `tests/e2e/web_browser.rs`, which starts
// chatd with the demo on and passes its address in CHAT_E2E_URL; skipped
// when run on its own (`npm test`), as there is no server then.
//
// Screenshots go to CHAT_E2E_SHOTS (the Rust test points it at target/;
// `CHAT_UPDATE_SCREENSHOTS=1` there writes docs/screenshots/ instead).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

const base = process.env.CHAT_E2E_URL;
const shots = process.env.CHAT_E2E_SHOTS ?? join(process.cwd(), "screenshots");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

async function until<T>(what: string, check: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The texts of the message bubbles, in page order. */
async function texts(page: Page): Promise<string[]> {
  return page.locator('[data-testid="message"] .chat-text').allTextContents();
}

/** The MQTT packets a page sends over its WebSockets, as raw bytes. */
function sentFrames(page: Page): Buffer[] {
  const frames: Buffer[] = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => frames.push(Buffer.isBuffer(f.payload) ? f.payload : Buffer.from(f.payload))));
  return frames;
}

/** The options byte of the SUBSCRIBE to `topic` in `frames`, if any. */
function subscribeOptions(frames: Buffer[], topic: string): number | undefined {
  const name = Buffer.from(topic);
  for (const f of frames) {
    if (f[0] !== 0x82) continue; // SUBSCRIBE
    const at = f.indexOf(name);
    if (at >= 2 && f.readUInt16BE(at - 2) === name.length) return f[at + name.length];
  }
  return undefined;
}

async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

describe.skipIf(!base)("the demo storefront in Chromium", () => {
  let browser: Browser;
  let buyerContext: BrowserContext;
  let sellerContext: BrowserContext;
  let buyer: Page;
  let seller: Page;

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      // No network beyond loopback here: Chromium must not try to reach Google.
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    buyerContext = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "vi-VN" });
    sellerContext = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "vi-VN" });
    buyer = await buyerContext.newPage();
    seller = await sellerContext.newPage();
    for (const [who, page] of [["buyer", buyer], ["seller", seller]] as const) {
      page.on("pageerror", (e) => console.error(`[${who} page error]`, e));
    }
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  });

  it("buyer on a product page and seller in Seller Center chat: unread, read receipts, typing, an image, a network drop", async () => {
    const buyerFrames = sentFrames(buyer);
    // Seller Center first: its inbox must notice a buyer it has never seen.
    await seller.goto(`${base}/demo/seller.html?as=demo-shop-1`);
    await seller.getByTestId("connection-dot").and(seller.locator('[data-state="online"]')).waitFor();

    await buyer.goto(`${base}/demo/product.html?id=demo-p-aothun&as=demo-buyer-1`);
    await buyer.getByTestId("chat-with-shop").click();
    const widget = buyer.getByTestId("chat-widget");
    await widget.getByTestId("product-card").waitFor();
    expect(await widget.getByTestId("product-card").textContent()).toContain("Áo thun cotton basic");
    expect(await widget.getByTestId("peer-name").textContent()).toBe("Shop Áo Đẹp");

    // Buyer → seller: an unread badge appears in the inbox.
    await widget.getByTestId("composer").fill("Shop ơi, áo còn size M không ạ?");
    await widget.getByTestId("composer").press("Enter");
    const row = seller.getByTestId("thread").filter({ hasText: "Nguyễn Văn An" });
    await row.getByTestId("unread-badge").waitFor();
    expect(await row.getByTestId("unread-badge").textContent()).toBe("1");
    expect(await seller.getByTestId("total-unread").textContent()).toBe("1");
    await widget.getByTestId("receipt").filter({ hasText: "Đã gửi" }).waitFor();
    // Its PUBACK answered it; No Local spared the buyer its own copy: once.
    expect((await texts(buyer)).filter((t) => t === "Shop ơi, áo còn size M không ạ?")).toHaveLength(1);
    expect(await row.locator(".inbox-preview").textContent()).toBe("Shop ơi, áo còn size M không ạ?");

    // On the wire: protocol v2 only. One subscription, u/<me>, QoS 1 with
    // No Local (MQTT 5 subscription option bit 2); commands to t/<thread>.
    const threadId = await widget.locator("section.chat-conversation").getAttribute("data-thread");
    expect(threadId).toBeTruthy();
    const options = subscribeOptions(buyerFrames, "u/demo-buyer-1");
    expect(options, "SUBSCRIBE u/demo-buyer-1").toBeDefined();
    expect(options! & 0x03).toBe(1);
    expect(options! & 0x04).toBe(0x04);
    const wire = Buffer.concat(buyerFrames).toString("latin1");
    expect(wire).toContain(`t/${threadId}`);
    for (const v1 of ["thread/", "user/demo-buyer-1", "send_message", "client_msg_id"]) expect(wire).not.toContain(v1);

    // The seller opens it: the badge clears, the buyer sees "Đã xem".
    await row.click();
    await seller.getByTestId("messages").getByText("Shop ơi, áo còn size M không ạ?").waitFor();
    await row.getByTestId("unread-badge").waitFor({ state: "detached" });
    await seller.getByTestId("total-unread").waitFor({ state: "hidden" });
    await widget.getByTestId("receipt").filter({ hasText: "Đã xem" }).waitFor();

    // The seller types: the buyer sees it; then the reply arrives.
    await seller.getByTestId("composer").pressSequentially("Dạ còn ạ", { delay: 40 });
    await widget.getByTestId("typing").filter({ hasText: "Shop Áo Đẹp đang soạn tin…" }).waitFor();
    await seller.getByTestId("composer").press("Enter");
    await widget.getByTestId("messages").getByText("Dạ còn ạ").waitFor();
    await widget.getByTestId("typing").waitFor({ state: "hidden" });

    // An image: the buyer sends a photo (a PNG of the product picture);
    // both sides show the stored thumbnail.
    const png = await buyer.locator(".demo-product-img").screenshot();
    await widget.getByTestId("image-input").setInputFiles({ name: "ao-cua-minh.png", mimeType: "image/png", buffer: png });
    const sellerImage = seller.getByTestId("messages").getByTestId("image");
    await sellerImage.waitFor({ timeout: 20_000 });
    await until("the thumbnail loaded in Seller Center", async () => (await sellerImage.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0)) || undefined);
    await widget.getByTestId("messages").getByTestId("image").waitFor();
    expect(await widget.getByTestId("pending-image").count()).toBe(0);

    // The buyer's network drops; the seller writes five messages meanwhile.
    await buyerContext.setOffline(true);
    await widget.getByTestId("connection").filter({ hasText: "Mất kết nối" }).waitFor();
    const whileAway = ["Shop gửi bạn bảng size nhé", "Size M: ngực 96cm", "Dài áo 70cm", "Đang có mã giảm 10%", "Bạn cần thêm gì không ạ?"];
    for (const text of whileAway) {
      await seller.getByTestId("composer").fill(text);
      await seller.getByTestId("composer").press("Enter");
    }
    await until("the seller's messages stored", async () => (await seller.getByTestId("pending").count()) === 0 && (await texts(seller)).includes(whileAway[4]!));
    expect(await texts(buyer)).not.toContain(whileAway[0]);

    // Back online: every message exactly once, in order.
    await buyerContext.setOffline(false);
    await widget.getByTestId("connection").waitFor({ state: "hidden", timeout: 30_000 });
    const got = await until("the buyer's resync", async () => {
      const t = await texts(buyer);
      return whileAway.every((w) => t.includes(w)) ? t : undefined;
    }, 30_000);
    for (const text of whileAway) expect(got.filter((t) => t === text)).toHaveLength(1);
    expect(whileAway.map((w) => got.indexOf(w))).toEqual(whileAway.map((w) => got.indexOf(w)).sort((a, b) => a - b));
    expect(got.filter((t) => t === "Dạ còn ạ")).toHaveLength(1);
    // The seller's view has the same conversation, in the same order.
    expect((await texts(seller)).slice(-whileAway.length)).toEqual(whileAway);

    await buyer.getByTestId("chat-with-shop").scrollIntoViewIfNeeded();
    await shot(buyer, "product-page-widget");
    await shot(seller, "seller-center");
  }, 180_000);

  it("the order page opens the order's thread with its card; Seller Center filters unread and fits a phone", async () => {
    const orderContext = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "vi-VN" });
    const order = await orderContext.newPage();
    await order.goto(`${base}/demo/order.html?id=demo-o-1001&as=demo-buyer-1`);
    await order.getByTestId("contact-shop").click();
    const widget = order.getByTestId("chat-widget");
    await widget.getByTestId("order-card").waitFor();
    expect(await widget.getByTestId("order-card").textContent()).toContain("Đơn #1001");
    await widget.getByTestId("composer").fill("Đơn #1001 của mình bao giờ giao ạ?");
    await widget.getByTestId("composer").press("Enter");
    await widget.getByTestId("receipt").filter({ hasText: "Đã gửi" }).waitFor();
    await shot(order, "order-page-widget");

    // In Seller Center the order thread is a second row, unread; the filter shows only it.
    const orderRow = seller.getByTestId("thread").filter({ hasText: "Đơn #1001" });
    await orderRow.getByTestId("unread-badge").waitFor();
    await seller.getByTestId("filter-unread").click();
    await until("only the unread thread listed", async () => (await seller.getByTestId("thread").count()) === 1 || undefined);

    // Keyboard: focus the list, Enter opens the thread.
    await seller.getByTestId("thread").first().focus();
    await seller.keyboard.press("Enter");
    await seller.getByTestId("messages").getByText("Đơn #1001 của mình bao giờ giao ạ?").waitFor();
    await seller.getByTestId("composer").fill("Đơn của bạn đang giao, dự kiến ngày mai ạ");
    await seller.getByTestId("composer").press("Enter");
    await widget.getByTestId("messages").getByText("Đơn của bạn đang giao, dự kiến ngày mai ạ").waitFor();

    // A phone-width Seller Center in English: list first, then the conversation.
    const phone = await browser.newContext({ viewport: { width: 390, height: 780 }, locale: "en-US", isMobile: true, hasTouch: true });
    const mobile = await phone.newPage();
    await mobile.goto(`${base}/demo/seller.html?as=demo-shop-1&lang=en`);
    await mobile.getByTestId("thread").first().waitFor();
    expect(await mobile.locator(".inbox-pane").isVisible()).toBe(false);
    await mobile.getByTestId("thread").filter({ hasText: "🛍 Áo thun cotton basic" }).click();
    await mobile.getByTestId("composer").waitFor();
    expect(await mobile.getByTestId("thread-list").isVisible()).toBe(false);
    expect(await mobile.getByTestId("composer").getAttribute("placeholder")).toBe("Type a message…");
    await mobile.getByTestId("receipt").last().waitFor();
    await shot(mobile, "seller-center-phone");
    await phone.close();
    await orderContext.close();
  }, 120_000);

  it("Seller Center loads older history as the seller scrolls up: every message once, in order", async () => {
    const count = Number(process.env.CHAT_E2E_HISTORY ?? "0");
    expect(count).toBeGreaterThan(50);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "vi-VN" });
    const page = await context.newPage();
    await page.goto(`${base}/demo/seller.html?as=demo-shop-2`);
    const row = page.getByTestId("thread").filter({ hasText: "Trần Thị Bình" });
    expect(await row.getByTestId("unread-badge").textContent()).toBe(String(count));
    await row.click();
    const expected = Array.from({ length: count }, (_, i) => `Tin cũ thứ ${i + 1}`);
    await page.getByTestId("messages").getByText(expected[count - 1]!, { exact: true }).waitFor();
    // The first page is the newest: the oldest messages are not there yet.
    expect((await texts(page)).length).toBeLessThan(count);
    const all = await until("the whole history after scrolling up", async () => {
      await page.getByTestId("messages").evaluate((list) => list.scrollTo(0, 0));
      const t = await texts(page);
      return t.length >= count && (await page.getByTestId("history-edge").textContent()) === "Bắt đầu cuộc trò chuyện" ? t : undefined;
    });
    expect(all).toEqual(expected);
    // Read: the badge is gone.
    await row.getByTestId("unread-badge").waitFor({ state: "detached" });
    await context.close();
  }, 60_000);

  it("Seller Center pages through a busy inbox as the seller scrolls the list: every thread once", async () => {
    const buyers = Number(process.env.CHAT_E2E_INBOX_BUYERS ?? "0");
    expect(buyers).toBeGreaterThan(30);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "vi-VN" });
    const page = await context.newPage();
    await page.goto(`${base}/demo/seller.html?as=demo-shop-2`);
    const rows = page.getByTestId("thread");
    await rows.first().waitFor();
    // The newest activity first: the long conversation (seeded last) on top.
    expect(await rows.first().getByTestId("buyer-name").textContent()).toBe("Trần Thị Bình");
    expect(await rows.count()).toBe(30);
    const names = await until("every thread after scrolling the list", async () => {
      await page.getByTestId("thread-list").evaluate((list) => list.scrollTo(0, list.scrollHeight));
      const all = await page.getByTestId("buyer-name").allTextContents();
      return all.length >= buyers + 1 ? all : undefined;
    });
    expect(names).toHaveLength(buyers + 1);
    expect(new Set(names).size).toBe(buyers + 1);
    await context.close();
  }, 60_000);
});
