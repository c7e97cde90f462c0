// The embeddable kit, one script for a platform's pages: `window.ChatUI`.
// mqtt.js and the SDK expect Node's Buffer; browsers get the polyfill.
import { Buffer } from "buffer";

(globalThis as { Buffer?: unknown }).Buffer ??= Buffer;

export { ChatClient, RestError, newClientMsgId } from "@chat/sdk";
export { ChatWidget, SellerInbox, ConversationView, langOf, strings, price } from "@chat/ui";
