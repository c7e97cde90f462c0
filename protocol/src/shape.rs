//! The shape check every untrusted payload passes before a decoder sees it.
//!
//! serde decoders recurse once per nesting level, so a publish of a few
//! hundred bytes nested a few hundred deep overflows the stack of a debug
//! build (a release build survives only because rmp's own default limit
//! happens to be hit first). This walk is iterative and bounded by the
//! payload's length: it accepts exactly one well-formed MessagePack map,
//! nested at most [`MAX_DEPTH`] levels, with nothing after it.

/// Deepest nesting accepted, the envelope itself being level 1. Our
/// envelopes use 3 levels (a message's card); the rest is headroom for
/// fields a newer client may add.
pub const MAX_DEPTH: usize = 16;

/// Why a payload failed the shape check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeError {
    /// Not a map at the top (an array, a string, nothing).
    NotAMap,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Cut short, a reserved byte, or bytes after the end.
    Invalid,
}

/// Checks that `payload` is one MessagePack map, at most [`MAX_DEPTH`] deep,
/// with nothing after it. Never recurses; O(len) time, O(depth) memory.
pub fn check(payload: &[u8]) -> Result<(), ShapeError> {
    match payload.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        _ => return Err(ShapeError::NotAMap),
    }
    let mut pos = 0usize;
    // Items still to read in each open container, innermost last; the
    // bottom entry is the single top-level value.
    let mut open: Vec<u64> = Vec::with_capacity(MAX_DEPTH + 1);
    open.push(1);
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        let marker = *payload.get(pos).ok_or(ShapeError::Invalid)?;
        pos += 1;
        let (skip, items): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err(ShapeError::Invalid),
            0xc4 | 0xd9 => (read_len(payload, &mut pos, 1)?, 0),
            0xc5 | 0xda => (read_len(payload, &mut pos, 2)?, 0),
            0xc6 | 0xdb => (read_len(payload, &mut pos, 4)?, 0),
            // ext: length, then a type byte, then the data.
            0xc7 => (read_len(payload, &mut pos, 1)? + 1, 0),
            0xc8 => (read_len(payload, &mut pos, 2)? + 1, 0),
            0xc9 => (read_len(payload, &mut pos, 4)? + 1, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, read_len(payload, &mut pos, 2)?),
            0xdd => (0, read_len(payload, &mut pos, 4)?),
            0xde => (0, 2 * read_len(payload, &mut pos, 2)?),
            0xdf => (0, 2 * read_len(payload, &mut pos, 4)?),
        };
        let rest = (payload.len() - pos) as u64;
        if skip > rest {
            return Err(ShapeError::Invalid);
        }
        pos += skip as usize;
        let is_container = matches!(marker, 0x80..=0x9f | 0xdc..=0xdf);
        if is_container {
            // Every item takes at least one byte: a count beyond what is
            // left is a lie, refused before anything is allocated for it.
            if items > rest {
                return Err(ShapeError::Invalid);
            }
            if open.len() > MAX_DEPTH {
                return Err(ShapeError::TooDeep);
            }
            open.push(items);
        }
    }
    if pos == payload.len() {
        Ok(())
    } else {
        Err(ShapeError::Invalid)
    }
}

fn read_len(payload: &[u8], pos: &mut usize, width: usize) -> Result<u64, ShapeError> {
    let bytes = payload.get(*pos..*pos + width).ok_or(ShapeError::Invalid)?;
    *pos += width;
    Ok(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"x": [[[…]]]}` with `depth` levels in all (the map counts).
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = vec![0x81, 0xa1, b'x'];
        out.extend(std::iter::repeat_n(0x91, depth.saturating_sub(2)));
        out.push(0x90);
        out
    }

    #[test]
    fn maps_of_every_kind_of_value_pass() {
        #[derive(serde::Serialize)]
        struct All {
            a: u8,
            b: i64,
            c: u64,
            d: f32,
            e: f64,
            f: String,
            g: Vec<u32>,
            h: Option<bool>,
            #[serde(with = "serde_bytes")]
            i: Vec<u8>,
            j: std::collections::BTreeMap<String, Vec<String>>,
            k: i8,
        }
        let value = All {
            a: 200,
            b: -1_000_000_000_000,
            c: u64::MAX,
            d: 1.5,
            e: -2.25,
            f: "ệ".repeat(100),
            g: (0..70_000).collect(),
            h: None,
            i: vec![7; 70_000],
            j: [("k".to_owned(), vec!["v".to_owned(); 20])].into(),
            k: -3,
        };
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        assert_eq!(check(&bytes), Ok(()));
        // ext types and a map16.
        let mut ext = vec![0xde, 0x00, 0x03];
        ext.extend([0xa1, b'a', 0xd4, 0x01, 0x02]);
        ext.extend([0xa1, b'b', 0xc7, 0x02, 0x05, 0xaa, 0xbb]);
        ext.extend([0xa1, b'c', 0xd8, 0x01]);
        ext.extend([0u8; 16]);
        assert_eq!(check(&ext), Ok(()));
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(check(&nested(MAX_DEPTH + 1)), Err(ShapeError::TooDeep));
        // Deep enough to overflow any recursive decoder's stack.
        assert_eq!(check(&nested(1_000_000)), Err(ShapeError::TooDeep));
    }

    #[test]
    fn anything_but_one_whole_map_is_refused() {
        assert_eq!(check(b""), Err(ShapeError::NotAMap));
        assert_eq!(check(&[0x92, 0x01, 0xa1, b'x']), Err(ShapeError::NotAMap));
        assert_eq!(check(&[0xa3, b'a', b'b', b'c']), Err(ShapeError::NotAMap));
        assert_eq!(check(&[0x81, 0xa1, b'x']), Err(ShapeError::Invalid), "cut");
        assert_eq!(check(&[0x80, 0x00]), Err(ShapeError::Invalid), "trailing");
        assert_eq!(check(&[0x81, 0xa1, b'x', 0xc1]), Err(ShapeError::Invalid));
        assert_eq!(
            check(&[0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(ShapeError::Invalid),
            "an array claiming 4 billion items in 8 bytes"
        );
        assert_eq!(
            check(&[0x81, 0xa1, b'x', 0xdb, 0x7f, 0xff, 0xff, 0xff]),
            Err(ShapeError::Invalid),
            "a string longer than the payload"
        );
        assert_eq!(
            check(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(ShapeError::Invalid)
        );
    }

    /// Every prefix and every single-byte corruption of a real envelope
    /// either passes or is refused, never panics, and only the whole
    /// payload passes among the prefixes.
    #[test]
    fn prefixes_and_corruptions_never_panic() {
        let bytes = crate::encode(&crate::ClientEvent::SendMessage {
            client_msg_id: "c-1".into(),
            kind: crate::MessageType::Text,
            content: "Chào shop".into(),
        });
        for cut in 0..bytes.len() {
            assert!(check(&bytes[..cut]).is_err(), "prefix {cut}");
        }
        assert_eq!(check(&bytes), Ok(()));
        for i in 0..bytes.len() {
            for b in 0..=255u8 {
                let mut c = bytes.clone();
                c[i] = b;
                let _ = check(&c);
            }
        }
    }
}
