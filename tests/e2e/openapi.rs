//! The REST facade's OpenAPI document, checked by tools from other
//! projects: `openapi-spec-validator` (the document is valid OpenAPI 3.x,
//! every path parameter is in its path) and `schemathesis` against the live
//! server, every operation with a token of the role it is for: no server
//! error, every status code documented, every body of the documented
//! content type and schema. Both come from PyPI into a virtualenv that
//! `scripts/test.sh` makes (`scripts/python-tools.sh`).

use std::path::PathBuf;
use std::process::Command;

use chat_e2e::Server;
use serde_json::json;

use crate::CHATD;

fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("CHAT_TEST_PY_VENV").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/chat-py/venv"),
        PathBuf::from,
    );
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.exists(),
        "{} missing: run scripts/python-tools.sh (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn run(mut command: Command) -> (bool, String) {
    let out = command.output().expect("running a Python tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_the_live_server_keeps_to_it() {
    // Fuzzing sends many requests: REST limits out of the way.
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_RATE_LIMITS__REST_PER_MINUTE", "100000000"),
            ("CHAT_RATE_LIMITS__REST_BURST", "10000000"),
            ("CHAT_RATE_LIMITS__NEW_THREADS_PER_HOUR", "100000000"),
        ],
    )
    .await;
    // Something to find: a thread with a message, a product, an order.
    let thread = server.thread_between("stbuyer", "stseller").await;
    let platform = server.token("stplatform", "platform");
    for (path, body) in [
        (
            "/internal/products/p1".to_owned(),
            json!({"sellerId": "stseller", "title": "Áo thun", "price": 150000, "currency": "VND"}),
        ),
        (
            "/internal/orders/o1".to_owned(),
            json!({"buyerId": "stbuyer", "sellerId": "stseller", "summary": "1 × Áo thun"}),
        ),
    ] {
        let (status, reply) = server.request("PUT", &path, &platform, Some(body)).await;
        assert!(status < 300, "{path}: {status} {reply}");
    }
    // A second pass of the thread routes with `{id}` = that thread, so
    // requests get past "not found" into the handlers' own logic.
    let known_thread = dir_config(&thread);

    let doc_path = known_thread.path().join("openapi.json");
    let (status, doc) = server.request("GET", "/openapi.json", "", None).await;
    assert_eq!(status, 200);
    std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();

    let mut validate = Command::new(venv_bin("openapi-spec-validator"));
    validate.arg(&doc_path);
    let (ok, out) = run(validate);
    assert!(ok, "openapi-spec-validator:\n{out}");

    let base = server.url("");
    let base = base.trim_end_matches('/');
    let known = known_thread.path().join("schemathesis.toml");
    let runs = [
        ("buyer", "stbuyer", "^/chat/", None),
        ("seller", "stseller", "^/chat/", None),
        ("buyer", "stbuyer", "^/chat/threads/", Some(&known)),
        ("seller", "stseller", "^/chat/threads/", Some(&known)),
        ("admin", "stadmin", "^/admin/", None),
        ("platform", "stplatform", "^/internal/", None),
        ("", "", "^/(healthz|readyz|metrics)$", None),
    ];
    for (role, user, paths, config) in runs {
        let mut st = Command::new(venv_bin("st"));
        if let Some(config) = config {
            st.arg("--config-file").arg(config);
        }
        st.current_dir(known_thread.path())
            .args(["run", doc_path.to_str().unwrap(), "--url", base])
            .args(["--include-path-regex", paths])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "25", "--seed", "1", "--workers", "1"])
            .args(["--no-color", "--generation-database", "none"])
            .env("NO_COLOR", "1");
        if !role.is_empty() {
            st.args([
                "-H",
                &format!("Authorization: Bearer {}", server.token(user, role)),
            ]);
        }
        let (ok, out) = run(st);
        eprintln!(
            "schemathesis as {role:?} on {paths} (known thread: {}):\n{}",
            config.is_some(),
            tail(&out, 12)
        );
        assert!(ok, "schemathesis as {role:?} on {paths} failed:\n{out}");
        assert!(
            !out.contains("Server error"),
            "schemathesis as {role:?}: a server error\n{out}"
        );
    }
    assert!(
        !server.log().contains("panicked"),
        "a handler panicked:\n{}",
        server.log()
    );
}

/// A directory with a `schemathesis.toml` pinning every `{id}` to `thread`.
fn dir_config(thread: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("schemathesis.toml"),
        format!("[parameters]\n\"path.id\" = \"{thread}\"\n"),
    )
    .unwrap();
    dir
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
