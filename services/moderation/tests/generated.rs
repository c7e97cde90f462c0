//! Adversarial variants, generated: seed contacts (Vietnamese mobile
//! numbers, e-mail addresses, Zalo/Facebook/Instagram handles) disguised by
//! transformations composed at random — digits from other scripts and
//! styled Unicode, spelled digits in regional forms, separators of any
//! kind and length, zero-width and format characters, look-alike letters,
//! spelled `@` and `.`, channel names respelled — and ordinary marketplace
//! messages dense in numbers. The recall per category and the
//! false-positive rate are printed (`cargo test -p chat-moderation --test
//! generated -- --nocapture`) and held to floors, so a change that loses
//! recall fails.
//!
//! A variant counts as caught when the masked text no longer gives the
//! contact away: of a phone number at most two digits are left visible
//! (100 guesses), of an address's local part or a handle at most one
//! character. An ordinary message is a false positive when anything in it
//! is masked or blocked.
//!
//! The figures are measured on seeds the detectors were not developed on
//! (`HELD_OUT`); `DEVELOPMENT` is the seed to look at while working.

use std::ops::Range;

use chat_moderation::keywords::Keywords;
use chat_moderation::{Action, Moderator, Policy};

/// Per category.
const VARIANTS: usize = 10_000;
/// Seeds: look at failures of the first while developing; the test scores
/// the second.
const DEVELOPMENT: u64 = 0x5EED_0001;
const HELD_OUT: u64 = 0x5EED_0002;

/// splitmix64: small, seeded, the same figures on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// A generated message and the byte ranges of what gives the contact away
/// (each digit of a number, each char of a local part or handle).
struct Case {
    text: String,
    payload: Vec<Range<usize>>,
}

impl Case {
    fn new() -> Case {
        Case {
            text: String::new(),
            payload: Vec::new(),
        }
    }
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
    fn payload(&mut self, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        self.payload.push(start..self.text.len());
    }
}

const MOBILE_PREFIXES: &[&str] = &[
    "032", "033", "034", "035", "036", "037", "038", "039", "056", "058", "059", "070", "076",
    "077", "078", "079", "081", "082", "083", "084", "085", "086", "088", "089", "090", "091",
    "092", "093", "094", "096", "097", "098", "099",
];

/// Vietnamese spellings of each digit, regional forms included.
const SPELLED: [&[&str]; 10] = [
    &["không", "khong", "linh", "Không", "hông"],
    &["một", "mốt", "mot", "Một"],
    &["hai", "Hai", "hai"],
    &["ba", "Ba", "bA"],
    &["bốn", "tư", "bon", "Bốn"],
    &["năm", "lăm", "nhăm", "nam", "Năm"],
    &["sáu", "sau", "Sáu"],
    &["bảy", "bẩy", "bay", "Bảy"],
    &["tám", "tam", "Tám"],
    &["chín", "chin", "Chín"],
];
const ENGLISH: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// One digit in one style.
fn digit(rng: &mut Rng, style: usize, d: u32) -> String {
    let offset = |base: u32| char::from_u32(base + d).unwrap().to_string();
    match style {
        0 => char::from_digit(d, 10).unwrap().to_string(),
        1 => offset(0xFF10),  // full-width
        2 => offset(0x1D7CE), // mathematical bold
        3 => offset(0x1D7D8), // double-struck
        4 => offset(0x1D7F6), // monospace
        5 => offset(0x0660),  // Arabic-Indic
        6 => offset(0x06F0),  // extended Arabic-Indic
        7 => offset(0x0966),  // Devanagari
        8 => offset(0x0E50),  // Thai
        9 => ["⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"][d as usize].to_owned(),
        10 => offset(0x2080), // subscript
        11 => ["⓪", "①", "②", "③", "④", "⑤", "⑥", "⑦", "⑧", "⑨"][d as usize].to_owned(),
        12 => ["⓿", "❶", "❷", "❸", "❹", "❺", "❻", "❼", "❽", "❾"][d as usize].to_owned(),
        13 => ["⓪", "➀", "➁", "➂", "➃", "➄", "➅", "➆", "➇", "➈"][d as usize].to_owned(),
        14 => format!("{d}\u{FE0F}\u{20E3}"), // keycap
        15 => rng.pick(SPELLED[d as usize]).to_owned(),
        16 => ENGLISH[d as usize].to_owned(),
        // Look-alike letters for 0 and 1, digits otherwise.
        _ => match d {
            0 => rng.pick(&["O", "o", "0"]).to_owned(),
            1 => rng.pick(&["l", "I", "1"]).to_owned(),
            _ => d.to_string(),
        },
    }
}
const DIGIT_STYLES: usize = 18;

