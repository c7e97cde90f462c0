//! What the server does with an uploaded image before anyone else sees it.
//! Nothing a client uploads is trusted: the real type comes from the magic
//! bytes (not the declared type or the name), the decoder runs under
//! limits (a 20,000 × 20,000 "bomb" is refused before it is allocated),
//! and the image is re-encoded from its pixels, so EXIF (GPS position,
//! camera serial) and every other metadata block are gone. A thumbnail is
//! made from the same pixels. Pure: bytes in, bytes out.

use std::io::Cursor;

use image::{DynamicImage, ImageReader, Limits};

pub use image::ImageFormat;

/// Formats accepted, by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    Webp,
}

impl Kind {
    pub fn sniff(bytes: &[u8]) -> Option<Kind> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Kind::Jpeg)
        } else if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]) {
            Some(Kind::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Kind::Webp)
        } else {
            None
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Webp => "image/webp",
        }
    }

    pub fn from_mime(mime: &str) -> Option<Kind> {
        match mime {
            "image/jpeg" | "image/jpg" => Some(Kind::Jpeg),
            "image/png" => Some(Kind::Png),
            "image/webp" => Some(Kind::Webp),
            _ => None,
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Kind::Jpeg => ImageFormat::Jpeg,
            Kind::Png => ImageFormat::Png,
            Kind::Webp => ImageFormat::WebP,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageLimits {
    pub max_bytes: u64,
    /// Largest width and height accepted.
    pub max_side: u32,
    /// Largest pixel count (width × height).
    pub max_pixels: u64,
    /// Longest side of the thumbnail.
    pub thumb_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: 10 * 1024 * 1024,
            max_side: 8000,
            max_pixels: 40_000_000,
            thumb_side: 320,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not an image we accept (JPEG, PNG, WebP)")]
    NotAnImage,
    #[error("declared {declared}, but the file is {actual}")]
    TypeMismatch {
        declared: String,
        actual: &'static str,
    },
    #[error("{0} bytes is more than allowed")]
    TooLarge(u64),
    #[error("{width} × {height} pixels is more than allowed")]
    TooManyPixels { width: u32, height: u32 },
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
}

/// The cleaned image, ready to store.
#[derive(Debug, Clone)]
pub struct Processed {
    pub kind: Kind,
    pub width: u32,
    pub height: u32,
    /// Re-encoded from the pixels: no metadata survives.
    pub image: Vec<u8>,
    pub image_mime: &'static str,
    pub thumbnail: Vec<u8>,
    pub thumb_width: u32,
    pub thumb_height: u32,
}

/// What the header says, checked against the limits: kind and dimensions,
/// before a pixel is decoded.
pub fn inspect(
    bytes: &[u8],
    declared_mime: &str,
    limits: &ImageLimits,
) -> Result<(Kind, u32, u32), ImageError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::TooLarge(bytes.len() as u64));
    }
    let kind = Kind::sniff(bytes).ok_or(ImageError::NotAnImage)?;
    if Kind::from_mime(declared_mime) != Some(kind) {
        return Err(ImageError::TypeMismatch {
            declared: declared_mime.to_owned(),
            actual: kind.mime(),
        });
    }
    if !complete(kind, bytes) {
        return Err(ImageError::Corrupt("the file is truncated".into()));
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    // Dimensions from the header first: a bomb never gets decoded.
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    if width == 0
        || height == 0
        || width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageError::TooManyPixels { width, height });
    }
    Ok((kind, width, height))
}

/// Bytes of memory decoding and re-encoding a `width` × `height` image
/// takes at most: its RGBA8 pixels twice (the decoded image and the
/// encoder's working copy), plus the decoder's own buffers.
pub fn decode_cost(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * 8 + 8 * 1024 * 1024
}

