//! Image messages end to end, on both storage backends: the local
//! directory behind the REST facade, and a real S3-compatible server
//! (S3Proxy, SigV4 checked). An upload slot, the upload itself, the image
//! message; the recipient gets a cleaned image (no EXIF) and a thumbnail
//! through signed URLs; lies, bombs and broken files are refused with an
//! error and leave nothing behind; strangers cannot read the files.

use chat_attachments::image_check::{ImageFormat, samples};
use chat_e2e::{Client, Server, Via};
use chat_protocol::v2::Event;
use chat_protocol::{Card, ErrorCode, MessageType};
use serde_json::{Value, json};

use crate::CHATD;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asks for an upload slot and uploads `bytes` as told: the upload id and
/// the status of the upload request.
async fn upload(
    server: &Server,
    token: &str,
    thread: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> (String, u16) {
    let (status, slot) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/uploads"),
            token,
            Some(json!({"contentType": content_type, "size": bytes.len()})),
        )
        .await;
    assert_eq!(status, 201, "{slot}");
    let status = put(&slot, bytes).await;
    (slot["uploadId"].as_str().unwrap().to_owned(), status)
}

/// PUTs `bytes` to an upload slot's URL with its signed headers.
async fn put(slot: &Value, bytes: Vec<u8>) -> u16 {
    let mut request = reqwest::Client::new()
        .put(slot["url"].as_str().unwrap())
        .body(bytes);
    for pair in slot["headers"].as_array().unwrap() {
        let (name, value) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        // reqwest sets content-length from the body itself.
        if name != "content-length" {
            request = request.header(name, value);
        }
    }
    request.send().await.unwrap().status().as_u16()
}

async fn fetch(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    (
        response.status().as_u16(),
        response.bytes().await.unwrap().to_vec(),
    )
}