/// What goes between two groups of digits.
fn separator(rng: &mut Rng, spelled: bool) -> String {
    let base: &str = rng.pick(&[
        " ", " ", ".", "-", "_", "/", ",", "....", "- - -", " . . . ", "~~", "***", "\n", "\n\n\n",
        " \n ", "🌸", "🇻🇳", "❤️", "👉", " 😘 ", "\u{200B}", "\u{2060}", "\u{00AD}", "\u{200C}",
        " | ", "+", "=", "(", ")", "  ",
    ]);
    // Spelled digits need a break between words.
    if spelled && !base.contains(' ') && !base.contains('\n') {
        format!(" {base} ")
    } else {
        base.to_owned()
    }
}

fn phone(rng: &mut Rng) -> Case {
    let mut digits: String = rng.pick(MOBILE_PREFIXES).to_owned();
    for _ in 0..7 {
        digits.push(char::from_digit(rng.below(10) as u32, 10).unwrap());
    }
    // The form: national, +84, 84, or nine digits with a hint.
    let form = rng.below(10);
    let (lead, number, hint): (&str, String, &str) = match form {
        0 | 1 => ("+84 ", digits[1..].to_owned(), ""),
        2 => ("84", digits[1..].to_owned(), ""),
        3 => (
            "",
            digits[1..].to_owned(),
            rng.pick(&[
                " (thêm số 0 ở đầu)",
                " thêm 0 đằng trước nha",
                ", nhớ thêm số 0",
            ]),
        ),
        _ => ("", digits.clone(), ""),
    };
    let style = rng.below(DIGIT_STYLES);
    let mixed = rng.chance(25);
    let spelled = matches!(style, 15 | 16) || mixed;
    let mut case = Case::new();
    let intro: &str = if form == 3 {
        rng.pick(&["zalo ", "sđt ", "số mình ", "gọi ", "ib zalo "])
    } else {
        rng.pick(&[
            "",
            "Liên hệ mình ",
            "sđt ",
            "Số của shop nè: ",
            "alo ",
            "mình để số ",
            "ib zalo ",
            "gọi em ",
            "SĐT: ",
            "bạn gọi ",
        ])
    };
    case.push(intro);
    case.push(lead);
    let chars: Vec<u32> = number.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let mut i = 0;
    while i < chars.len() {
        let group = 1 + rng.below(4);
        for (k, d) in chars[i..(i + group).min(chars.len())].iter().enumerate() {
            if k > 0 {
                if spelled {
                    case.push(" ");
                } else if rng.chance(8) {
                    case.push(rng.pick(&["\u{200B}", "\u{200D}", "\u{FEFF}"]));
                }
            }
            let s = if mixed && rng.chance(50) {
                let other = rng.below(DIGIT_STYLES);
                digit(rng, other, *d)
            } else {
                digit(rng, style, *d)
            };
            case.payload(&s);
        }
        i += group;
        if i < chars.len() {
            case.push(&separator(rng, spelled));
        }
    }
    case.push(hint);
    case.push(rng.pick(&["", " nhé", " nha bạn", " ạ", "!", " gọi mình"]));
    case
}