/// Checks and cleans an upload declared as `declared_mime`.
pub fn process(
    bytes: &[u8],
    declared_mime: &str,
    limits: &ImageLimits,
) -> Result<Processed, ImageError> {
    let (kind, width, height) = inspect(bytes, declared_mime, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // RGBA8 of the largest allowed image, plus the decoder's own buffers.
    decoder_limits.max_alloc = Some(limits.max_pixels * 4 + 64 * 1024 * 1024);
    reader.limits(decoder_limits);
    let decoded = reader
        .decode()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    // PNG keeps PNG (screenshots, transparency); photos become JPEG.
    let (image, image_mime) = match kind {
        Kind::Png => (encode(&decoded, ImageFormat::Png)?, "image/png"),
        Kind::Jpeg | Kind::Webp => (encode_jpeg(&decoded)?, "image/jpeg"),
    };
    let thumb = decoded.thumbnail(limits.thumb_side, limits.thumb_side);
    let thumbnail = encode_jpeg(&thumb)?;
    Ok(Processed {
        kind,
        width,
        height,
        image,
        image_mime,
        thumb_width: thumb.width(),
        thumb_height: thumb.height(),
        thumbnail,
    })
}

/// Whether the file ends as its format says it must (decoders fill in a
/// truncated JPEG with grey rather than fail).
fn complete(kind: Kind, bytes: &[u8]) -> bool {
    let last = |marker: &[u8]| bytes.windows(marker.len()).rposition(|w| w == marker);
    match kind {
        // The end-of-image marker after the last start-of-scan (an EXIF
        // thumbnail brings an end marker of its own, earlier).
        Kind::Jpeg => match (last(&[0xFF, 0xDA]), last(&[0xFF, 0xD9])) {
            (Some(scan), Some(end)) => end > scan,
            _ => false,
        },
        Kind::Png => last(b"IEND").is_some(),
        Kind::Webp => {
            let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
            bytes.len() >= declared + 8
        }
    }
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, ImageError> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    Ok(out.into_inner())
}

fn encode_jpeg(image: &DynamicImage) -> Result<Vec<u8>, ImageError> {
    // JPEG has no alpha channel.
    let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    rgb.write_with_encoder(encoder)
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Test images, shared with the end-to-end tests.
pub mod samples {
    use super::*;

    /// A `width` × `height` gradient as `format`.
    pub fn image(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, format)
            .expect("encoding a sample");
        out.into_inner()
    }

    /// A JPEG carrying an EXIF block with a GPS position (Hà Nội), as a
    /// phone camera writes it.
    pub fn jpeg_with_gps() -> Vec<u8> {
        let jpeg = image(64, 48, ImageFormat::Jpeg);
        // TIFF (little endian): IFD0 with one entry, GPSInfo → GPS IFD with
        // GPSLatitudeRef 'N' and GPSLatitude 21/1 1/1 0/1.
        let mut tiff: Vec<u8> = Vec::new();
        tiff.extend_from_slice(b"II*\0");
        tiff.extend_from_slice(&8u32.to_le_bytes());
        // IFD0 at 8: 1 entry
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x8825u16.to_le_bytes()); // GPSInfo
        tiff.extend_from_slice(&4u16.to_le_bytes()); // LONG
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&26u32.to_le_bytes()); // GPS IFD offset
        tiff.extend_from_slice(&0u32.to_le_bytes()); // next IFD
        // GPS IFD at 26: 2 entries
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes()); // GPSLatitudeRef
        tiff.extend_from_slice(&2u16.to_le_bytes()); // ASCII
        tiff.extend_from_slice(&2u32.to_le_bytes());
        tiff.extend_from_slice(b"N\0\0\0");
        tiff.extend_from_slice(&2u16.to_le_bytes()); // GPSLatitude
        tiff.extend_from_slice(&5u16.to_le_bytes()); // RATIONAL
        tiff.extend_from_slice(&3u32.to_le_bytes());
        tiff.extend_from_slice(&56u32.to_le_bytes()); // value offset
        tiff.extend_from_slice(&0u32.to_le_bytes());
        for (n, d) in [(21u32, 1u32), (1, 1), (0, 1)] {
            tiff.extend_from_slice(&n.to_le_bytes());
            tiff.extend_from_slice(&d.to_le_bytes());
        }
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// A valid PNG header claiming 20,000 × 20,000 pixels (a
    /// decompression bomb: 1.6 GB once decoded), with a tiny body.
    pub fn pixel_bomb() -> Vec<u8> {
        let mut png = image(1, 1, ImageFormat::Png);
        // IHDR: length at 8, type at 12, width and height at 16..24, CRC
        // (over type and data) at 29..33.
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_jpeg_loses_its_gps_position_and_gets_a_thumbnail() {
        let upload = jpeg_with_gps();
        assert!(contains(&upload, b"Exif\0\0"), "the sample carries EXIF");
        let out = process(&upload, "image/jpeg", &ImageLimits::default()).unwrap();
        assert_eq!((out.width, out.height), (64, 48));
        assert!(!contains(&out.image, b"Exif"), "EXIF removed");
        assert_eq!(Kind::sniff(&out.image), Some(Kind::Jpeg));
        assert_eq!(Kind::sniff(&out.thumbnail), Some(Kind::Jpeg));
        assert!(!contains(&out.thumbnail, b"Exif"));
    }

    #[test]
    fn large_images_get_a_small_thumbnail_keeping_the_ratio() {
        let png = image(1200, 600, ImageFormat::Png);
        let out = process(&png, "image/png", &ImageLimits::default()).unwrap();
        assert_eq!(out.image_mime, "image/png");
        assert_eq!((out.thumb_width, out.thumb_height), (320, 160));
    }

    #[test]
    fn lies_bombs_and_broken_files_are_refused() {
        let limits = ImageLimits::default();
        let png = image(10, 10, ImageFormat::Png);
        assert_eq!(
            process(&png, "image/jpeg", &limits).unwrap_err(),
            ImageError::TypeMismatch {
                declared: "image/jpeg".into(),
                actual: "image/png"
            },
            "a PNG renamed .jpg"
        );
        assert_eq!(
            process(b"hello, this is text", "image/png", &limits).unwrap_err(),
            ImageError::NotAnImage
        );
        assert_eq!(
            process(&pixel_bomb(), "image/png", &limits).unwrap_err(),
            ImageError::TooManyPixels {
                width: 20_000,
                height: 20_000
            }
        );
        let jpeg = image(200, 200, ImageFormat::Jpeg);
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(
            process(truncated, "image/jpeg", &limits),
            Err(ImageError::Corrupt(_))
        ));
        let big = vec![0u8; 11 * 1024 * 1024];
        assert!(matches!(
            process(&big, "image/jpeg", &limits),
            Err(ImageError::TooLarge(_))
        ));
    }
}
