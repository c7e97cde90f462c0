// Styles as strings: the widget puts them in its shadow root, the inbox in
// the page's head. No build step needed to import them anywhere.

const conversationCss = `
.chat-conversation { display: flex; flex-direction: column; height: 100%; min-height: 0; background: #f5f5f5; }
.chat-header { display: flex; align-items: center; gap: 10px; padding: 10px 12px; background: #fff; border-bottom: 1px solid #eee; }
.chat-header-text { flex: 1; min-width: 0; }
.chat-header-name { font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.chat-header-sub { font-size: 12px; color: #888; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.chat-avatar { position: relative; flex: none; width: 36px; height: 36px; border-radius: 50%; background: #ee4d2d; color: #fff; display: grid; place-items: center; font-weight: 600; }
.chat-icon-btn { border: 0; background: transparent; font-size: 18px; cursor: pointer; padding: 6px; border-radius: 6px; color: #555; }
.chat-icon-btn:hover, .chat-icon-btn:focus-visible { background: #f0f0f0; }
.chat-banner { padding: 6px 12px; font-size: 13px; background: #fff4e5; color: #8a5300; }
.chat-banner[hidden] { display: none; }
.chat-messages { flex: 1; min-height: 0; overflow-y: auto; padding: 8px 12px; display: flex; flex-direction: column; gap: 4px; }
.chat-history-edge { text-align: center; font-size: 12px; color: #999; padding: 6px 0; min-height: 14px; }
.chat-day { align-self: center; font-size: 12px; color: #888; background: #e9e9e9; border-radius: 10px; padding: 2px 10px; margin: 6px 0; }
.chat-row { display: flex; flex-direction: column; max-width: 78%; }
.chat-row.mine { align-self: flex-end; align-items: flex-end; }
.chat-row.theirs { align-self: flex-start; align-items: flex-start; }
.chat-row.system { align-self: stretch; max-width: none; align-items: center; margin: 4px 0; }
.chat-bubble { padding: 7px 10px; border-radius: 12px; background: #fff; box-shadow: 0 1px 1px rgba(0,0,0,.06); white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.35; }
.chat-row.mine .chat-bubble { background: #ffe7df; }
.chat-row.pending .chat-bubble { opacity: .7; }
.chat-row.failed .chat-bubble { background: #fde2e2; }
.chat-bubble.image { padding: 4px; }
.chat-time { display: block; font-size: 10px; color: #999; margin-top: 2px; text-align: right; }
.chat-thumb { display: block; max-width: 220px; max-height: 220px; width: auto; height: auto; border-radius: 8px; background: #ddd; }
.chat-status { font-size: 11px; color: #888; margin: 1px 4px 0; }
.chat-row.failed .chat-status { color: #c62828; }
.chat-system { font-size: 12px; color: #666; background: #eee; border-radius: 8px; padding: 4px 10px; text-align: center; }
.chat-card { display: flex; gap: 10px; align-items: center; background: #fff; border: 1px solid #eee; border-radius: 10px; padding: 8px; width: min(320px, 100%); }
.chat-card-img { width: 56px; height: 56px; object-fit: cover; border-radius: 6px; background: #f2f2f2; }
.chat-card-icon { font-size: 28px; width: 56px; text-align: center; }
.chat-card-kicker { font-size: 11px; color: #999; text-transform: uppercase; letter-spacing: .02em; }
.chat-card-title { font-size: 14px; }
.chat-card-price { color: #ee4d2d; font-weight: 600; }
.chat-typing { font-size: 12px; color: #777; padding: 2px 14px 4px; font-style: italic; }
.chat-typing[hidden] { display: none; }
.chat-notice { font-size: 12px; color: #8a5300; background: #fff4e5; padding: 6px 12px; }
.chat-notice[hidden] { display: none; }
.chat-composer { display: flex; align-items: flex-end; gap: 6px; padding: 8px; background: #fff; border-top: 1px solid #eee; }
.chat-input { flex: 1; resize: none; border: 1px solid #ddd; border-radius: 18px; padding: 8px 12px; font: inherit; max-height: 120px; min-height: 20px; }
.chat-input:focus { outline: 2px solid #ee4d2d33; border-color: #ee4d2d; }
.chat-send { border: 0; background: #ee4d2d; color: #fff; border-radius: 18px; padding: 8px 14px; font: inherit; font-weight: 600; cursor: pointer; }
.chat-send:focus-visible { outline: 2px solid #222; }
.chat-link { border: 0; background: none; color: #1565c0; cursor: pointer; font: inherit; font-size: 11px; text-decoration: underline; }
.chat-badge { display: inline-block; min-width: 18px; padding: 0 5px; border-radius: 9px; background: #ee4d2d; color: #fff; font-size: 11px; line-height: 18px; text-align: center; font-weight: 600; }
.chat-badge[hidden] { display: none; }
.chat-error { padding: 16px; color: #c62828; }
progress { width: 100%; height: 6px; display: block; margin-top: 4px; accent-color: #ee4d2d; }
`;