/// A character of a local part or handle, sometimes styled.
fn styled(style: usize, c: char) -> String {
    if !c.is_ascii_alphanumeric() {
        return c.to_string();
    }
    let lower = c.to_ascii_lowercase();
    let letter = |base: u32| {
        char::from_u32(base + (lower as u32 - 'a' as u32))
            .unwrap()
            .to_string()
    };
    match (style, lower.is_ascii_alphabetic()) {
        (1, true) => letter(0xFF41),  // full-width
        (2, true) => letter(0x1D41A), // mathematical bold
        (3, true) => letter(0x24D0),  // circled
        (4, _) => c.to_ascii_uppercase().to_string(),
        (5, true) => match lower {
            // Cyrillic and Greek look-alikes.
            'a' => "а".into(),
            'e' => "е".into(),
            'o' => "о".into(),
            'p' => "р".into(),
            'c' => "с".into(),
            'x' => "х".into(),
            'i' => "і".into(),
            _ => c.to_string(),
        },
        (6, true) => match lower {
            // Small capitals.
            'a' => "ᴀ".into(),
            'b' => "ʙ".into(),
            'c' => "ᴄ".into(),
            'd' => "ᴅ".into(),
            'e' => "ᴇ".into(),
            'g' => "ɢ".into(),
            'h' => "ʜ".into(),
            'i' => "ɪ".into(),
            'l' => "ʟ".into(),
            'm' => "ᴍ".into(),
            'n' => "ɴ".into(),
            'o' => "ᴏ".into(),
            'r' => "ʀ".into(),
            't' => "ᴛ".into(),
            'u' => "ᴜ".into(),
            _ => c.to_string(),
        },
        _ => c.to_string(),
    }
}

fn local_part(rng: &mut Rng) -> String {
    let first: &str = rng.pick(&[
        "lan", "tuan", "minh", "huong", "thao", "duc", "ngoc", "hoa", "quang", "linh", "shop",
        "anh", "trang", "khanh", "phuong",
    ]);
    let second: &str = rng.pick(&[
        "nguyen", "tran", "le", "pham", "hoang", "vu", "dang", "bui", "do", "xinh", "store",
    ]);
    let joint: &str = rng.pick(&[".", "_", "", "."]);
    let tail = if rng.chance(60) {
        (rng.below(99) + 1).to_string()
    } else {
        String::new()
    };
    format!("{first}{joint}{second}{tail}")
}

fn email(rng: &mut Rng) -> Case {
    let local = local_part(rng);
    let (provider, suffix): (&str, &str) = match rng.below(12) {
        0 => ("yahoo", "com.vn"),
        1 => ("outlook", "com"),
        2 => ("hotmail", "com"),
        3 => ("icloud", "com"),
        4 => ("shopxinh", "vn"),
        5 => ("camhoa", "com.vn"),
        6 => ("mail", "ru"),
        7 => ("proton", "me"),
        8 => ("thoitrang", "shop"),
        9 => ("donghohieu", "store"),
        _ => ("gmail", "com"),
    };
    let style = if rng.chance(30) { 1 + rng.below(6) } else { 0 };
    let at: &str = rng.pick(&[
        "@",
        "@",
        "＠",
        " @ ",
        "(at)",
        "[at]",
        " at ",
        " a còng ",
        " acong ",
        " (a còng) ",
        "@ ",
        " [a] ",
    ]);
    let dot: &str = rng.pick(&[
        ".", ".", " . ", "(dot)", "[.]", " chấm ", " cham ", " dot ", "(.)", " chấm ",
    ]);
    let mut case = Case::new();
    let bare = rng.chance(12);
    if bare {
        // The local part after the provider's name alone.
        case.push(rng.pick(&["gmail: ", "mail mình: ", "gmail của mình là ", "Gmail "]));
        for c in local.chars() {
            case.payload(&styled(style, c));
        }
        case.push(rng.pick(&["", " nhé", " ạ"]));
        return case;
    }
    case.push(rng.pick(&[
        "",
        "Email: ",
        "mail mình ",
        "gửi qua mail ",
        "Bạn gửi ảnh vào ",
        "liên hệ ",
    ]));
    for c in local.chars() {
        case.payload(&styled(style, c));
    }
    case.push(at);
    for c in provider.chars() {
        case.push(&styled(style, c));
    }
    for (i, label) in suffix.split('.').enumerate() {
        let _ = i;
        case.push(dot);
        for c in label.chars() {
            case.push(&styled(style, c));
        }
    }
    case.push(rng.pick(&["", " nhé", " giúp mình", " ạ"]));
    case
}

