//! login, whoami, templates, status and results; errors and help.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_writes_a_private_file_and_a_bad_key_is_a_clear_error() {
    let sys = System::start().await;
    let (account, key) = sys.account(42).await;
    let home = tempfile::tempdir().unwrap();
    let xdg = home.path().join("xdg");
    // The default place: $XDG_CONFIG_HOME/paperhook/config.toml.
    let cli = |args: &[&str]| {
        let mut cmd = sys.cli(&key);
        cmd.env_remove("PAPERHOOK_URL")
            .env_remove("PAPERHOOK_API_KEY")
            .env_remove("PAPERHOOK_CLI_CONFIG")
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", &xdg)
            .args(args);
        cmd
    };

    // A wrong key: nothing saved, a clear message, a non-zero exit.
    // The last character changed (to one it is not).
    let bad = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('x') { 'y' } else { 'x' }
    );
    let out = run(&mut cli(&["login", "--url", &sys.url, "--key", &bad]), 30).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: unknown or revoked API key (401 unauthorized)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the API key is wrong or revoked"),
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    assert!(out.stdout.is_empty());
    let file = xdg.join("paperhook/config.toml");
    assert!(!file.exists());

    // The right key, read from standard input.
    let mut cmd = cli(&["login", "--url", &format!("{}/", sys.url)]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{key}\n").as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("as Test Co (42 credits)"),
        "{}",
        show(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let dir_mode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0, "{dir_mode:o}");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains(&key) && saved.contains(&sys.url), "{saved}");

    // whoami reads it.
    let out = run(&mut cli(&["whoami", "--json"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["account_id"], account.to_string());
    assert_eq!(who["credits"], 42);
    assert_eq!(who["url"], sys.url);
    assert!(
        !who.to_string().contains(&key),
        "the key is never printed whole"
    );
    let out = run(&mut cli(&["whoami"]), 30).await;
    assert!(text(&out.stdout).contains("credits  42"), "{}", show(&out));

    // The environment overrides the file: a bad key there is refused.
    let out = run(cli(&["whoami"]).env("PAPERHOOK_API_KEY", &bad), 30).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("unknown or revoked API key"),
        "{}",
        show(&out)
    );
    let out = run(
        cli(&["submit", "-t", "00000000-0000-0000-0000-000000000000", "."])
            .env("PAPERHOOK_API_KEY", &bad),
        30,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("unknown or revoked API key"),
        "{}",
        show(&out)
    );

    // A URL where nothing listens.
    let out = run(
        cli(&["whoami"]).env("PAPERHOOK_URL", "http://127.0.0.1:9"),
        60,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("is the Paperhook API running at http://127.0.0.1:9?"),
        "{}",
        show(&out)
    );

    // A file that others can read is pointed out.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&mut cli(&["whoami"]), 30).await;
    assert!(text(&out.stderr).contains("chmod 600"), "{}", show(&out));

    let out = run(&mut cli(&["logout"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(!file.exists());
    let out = run(&mut cli(&["whoami"]), 30).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hint: run `paperhook login"),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_status_results_help_and_completions() {
    let sys = System::start().await;
    let (_, key) = sys.account(10).await;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/template.json");

    let out = run(sys.cli(&key).args(["templates", "list"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stderr).contains("No templates yet"));

    let out = run(
        sys.cli(&key)
            .args(["templates", "create", "-f", example, "--json"]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "ACME invoices");

    let out = run(sys.cli(&key).args(["templates", "list"]), 30).await;
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("ACME invoices"),
        "{listed}"
    );
    assert!(
        listed.contains("https://example.com/paperhook-webhook"),
        "{listed}"
    );

    let out = run(sys.cli(&key).args(["templates", "show", &id]), 30).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("invoice_number") && shown.contains("(required)"),
        "{shown}"
    );
    assert!(
        shown.contains("Authorization: ****"),
        "headers are masked: {shown}"
    );

    // show --json can be edited and sent back with update.
    let out = run(sys.cli(&key).args(["templates", "show", &id, "--json"]), 30).await;
    let mut t: Value = serde_json::from_slice(&out.stdout).unwrap();
    t["name"] = "Renamed".into();
    let file = write(sys.dir.path(), "t.json", t.to_string().as_bytes());
    let out = run(
        sys.cli(&key)
            .args(["templates", "update", &id, "-f", file.to_str().unwrap()]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let out = run(sys.cli(&key).args(["templates", "show", &id, "--json"]), 30).await;
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["name"], "Renamed");

    // An invalid template: the API's message, exit 1.
    let broken = write(
        sys.dir.path(),
        "broken.json",
        br#"{"name": "x", "fields": [{"name": "a"}]}"#,
    );
    let out = run(
        sys.cli(&key)
            .args(["templates", "create", "-f", broken.to_str().unwrap()]),
        30,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).starts_with("error: "), "{}", show(&out));

    // A job, its status and its results.
    let pdf = write(sys.dir.path(), "invoice.pdf", example_pdf());
    let out = run(
        sys.cli(&key)
            .args(["submit", "-t", &id, pdf.to_str().unwrap(), "--json"]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = report["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    let out = run(sys.cli(&key).args(["status", &job, "--wait"]), 60).await;
    assert!(out.status.success(), "{}", show(&out));
    let status = text(&out.stdout);
    assert!(
        status.contains("SUCCESS") && status.contains("invoice.pdf") && status.contains("1 page"),
        "{status}"
    );
    let out = run(sys.cli(&key).args(["results", &job]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results["documents"][0]["result"]["invoice_number"],
        "INV-2026-0042"
    );
    let csv_file = sys.dir.path().join("job.csv");
    let out = run(
        sys.cli(&key).args([
            "results",
            &job,
            "--format",
            "csv",
            "--output",
            csv_file.to_str().unwrap(),
        ]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let rows = csv_records(&std::fs::read_to_string(&csv_file).unwrap());
    assert_eq!(rows[0]["total"], "316.5");

    // Unknown ids: clear errors with hints.
    let out = run(
        sys.cli(&key)
            .args(["status", "00000000-0000-0000-0000-000000000000"]),
        30,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no job with this id (404 job_not_found)"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    let out = run(sys.cli(&key).args(["results", "not-a-job"]), 30).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a job id"),
        "{}",
        show(&out)
    );

    // Delete needs --yes without a terminal.
    let out = run(sys.cli(&key).args(["templates", "delete", &id]), 30).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("--yes"));
    let out = run(
        sys.cli(&key).args(["templates", "delete", &id, "--yes"]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let out = run(sys.cli(&key).args(["templates", "show", &id]), 30).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("template_not_found"),
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("paperhook templates list"),
        "{}",
        show(&out)
    );

    // Help with examples, usage errors, completions.
    for cmd in [
        vec!["--help"],
        vec!["submit", "--help"],
        vec!["webhooks", "listen", "--help"],
        vec!["templates", "create", "--help"],
    ] {
        let out = run(sys.cli(&key).args(&cmd), 30).await;
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            text(&out.stdout).contains("Examples:"),
            "{cmd:?}: {}",
            show(&out)
        );
    }
    let out = run(sys.cli(&key).args(["submit", "--concurrency", "0"]), 30).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    for shell in ["bash", "zsh", "fish"] {
        let out = run(sys.cli(&key).args(["completions", shell]), 30).await;
        assert!(out.status.success(), "{}", show(&out));
        assert!(text(&out.stdout).contains("paperhook"), "{shell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_secret_says_how_long_the_old_one_still_signs() {
    let sys = System::start().await;
    let (_, key) = sys.account(1).await;
    let template = sys.template(&key, None).await;
    let secret = |extra: &[&str]| {
        let mut cmd = sys.cli(&key);
        cmd.args(["templates", "secret", &template]).args(extra);
        cmd
    };
    let before = run(&mut secret(&[]), 30).await;
    let first = text(&before.stdout).trim().to_owned();
    let out = run(&mut secret(&["--rotate"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    let second = text(&out.stdout).trim().to_owned();
    assert!(
        second.starts_with("whsec_") && second != first,
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("The previous secret also signs webhooks until"),
        "{}",
        show(&out)
    );
    let out = run(
        &mut secret(&["--rotate", "--previous-valid", "0", "--json"]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(got["previous_secret_expires_at"].is_null(), "{got}");
    assert_ne!(got["secret"], second.as_str());
    let out = run(&mut secret(&["--previous-valid", "5"]), 30).await;
    assert_eq!(out.status.code(), Some(2), "needs --rotate: {}", show(&out));
    let out = run(&mut secret(&["--rotate", "--previous-valid", "999999"]), 30).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("604800"), "{}", show(&out));
}

/// An HTTP server on 127.0.0.1 that answers every connection with
/// `answer` and keeps the request heads it was sent; its port.
async fn stub_server(answer: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = Vec::new();
            // The request head (GET: no body).
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            kept.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&got).into_owned());
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_not_sent_where_a_redirect_points() {
    let elsewhere = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
    let (other, other_seen) = stub_server(elsewhere.into()).await;
    // Another host name for the same machine: another server to a client.
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nlocation: http://localhost:{other}/v1/templates\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (api, api_seen) = stub_server(redirect).await;
    let dir = tempfile::tempdir().unwrap();
    let key = "ph_test_secret_key_never_to_leave";
    let out = run(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_paperhook"))
            .env("PAPERHOOK_URL", format!("http://127.0.0.1:{api}"))
            .env("PAPERHOOK_API_KEY", key)
            .env("PAPERHOOK_CLI_CONFIG", dir.path().join("none.toml"))
            .args(["templates", "list"])
            .stdin(std::process::Stdio::null()),
        30,
    )
    .await;
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("302") && err.contains("redirect that was not followed"),
        "{}",
        show(&out)
    );
    assert!(api_seen.lock().unwrap().iter().any(|r| r.contains(key)));
    let leaked = other_seen.lock().unwrap();
    assert!(leaked.iter().all(|r| !r.contains(key)), "{leaked:?}");
    assert!(leaked.is_empty(), "{leaked:?}");
}
