//! Any bytes as an uploaded image, header checks only (what runs before a
//! decoder is trusted with the pixels): never a panic; dimensions within
//! the limits whenever it is accepted.
#![no_main]

use chat_attachments::image_check::{ImageLimits, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits::default();
    for declared in ["image/jpeg", "image/png", "image/webp"] {
        if let Ok((_, width, height)) = inspect(data, declared, &limits) {
            assert!(width > 0 && height > 0);
            assert!(width <= limits.max_side && height <= limits.max_side);
            assert!(u64::from(width) * u64::from(height) <= limits.max_pixels);
        }
    }
});