fn handle(rng: &mut Rng) -> Case {
    let channel = rng.below(3);
    let name: &str = match channel {
        0 => rng.pick(&[
            "zalo", "Zalo", "za lo", "Zá Lồ", "zalò", "z@lo", "ZALO", "zaloo", "dalo", "Zl",
        ]),
        1 => rng.pick(&[
            "facebook",
            "fb",
            "FB",
            "phây",
            "phây búc",
            "face",
            "fắc bốc",
            "f.b",
            "fbook",
            "Facebook",
        ]),
        _ => rng.pick(&[
            "instagram",
            "insta",
            "ig",
            "IG",
            "in-ta",
            "ins",
            "inxta",
            "instagam",
            "Insta",
            "ing",
        ]),
    };
    let style = if rng.chance(30) { 1 + rng.below(6) } else { 0 };
    let mut case = Case::new();
    let styled_name: String = if rng.chance(30) {
        {
            let style = 1 + rng.below(3);
            name.chars().map(|c| styled(style, c)).collect()
        }
    } else {
        name.to_owned()
    };
    let handle = local_part(rng);
    let link = channel < 2 && rng.chance(20);
    if link {
        let host = if channel == 0 {
            "zalo.me/"
        } else {
            "facebook.com/"
        };
        case.push(rng.pick(&["", "vào ", "link: "]));
        case.push(host);
    } else {
        let before: &str = rng.pick(&[
            "",
            "kết bạn ",
            "tìm mình trên ",
            "add ",
            "follow ",
            "nhắn ",
            "ib ",
        ]);
        let between: &str = rng.pick(&[
            ": ",
            " @",
            " là ",
            " tên là ",
            " mình là ",
            " ",
            " nick ",
            " id: ",
            " - ",
            " 👉 ",
        ]);
        case.push(before);
        case.push(&styled_name);
        case.push(between);
    }
    for c in handle.chars() {
        case.payload(&styled(style, c));
    }
    case.push(rng.pick(&["", " nhé", " nha", " để được tư vấn", " ạ"]));
    case
}

