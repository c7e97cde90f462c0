//! The S3 backend against a real S3-compatible server (S3Proxy, which
//! checks SigV4 signatures like S3): the server's own reads and writes,
//! presigned uploads that work, expire, and refuse another size or type.

use chat_attachments::storage::{S3Config, Storage};

async fn storage(secret: Option<&str>) -> Storage {
    let (endpoint, access_key, secret_key) = chat_e2e::ensure_s3().await;
    Storage::s3(&S3Config {
        endpoint,
        public_endpoint: None,
        bucket: "chat-test".into(),
        region: "ap-southeast-1".into(),
        access_key,
        secret_key: secret.map(str::to_owned).unwrap_or(secret_key),
    })
    .unwrap()
}

fn key(name: &str) -> String {
    format!("tests/{}/{name}", uuid_like())
}

fn uuid_like() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn signed_reads_and_writes_and_a_wrong_secret_is_refused() {
    let s3 = storage(None).await;
    let key = key("a.bin");
    s3.put(&key, b"xin chao".to_vec(), "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(s3.get(&key, 100).await.unwrap().unwrap(), b"xin chao");
    assert!(s3.get(&key, 3).await.is_err(), "over the size limit");
    let forged = storage(Some("not-the-secret")).await;
    assert!(forged.get(&key, 100).await.is_err(), "signature checked");
    s3.delete(&key).await.unwrap();
    assert_eq!(s3.get(&key, 100).await.unwrap(), None);
}

#[tokio::test]
async fn presigned_uploads_allow_one_size_and_type_until_they_expire() {
    let s3 = storage(None).await;
    let http = reqwest::Client::new();
    let body = vec![7u8; 1000];
    let put = |url: String, headers: Vec<(String, String)>, body: Vec<u8>| {
        let mut request = http.put(url).body(body);
        for (name, value) in headers {
            if name != "content-length" {
                request = request.header(name, value);
            }
        }
        request.send()
    };

    let key1 = key("ok.png");
    let target = s3.upload_target(&key1, "image/png", 1000, 60).unwrap();
    let response = put(target.url.clone(), target.headers.clone(), body.clone())
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    assert_eq!(s3.get(&key1, 2000).await.unwrap().unwrap(), body);

    // More bytes than declared: refused, nothing stored.
    let key2 = key("big.png");
    let target = s3.upload_target(&key2, "image/png", 1000, 60).unwrap();
    let response = put(target.url, target.headers, vec![7u8; 5000])
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(s3.get(&key2, 10_000).await.unwrap(), None);

    // Another content type than declared: refused.
    let key3 = key("type.png");
    let target = s3.upload_target(&key3, "image/png", 1000, 60).unwrap();
    let headers = vec![("content-type".to_owned(), "text/html".to_owned())];
    let response = put(target.url, headers, body.clone()).await.unwrap();
    assert_eq!(response.status(), 403);

    // After expiry: refused.
    let key4 = key("late.png");
    let target = s3.upload_target(&key4, "image/png", 1000, 1).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = put(target.url, target.headers, body.clone()).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(s3.get(&key4, 10_000).await.unwrap(), None);

    // A presigned download works for whoever holds the URL, until expiry.
    let url = s3.download_url(&key1, 60).unwrap();
    let got = http.get(url).send().await.unwrap();
    assert!(got.status().is_success());
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);
}
