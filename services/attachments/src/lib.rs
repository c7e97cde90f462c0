//! Image attachments: where they are kept (`storage`: local disk by
//! default, any S3-compatible store when scaled, with presigned uploads
//! signed by `rusty-s3`) and what is checked before one is delivered
//! (`image_check`).

pub mod image_check;
pub mod service;
pub mod storage;
