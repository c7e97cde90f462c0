// Every user-facing string, Vietnamese first. Pure: no DOM.

export type Lang = "vi" | "en";

const vi = {
  chatWithShop: "Chat với Shop",
  contactShop: "Liên hệ Shop",
  chat: "Chat",
  close: "Đóng",
  back: "Quay lại",
  inbox: "Tin nhắn",
  sellerCenter: "Kênh Người Bán",
  all: "Tất cả",
  unread: "Chưa đọc",
  noThreads: "Chưa có cuộc trò chuyện nào",
  noUnread: "Không có tin chưa đọc",
  pickThread: "Chọn một cuộc trò chuyện để bắt đầu",
  placeholder: "Nhập nội dung tin nhắn…",
  send: "Gửi",
  sendImage: "Gửi hình ảnh",
  sending: "Đang gửi…",
  sent: "Đã gửi",
  seen: "Đã xem",
  failed: "Không gửi được",
  dismiss: "Bỏ qua",
  uploading: "Đang tải ảnh lên…",
  typing: (name: string) => `${name} đang soạn tin…`,
  online: "Đang hoạt động",
  lastSeen: (ago: string) => `Hoạt động ${ago} trước`,
  connecting: "Đang kết nối…",
  offline: "Mất kết nối. Đang thử kết nối lại…",
  connected: "Đã kết nối",
  loadingOlder: "Đang tải tin cũ…",
  beginning: "Bắt đầu cuộc trò chuyện",
  product: "Sản phẩm",
  order: "Đơn hàng",
  image: "[Hình ảnh]",
  you: "Bạn",
  buyer: "Người mua",
  language: "English",
  loadFailed: "Không tải được. Thử lại",
  today: "Hôm nay",
  minutes: (n: number) => `${n} phút`,
  hours: (n: number) => `${n} giờ`,
  days: (n: number) => `${n} ngày`,
  keyboardHint: "↑/↓ chọn · Enter mở · Esc quay lại",
};

export type Strings = typeof vi;

const en: Strings = {
  chatWithShop: "Chat with the shop",
  contactShop: "Contact the shop",
  chat: "Chat",
  close: "Close",
  back: "Back",
  inbox: "Messages",
  sellerCenter: "Seller Center",
  all: "All",
  unread: "Unread",
  noThreads: "No conversations yet",
  noUnread: "No unread conversations",
  pickThread: "Pick a conversation to start",
  placeholder: "Type a message…",
  send: "Send",
  sendImage: "Send a picture",
  sending: "Sending…",
  sent: "Sent",
  seen: "Seen",
  failed: "Not sent",
  dismiss: "Dismiss",
  uploading: "Uploading picture…",
  typing: (name: string) => `${name} is typing…`,
  online: "Active now",
  lastSeen: (ago: string) => `Active ${ago} ago`,
  connecting: "Connecting…",
  offline: "Connection lost. Reconnecting…",
  connected: "Connected",
  loadingOlder: "Loading older messages…",
  beginning: "Start of the conversation",
  product: "Product",
  order: "Order",
  image: "[Picture]",
  you: "You",
  buyer: "Buyer",
  language: "Tiếng Việt",
  loadFailed: "Could not load. Retry",
  today: "Today",
  minutes: (n: number) => `${n} min`,
  hours: (n: number) => `${n} h`,
  days: (n: number) => `${n} d`,
  keyboardHint: "↑/↓ select · Enter open · Esc back",
};

export function strings(lang: Lang): Strings {
  return lang === "en" ? en : vi;
}

/** `vi` unless the tag says English. */
export function langOf(tag: string | null | undefined): Lang {
  return tag?.toLowerCase().startsWith("en") ? "en" : "vi";
}

/** "5 phút" / "5 min" since `then` (ms). */
export function ago(lang: Lang, then: number, now = Date.now()): string {
  const t = strings(lang);
  const minutes = Math.max(1, Math.round((now - then) / 60_000));
  if (minutes < 60) return t.minutes(minutes);
  const hours = Math.round(minutes / 60);
  if (hours < 24) return t.hours(hours);
  return t.days(Math.round(hours / 24));
}

/** 149000 VND → "149.000₫" (vi) or "₫149,000" (en). */
export function price(lang: Lang, amount: number, currency: string): string {
  return new Intl.NumberFormat(lang === "en" ? "en-US" : "vi-VN", { style: "currency", currency }).format(amount);
}

/** Time of a message: "14:05" today, "14:05 25/11" before. */
export function clock(lang: Lang, at: number, now = Date.now()): string {
  const d = new Date(at);
  const time = d.toLocaleTimeString(lang === "en" ? "en-GB" : "vi-VN", { hour: "2-digit", minute: "2-digit" });
  if (new Date(now).toDateString() === d.toDateString()) return time;
  return `${time} ${d.getDate()}/${d.getMonth() + 1}`;
}