/// Ordinary messages, dense in numbers, that must stay as they are.
fn ordinary(rng: &mut Rng) -> String {
    let n = |rng: &mut Rng, lo: usize, hi: usize| (lo + rng.below(hi - lo + 1)).to_string();
    let price = |rng: &mut Rng| {
        let k = 50 + rng.below(2950);
        match rng.below(5) {
            0 => format!("{k}k"),
            1 => format!("{}.{:03}đ", k, rng.below(1000)),
            2 => format!("{}.000 ₫", k),
            3 => format!("{},{}tr", 1 + rng.below(30), rng.below(10)),
            _ => format!("{}.{:03}.000đ", 1 + rng.below(40), rng.below(1000)),
        }
    };
    match rng.below(16) {
        0 => format!("Áo này giá {} ạ, ship {}", price(rng), price(rng)),
        1 => format!(
            "Mình cao 1m{} nặng {}kg thì mặc size nào ạ?",
            n(rng, 45, 85),
            n(rng, 40, 95)
        ),
        2 => format!(
            "Đơn #{}{} của mình giao ngày {}/{}/2026 được không?",
            n(rng, 240101, 261231),
            ["ABC", "KX9", "VN"][rng.below(3)],
            n(rng, 1, 28),
            n(rng, 1, 12)
        ),
        3 => format!(
            "Mã vận đơn SPXVN0{} nha bạn",
            (0..10)
                .map(|_| rng.below(10).to_string())
                .collect::<String>()
        ),
        4 => format!(
            "Giao tới {} Nguyễn Trãi, P.{}, Q.{}, TP.HCM giúp mình",
            n(rng, 1, 999),
            n(rng, 1, 15),
            n(rng, 1, 12)
        ),
        5 => format!(
            "Nhập mã SALE{} giảm {}% tối đa {}",
            n(rng, 10, 99),
            n(rng, 5, 50),
            price(rng)
        ),
        6 => format!(
            "Máy RAM {}GB, bộ nhớ {}GB, pin {}mAh, màn {}.{} inch",
            [4, 6, 8, 12, 16][rng.below(5)],
            [64, 128, 256, 512][rng.below(4)],
            n(rng, 3000, 6000),
            n(rng, 5, 7),
            n(rng, 0, 9)
        ),
        7 => format!(
            "Lấy {} cái size {} và {} cái size {} nhé",
            n(rng, 1, 20),
            n(rng, 35, 44),
            n(rng, 1, 20),
            n(rng, 35, 44)
        ),
        8 => format!(
            "Eo {}cm, mông {}cm, dài {}cm ạ",
            n(rng, 55, 95),
            n(rng, 80, 110),
            n(rng, 60, 110)
        ),
        9 => format!(
            "Shop mở cửa {}h{} đến {}h tối, thứ {} đến chủ nhật",
            n(rng, 6, 10),
            ["00", "15", "30", "45"][rng.below(4)],
            n(rng, 17, 22),
            n(rng, 2, 7)
        ),
        10 => format!(
            "Tổng {} + phí ship {} = {}",
            price(rng),
            price(rng),
            price(rng)
        ),
        11 => format!(
            "Mình đặt {} hộp, mỗi hộp {} viên, hạn dùng {}/{}/{}",
            n(rng, 1, 10),
            n(rng, 10, 120),
            n(rng, 1, 28),
            n(rng, 1, 12),
            n(rng, 2026, 2029)
        ),
        12 => format!(
            "Sản phẩm mã SP{} còn {} chiếc, bảo hành {} tháng",
            n(rng, 100000, 999999),
            n(rng, 1, 500),
            [6, 12, 18, 24][rng.below(4)]
        ),
        13 => format!(
            "Giày size {} chân dài {},{}cm, bạn đo giúp mình ạ",
            n(rng, 35, 45),
            n(rng, 22, 28),
            n(rng, 0, 9)
        ),
        14 => format!(
            "Đã chuyển khoản {} lúc {}:{} ngày {}.{}, nội dung DH{}",
            price(rng),
            n(rng, 10, 23),
            n(rng, 10, 59),
            n(rng, 1, 28),
            n(rng, 1, 12),
            n(rng, 1000, 99999)
        ),
        _ => format!(
            "Combo {} món chỉ {}, mua {} tặng {}",
            n(rng, 2, 5),
            price(rng),
            n(rng, 2, 3),
            n(rng, 1, 2)
        ),
    }
}

fn moderator() -> Moderator {
    Moderator::new(Policy::default(), Keywords::empty())
}

/// Whether the masked text still gives the contact away.
fn caught(m: &Moderator, case: &Case, tolerated: usize) -> bool {
    let out = m.moderate(&case.text, &[]);
    let masked: Vec<Range<usize>> = out
        .findings
        .iter()
        .filter(|f| f.action >= Action::Mask)
        .map(|f| f.start..f.end)
        .collect();
    let visible = case
        .payload
        .iter()
        .filter(|p| !masked.iter().any(|m| m.start <= p.start && p.end <= m.end))
        .count();
    visible <= tolerated
}

struct Score {
    category: &'static str,
    caught: usize,
    examples: Vec<String>,
}

