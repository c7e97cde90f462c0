//! User-facing texts, Vietnamese first, English when the user's locale says
//! so.

use chat_protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    /// Picks the language of a BCP 47 tag or an `Accept-Language` value;
    /// Vietnamese unless English comes first.
    pub fn from_locale(locale: Option<&str>) -> Lang {
        match locale.map(|l| l.trim().to_ascii_lowercase()) {
            Some(l) if l.starts_with("en") => Lang::En,
            _ => Lang::Vi,
        }
    }
}

/// The human-readable text of an error code.
pub fn error_text(code: ErrorCode, lang: Lang) -> &'static str {
    use ErrorCode::*;
    match (code, lang) {
        (Malformed, Lang::Vi) => "Dữ liệu gửi lên không đúng định dạng MessagePack của giao thức.",
        (Malformed, Lang::En) => "The payload is not a MessagePack envelope of this protocol.",
        (UnsupportedVersion, Lang::Vi) => "Phiên bản giao thức chưa được hỗ trợ.",
        (UnsupportedVersion, Lang::En) => "This protocol version is not supported.",
        (UnknownEvent, Lang::Vi) => "Loại sự kiện không xác định.",
        (UnknownEvent, Lang::En) => "Unknown event type.",
        (InvalidField, Lang::Vi) => "Thiếu trường dữ liệu hoặc giá trị không hợp lệ.",
        (InvalidField, Lang::En) => "A field is missing or invalid.",
        (TooLarge, Lang::Vi) => "Tin nhắn quá dài.",
        (TooLarge, Lang::En) => "The message is too large.",
        (Forbidden, Lang::Vi) => "Bạn không có quyền thực hiện thao tác này.",
        (Forbidden, Lang::En) => "You are not allowed to do this.",
        (UnsupportedType, Lang::Vi) => "Loại tin nhắn này chưa được hỗ trợ.",
        (UnsupportedType, Lang::En) => "This message type is not supported yet.",
        (NotFound, Lang::Vi) => "Không tìm thấy.",
        (NotFound, Lang::En) => "Not found.",
        (Unavailable, Lang::Vi) => "Máy chủ đang bận, vui lòng thử lại.",
        (Unavailable, Lang::En) => "The server is busy, please retry.",
        (RateLimited, Lang::Vi) => "Bạn gửi quá nhanh, vui lòng thử lại sau ít phút.",
        (RateLimited, Lang::En) => "You are sending too fast; please try again shortly.",
        (Muted, Lang::Vi) => {
            "Bạn tạm thời bị hạn chế gửi tin nhắn vì gửi quá nhiều trong thời gian ngắn."
        }
        (Muted, Lang::En) => "You are temporarily muted for sending too much too fast.",
        (ThreadBlocked, Lang::Vi) => "Cuộc trò chuyện đã bị chặn, không thể gửi tin nhắn.",
        (ThreadBlocked, Lang::En) => "This conversation is blocked; messages cannot be sent.",
        (InvalidAttachment, Lang::Vi) => {
            "Ảnh không hợp lệ (chỉ nhận JPEG, PNG, WebP đúng định dạng và kích thước cho phép)."
        }
        (InvalidAttachment, Lang::En) => {
            "The image was refused (only genuine JPEG, PNG or WebP within the size limits)."
        }
        (Internal, Lang::Vi) => {
            "Máy chủ gặp lỗi khi xử lý tin nhắn này nên chưa gửi được; đội vận hành đã nhận được thông tin."
        }
        (Internal, Lang::En) => {
            "The server failed on this message, so it was not sent; the operators have been told."
        }
        (ContentBlocked, Lang::Vi) => "Tin nhắn vi phạm quy định của sàn nên không được gửi.",
        (ContentBlocked, Lang::En) => {
            "This message breaks the marketplace's rules and was not sent."
        }
    }
}

/// The notice a sender gets when parts of their message were hidden.
pub fn masked_notice(lang: Lang) -> &'static str {
    match lang {
        Lang::Vi => {
            "Thông tin liên hệ (số điện thoại, email, liên kết, tài khoản) đã được ẩn: \
             hãy trao đổi và giao dịch ngay trên sàn để được bảo vệ."
        }
        Lang::En => {
            "Contact details (phone numbers, e-mails, links, accounts) were hidden: \
             keep the conversation and the deal on the marketplace to stay protected."
        }
    }
}