async fn run_flow(server: &Server) {
    let thread = server.thread_between("ab", "as").await;
    let buyer_token = server.token("ab", "buyer");
    let mut buyer = Client::connect(server, "ab", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let mut seller = Client::connect(server, "as", "seller", Via::Tcp).await;
    seller.subscribe_inbox().await;

    // A phone photo with the buyer's GPS position in its EXIF.
    let photo = samples::jpeg_with_gps();
    assert!(contains(&photo, b"Exif"));
    let (upload_id, status) = upload(server, &buyer_token, &thread, "image/jpeg", photo).await;
    assert_eq!(status, 200);
    let message_id = buyer
        .send_image(&thread, "img-1", &upload_id)
        .await
        .expect("the image message is stored");

    let card = seller
        .expect("the image message", |_, e| match e {
            Event::Msg(m) if m.id == message_id => {
                assert_eq!(m.kind, MessageType::Image);
                assert_eq!(m.from.as_deref(), Some("ab"));
                assert_eq!(m.content, "", "no body: the picture is the card");
                m.card.clone()
            }
            _ => None,
        })
        .await;
    let Card::Image {
        width,
        height,
        mime,
        url: Some(url),
        thumb_url: Some(thumb_url),
        ..
    } = card
    else {
        panic!("not an image card with URLs: {card:?}");
    };
    assert_eq!((width, height, mime.as_str()), (64, 48, "image/jpeg"));
    let (status, image) = fetch(&url).await;
    assert_eq!(status, 200);
    assert!(image.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    assert!(!contains(&image, b"Exif"), "the GPS position is gone");
    let (status, thumb) = fetch(&thumb_url).await;
    assert_eq!(status, 200);
    assert!(thumb.starts_with(&[0xFF, 0xD8, 0xFF]));

    // History carries fresh signed URLs too.
    let (_, history) = server
        .request(
            "GET",
            &format!("/chat/threads/{thread}/messages"),
            &server.token("as", "seller"),
            None,
        )
        .await;
    let card = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == message_id.as_str())
        .unwrap()["card"]
        .clone();
    assert_eq!(card["card"], "image");
    assert_eq!(fetch(card["url"].as_str().unwrap()).await.0, 200);

    // Without the signature, or with another, nobody reads it.
    let unsigned = url.split('?').next().unwrap();
    assert!(matches!(fetch(unsigned).await.0, 400 | 403));
    let tampered = url
        .replace("&sig=", "&sig=00")
        .replace("X-Amz-Signature=", "X-Amz-Signature=00");
    assert_eq!(fetch(&tampered).await.0, 403);

    // Refused uploads: an error to the sender, nothing stored or delivered.
    let png = samples::image(10, 10, ImageFormat::Png);
    let mut jpeg = samples::image(200, 200, ImageFormat::Jpeg);
    jpeg.truncate(jpeg.len() / 2);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("a PNG renamed .jpg", "image/jpeg", png),
        (
            "a text file",
            "image/png",
            b"just some text, not an image".to_vec(),
        ),
        (
            "a 20,000 x 20,000 pixel bomb",
            "image/png",
            samples::pixel_bomb(),
        ),
        ("a truncated JPEG", "image/jpeg", jpeg),
    ];
    for (i, (what, content_type, bytes)) in cases.into_iter().enumerate() {
        let (upload_id, status) = upload(server, &buyer_token, &thread, content_type, bytes).await;
        assert_eq!(status, 200, "{what}: the upload itself is accepted");
        let error = buyer
            .send_image(&thread, &format!("bad-{i}"), &upload_id)
            .await
            .expect_err(what);
        assert_eq!(error.code, ErrorCode::InvalidAttachment, "{what}");
        assert!(!error.msg.is_empty());
        // Sending it again does not revive it.
        let again = buyer
            .send_image(&thread, &format!("bad-again-{i}"), &upload_id)
            .await
            .expect_err(what);
        assert_eq!(again.code, ErrorCode::InvalidAttachment);
    }
    // An upload of someone else's slot, or an unknown id: refused too.
    let error = buyer
        .send_image(
            &thread,
            "bad-unknown",
            "01900000-0000-7000-8000-000000000000",
        )
        .await
        .expect_err("unknown upload");
    assert_eq!(error.code, ErrorCode::InvalidAttachment);

    // A stranger cannot even ask for an upload slot in the thread.
    let (status, _) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/uploads"),
            &server.token("stranger", "buyer"),
            Some(json!({"contentType": "image/png", "size": 10})),
        )
        .await;
    assert_eq!(status, 404);
    // Nor declare something that is not an image, or too big.
    for body in [
        json!({"contentType": "text/html", "size": 10}),
        json!({"contentType": "image/png", "size": 50 * 1024 * 1024}),
    ] {
        let (status, _) = server
            .request(
                "POST",
                &format!("/chat/threads/{thread}/uploads"),
                &buyer_token,
                Some(body),
            )
            .await;
        assert_eq!(status, 400);
    }

    // A PUT bigger than declared is refused by the storage itself.
    let (status, slot) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/uploads"),
            &buyer_token,
            Some(json!({"contentType": "image/png", "size": 100})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(put(&slot, vec![0u8; 5000]).await, 403);

    // Only the one good image reached the seller.
    let images: Vec<_> = seller
        .drain(std::time::Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Msg(m) if m.from.as_deref() == Some("ab")))
        .collect();
    assert!(images.is_empty(), "{images:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_messages_on_the_local_disk_default() {
    let server = Server::start_with(CHATD, &[("CHAT_ATTACHMENTS__UPLOAD_TTL_SECS", "60")]).await;
    run_flow(&server).await;
    // Nothing of the refused uploads stayed on disk: only the good image
    // and its thumbnail.
    let root = server.chat_data_dir().join("attachments");
    let files = |dir: std::path::PathBuf| -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    stack.push(entry.path());
                } else {
                    out.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    };
    assert!(
        files(root.join("uploads")).is_empty(),
        "{:?}",
        files(root.join("uploads"))
    );
    let mut images = files(root.join("images"));
    images.sort();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(images[0].ends_with("-thumb.jpg") || images[1].ends_with("-thumb.jpg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_messages_on_s3() {
    let (endpoint, access_key, secret_key) = chat_e2e::ensure_s3().await;
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_ATTACHMENTS__BACKEND", "s3"),
            ("CHAT_ATTACHMENTS__S3__ENDPOINT", &endpoint),
            ("CHAT_ATTACHMENTS__S3__BUCKET", "chat-test"),
            ("CHAT_ATTACHMENTS__S3__REGION", "ap-southeast-1"),
            ("CHAT_ATTACHMENTS__S3__ACCESS_KEY", &access_key),
            ("CHAT_ATTACHMENTS__S3__SECRET_KEY", &secret_key),
        ],
    )
    .await;
    run_flow(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_urls_expire() {
    let (endpoint, access_key, secret_key) = chat_e2e::ensure_s3().await;
    for backend in ["local", "s3"] {
        let server = Server::start_with(
            CHATD,
            &[
                ("CHAT_ATTACHMENTS__BACKEND", backend),
                ("CHAT_ATTACHMENTS__UPLOAD_TTL_SECS", "1"),
                ("CHAT_ATTACHMENTS__S3__ENDPOINT", &endpoint),
                ("CHAT_ATTACHMENTS__S3__BUCKET", "chat-test"),
                ("CHAT_ATTACHMENTS__S3__ACCESS_KEY", &access_key),
                ("CHAT_ATTACHMENTS__S3__SECRET_KEY", &secret_key),
            ],
        )
        .await;
        let thread = server.thread_between("eb", "es").await;
        let photo = samples::image(20, 20, ImageFormat::Png);
        let (status, slot) = server
            .request(
                "POST",
                &format!("/chat/threads/{thread}/uploads"),
                &server.token("eb", "buyer"),
                Some(json!({"contentType": "image/png", "size": photo.len()})),
            )
            .await;
        assert_eq!(status, 201);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(put(&slot, photo).await, 403, "{backend}: expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_never_sent_are_deleted() {
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_ATTACHMENTS__UNUSED_UPLOAD_TTL_SECS", "1"),
            ("CHAT_ATTACHMENTS__SWEEP_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let thread = server.thread_between("sb", "ss").await;
    let photo = samples::image(20, 20, ImageFormat::Png);
    let (upload_id, status) = upload(
        &server,
        &server.token("sb", "buyer"),
        &thread,
        "image/png",
        photo,
    )
    .await;
    assert_eq!(status, 200);
    let file = server
        .chat_data_dir()
        .join("attachments/uploads")
        .join(&upload_id);
    assert!(file.exists(), "uploaded");
    chat_e2e::wait_for(
        "the unused upload to be swept",
        std::time::Duration::from_secs(15),
        || (!file.exists()).then_some(()),
    )
    .await;
    // And it cannot be used any more.
    let mut buyer = Client::connect(&server, "sb", "buyer", Via::Tcp).await;
    buyer.subscribe_inbox().await;
    let error = buyer
        .send_image(&thread, "late", &upload_id)
        .await
        .expect_err("swept");
    assert_eq!(error.code, ErrorCode::InvalidAttachment);
}