fn score(seed: u64, category: &'static str, tolerated: usize, make: fn(&mut Rng) -> Case) -> Score {
    let m = moderator();
    let mut rng = Rng(seed ^ category.len() as u64);
    let mut s = Score {
        category,
        caught: 0,
        examples: Vec::new(),
    };
    for _ in 0..VARIANTS {
        let case = make(&mut rng);
        if caught(&m, &case, tolerated) {
            s.caught += 1;
        } else if s.examples.len() < 5 {
            s.examples.push(case.text);
        }
    }
    s
}

fn recall(s: &Score) -> f64 {
    s.caught as f64 / VARIANTS as f64
}

/// Floors under the figures this code reaches on `HELD_OUT` (the target
/// is 99 % each): raised as the detectors improve, never lowered to let a
/// change through.
const FLOORS: &[(&str, f64)] = &[("phone", 0.94), ("email", 0.65), ("social", 0.76)];
/// Ceiling on the false-positive rate (the target is 0.5 %).
const FALSE_POSITIVE_CEILING: f64 = 0.005;

fn run(seed: u64) -> (Vec<Score>, usize, Vec<String>) {
    let scores = vec![
        score(seed, "phone", 2, phone),
        score(seed, "email", 1, email),
        score(seed, "social", 1, handle),
    ];
    let m = moderator();
    let mut rng = Rng(seed ^ 0xFA15E);
    let mut wrong = 0;
    let mut examples = Vec::new();
    for _ in 0..VARIANTS {
        let text = ordinary(&mut rng);
        let out = m.moderate(&text, &[]);
        if out.findings.iter().any(|f| f.action >= Action::Mask) {
            wrong += 1;
            if examples.len() < 5 {
                examples.push(format!("{text:?} -> {:?}", out.text));
            }
        }
    }
    (scores, wrong, examples)
}

#[test]
fn generated_obfuscations_are_caught_and_ordinary_messages_left_alone() {
    let (scores, wrong, fp_examples) = run(HELD_OUT);
    println!("generated variants (held-out seed), {VARIANTS} per category:");
    for s in &scores {
        println!(
            "  {:<7} recall {:>6.2} %  missed e.g. {:?}",
            s.category,
            100.0 * recall(s),
            s.examples.iter().take(3).collect::<Vec<_>>()
        );
    }
    let fp = wrong as f64 / VARIANTS as f64;
    println!(
        "  ordinary messages: false positives {:.2} % ({wrong} of {VARIANTS}) e.g. {:?}",
        100.0 * fp,
        fp_examples
    );
    for s in &scores {
        let floor = FLOORS.iter().find(|(c, _)| *c == s.category).unwrap().1;
        assert!(
            recall(s) >= floor,
            "{} recall {:.4} under its floor {floor}; missed e.g. {:#?}",
            s.category,
            recall(s),
            s.examples
        );
    }
    assert!(
        fp <= FALSE_POSITIVE_CEILING,
        "false positives {fp:.4}: {fp_examples:#?}"
    );
}

/// Development aid: `cargo test -p chat-moderation --test generated
/// development -- --ignored --nocapture` prints misses on the other seed.
#[test]
#[ignore]
fn development() {
    let (scores, wrong, fp_examples) = run(DEVELOPMENT);
    for s in &scores {
        println!("{} {:.2} %", s.category, 100.0 * recall(s));
        for e in &s.examples {
            println!("    {e:?}");
        }
    }
    println!("false positives {wrong}: {fp_examples:#?}");
}

#[test]
fn the_generator_is_deterministic_and_its_payload_is_what_it_says() {
    let a = run_texts(7);
    assert_eq!(a, run_texts(7));
    assert_ne!(a, run_texts(8));
    let mut rng = Rng(1);
    for _ in 0..200 {
        let case = phone(&mut rng);
        assert!(case.payload.len() >= 9, "{:?}", case.text);
        for p in &case.payload {
            assert!(!case.text[p.clone()].trim().is_empty());
        }
    }
}

fn run_texts(seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..50)
        .map(|_| phone(&mut rng).text + &email(&mut rng).text + &handle(&mut rng).text)
        .collect()
}
