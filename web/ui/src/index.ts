export * from "./i18n.js";
export { ConversationView, cardView } from "./conversation.js";
export { ChatWidget, type WidgetOptions } from "./widget.js";
export { SellerInbox, type InboxOptions } from "./inbox.js";