export const widgetCss = `
:host { all: initial; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; font-size: 14px; color: #222; }
* { box-sizing: border-box; }
.chat-launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0; border-radius: 24px; background: #ee4d2d; color: #fff; padding: 12px 18px; font: inherit; font-weight: 600; box-shadow: 0 4px 14px rgba(0,0,0,.2); cursor: pointer; display: flex; gap: 6px; align-items: center; }
.chat-launcher .chat-badge { background: #fff; color: #ee4d2d; }
.chat-panel { position: fixed; right: 20px; bottom: 80px; z-index: 2147483001; width: 380px; height: min(560px, calc(100vh - 100px)); border-radius: 12px; overflow: hidden; box-shadow: 0 8px 30px rgba(0,0,0,.25); background: #fff; display: flex; flex-direction: column; }
.chat-panel[hidden] { display: none; }
@media (max-width: 480px) {
  .chat-panel { inset: 0; width: auto; height: auto; border-radius: 0; }
}
${conversationCss}
`;

export const inboxCss = `
.inbox { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; font-size: 14px; color: #222; display: grid; grid-template-columns: 340px 1fr; grid-template-rows: auto 1fr; height: 100vh; height: 100dvh; }
.inbox * { box-sizing: border-box; }
.inbox-top { grid-column: 1 / -1; display: flex; align-items: center; gap: 10px; padding: 10px 16px; background: #ee4d2d; color: #fff; }
.inbox-title { opacity: .9; }
.inbox-spacer { flex: 1; }
.inbox-top .chat-badge { background: #fff; color: #ee4d2d; }
.inbox-dot { font-size: 12px; display: inline-flex; align-items: center; gap: 6px; }
.inbox-dot::before { content: ""; width: 9px; height: 9px; border-radius: 50%; background: #ffd54f; }
.inbox-dot[data-state="online"]::before { background: #69f0ae; }
.inbox-dot[data-state="offline"]::before { background: #ff8a80; }
.inbox-lang { border: 1px solid #fff9; background: transparent; color: #fff; border-radius: 14px; padding: 4px 10px; cursor: pointer; font: inherit; font-size: 12px; }
.inbox-side { display: flex; flex-direction: column; min-height: 0; border-right: 1px solid #eee; background: #fff; }
.inbox-tabs { display: flex; gap: 6px; padding: 8px 12px; border-bottom: 1px solid #f0f0f0; }
.inbox-tab { border: 1px solid #ddd; background: #fff; border-radius: 14px; padding: 4px 12px; cursor: pointer; font: inherit; font-size: 13px; }
.inbox-tab[aria-pressed="true"] { border-color: #ee4d2d; color: #ee4d2d; background: #fff3f0; }
.inbox-list { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; }
.inbox-item { display: flex; gap: 10px; padding: 10px 12px; cursor: pointer; border-bottom: 1px solid #f5f5f5; outline: none; }
.inbox-item:hover { background: #fafafa; }
.inbox-item:focus-visible { box-shadow: inset 3px 0 0 #1565c0; background: #f3f7fd; }
.inbox-item.selected { background: #fff3f0; }
.inbox-item-body { flex: 1; min-width: 0; }
.inbox-item-top, .inbox-item-bottom { display: flex; gap: 6px; align-items: center; }
.inbox-name { flex: 1; font-weight: 500; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.inbox-item.unread .inbox-name, .inbox-item.unread .inbox-preview { font-weight: 700; color: #111; }
.inbox-item time { font-size: 11px; color: #999; }
.inbox-context { font-size: 12px; color: #ee4d2d; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.inbox-preview { flex: 1; font-size: 13px; color: #777; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.inbox-online { position: absolute; right: 0; bottom: 0; width: 10px; height: 10px; border-radius: 50%; background: #2e7d32; border: 2px solid #fff; }
.inbox-none { padding: 24px; text-align: center; color: #999; }
.inbox-hint { font-size: 11px; color: #aaa; padding: 6px 12px; border-top: 1px solid #f0f0f0; }
.inbox-pane { min-height: 0; min-width: 0; display: flex; flex-direction: column; }
.inbox-empty { margin: auto; color: #999; }
.inbox-back { display: none; }
@media (max-width: 720px) {
  .inbox { grid-template-columns: 1fr; }
  .inbox-pane { display: none; }
  .inbox.show-conversation .inbox-side { display: none; }
  .inbox.show-conversation .inbox-pane { display: flex; }
  .inbox-back { display: inline-block; }
  .inbox-hint { display: none; }
}
${conversationCss}
`;
