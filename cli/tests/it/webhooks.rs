//! `paperhook webhooks listen` receiving real deliveries from the worker,
//! rejecting forged ones, and `webhooks verify` on saved requests.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::helpers::*;

/// A running `webhooks listen`: its URL and its output, line by line.
struct Listening {
    url: String,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    child: tokio::process::Child,
}

async fn listen(mut cmd: tokio::process::Command) -> Listening {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let mut stderr = lines(Box::new(child.stderr.take().unwrap()));
    let first = tokio::time::timeout(Duration::from_secs(20), stderr.recv())
        .await
        .expect("the listener started")
        .expect("a first line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .trim_end_matches('/')
        .to_owned();
    Listening {
        url,
        stdout,
        stderr,
        child,
    }
}

impl Listening {
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.recv())
            .await
            .expect("a delivery within 60 s")
            .expect("the listener is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

/// Points the template's webhook at `webhook` with `paperhook templates update`.
async fn point_webhook(sys: &System, key: &str, template: &str, webhook: Value) {
    let mut t = example_template();
    t["webhook"] = webhook;
    let file = write(sys.dir.path(), "t.json", t.to_string().as_bytes());
    let out = run(
        sys.cli(key)
            .args(["templates", "update", template, "-f"])
            .arg(&file),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
}

/// Submits the example PDF with `paperhook submit`.
async fn submit_example(sys: &System, key: &str, template: &str) {
    let docs = tempfile::tempdir().unwrap();
    let pdf = write(docs.path(), "invoice.pdf", example_pdf());
    let out = run(
        sys.cli(key)
            .args(["submit", "-t", template, pdf.to_str().unwrap()]),
        60,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
}

/// POSTs `body` to the listener with the given Standard Webhooks headers; returns the status.
async fn post_signed(sys: &System, url: &str, id: &str, ts: i64, sig: &str, body: &[u8]) -> u16 {
    sys.client
        .post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_verifies_real_deliveries_and_rejects_forgeries() {
    let sys = System::start().await;
    let (_, key) = sys.account(100).await;
    let template = sys.template(&key, None).await;
    let saved = sys.dir.path().join("saved");

    // The listener fetches the template's signing secret itself.
    let mut cmd = sys.cli(&key);
    cmd.args([
        "webhooks",
        "listen",
        "--port",
        "0",
        "--template",
        &template,
        "--save",
        saved.to_str().unwrap(),
        "--json",
    ]);
    let mut l = listen(cmd).await;

    point_webhook(
        &sys,
        &key,
        &template,
        json!({"url": format!("{}/hooks/paperhook", l.url), "headers": {"X-Token": "local-test"}}),
    )
    .await;

    // Two documents: one succeeds, one fails; each is one delivery.
    let docs = tempfile::tempdir().unwrap();
    write(docs.path(), "good.pdf", example_pdf());
    write(
        docs.path(),
        "bad.pdf",
        &invoice_pdf(None, "1.00", "ACME Supplies Ltd"),
    );
    let out = run(
        sys.cli(&key).args([
            "submit",
            "-t",
            &template,
            docs.path().to_str().unwrap(),
            "--static",
            "company_name=Acme Corp",
            "--wait",
        ]),
        120,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    let mut got = vec![l.next().await, l.next().await];
    got.sort_by_key(|d| {
        d["body"]["document"]["file_name"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    for d in &got {
        assert_eq!(d["verified"], true, "{d}");
        assert_eq!(d["error"], Value::Null, "{d}");
        assert_eq!(d["answered"], 200, "{d}");
        assert_eq!(d["method"], "POST");
        assert_eq!(d["path"], "/hooks/paperhook");
        assert!(d["webhook_id"].as_str().unwrap().starts_with("msg_"), "{d}");
        assert_eq!(d["headers"]["x-token"], "local-test", "{d}");
        assert_eq!(d["body"]["static_values"]["company_name"], "Acme Corp");
    }
    assert_eq!(got[0]["body"]["document"]["file_name"], "bad.pdf");
    assert_eq!(got[0]["body"]["status"], "FAILED");
    assert_eq!(got[0]["body"]["error"]["code"], "required_field_missing");
    assert_eq!(got[1]["body"]["status"], "SUCCESS");
    assert_eq!(got[1]["body"]["result"]["invoice_number"], "INV-2026-0042");

    // The worker recorded both deliveries as delivered (2xx).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
                .fetch_one(&sys.pool)
                .await
                .unwrap();
        if delivered == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{delivered} delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A forged signature and a replayed (old) request are answered 401.
    let secret_out = run(sys.cli(&key).args(["templates", "secret", &template]), 30).await;
    assert!(secret_out.status.success(), "{}", show(&secret_out));
    let secret = text(&secret_out.stdout).trim().to_owned();
    assert!(secret.starts_with("whsec_"));
    let body = br#"{"job_id":"forged","status":"SUCCESS"}"#;
    let now = chrono::Utc::now().timestamp();
    let hook = format!("{}/hooks/paperhook", l.url);
    // A signature made with another secret (the specification's example).
    let forged_sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let status = post_signed(&sys, &hook, "msg_forged", now, forged_sig, body).await;
    assert_eq!(status, 401);
    let d = l.next().await;
    assert_eq!(d["verified"], false, "{d}");
    assert_eq!(d["answered"], 401);
    assert!(
        d["error"].as_str().unwrap().contains("no v1 signature"),
        "{d}"
    );

    let old = now - 3600;
    let sig = sig_for(&secret, "msg_old", old, body);
    assert_eq!(
        post_signed(&sys, &hook, "msg_old", old, &sig, body).await,
        401
    );
    let d = l.next().await;
    assert_eq!(d["verified"], false, "{d}");
    assert!(d["error"].as_str().unwrap().contains("in the past"), "{d}");

    // A fresh, correctly signed request is accepted.
    let sig = sig_for(&secret, "msg_now", now, body);
    assert_eq!(
        post_signed(&sys, &hook, "msg_now", now, &sig, body).await,
        200
    );
    assert_eq!(l.next().await["verified"], true);
    l.child.start_kill().unwrap();
    let _ = l.child.wait().await;
    let mut notes = Vec::new();
    while let Ok(line) = l.stderr.try_recv() {
        notes.push(line);
    }
    assert!(notes.iter().any(|n| n.contains("Ctrl-C")), "{notes:?}");

    // `webhooks verify` on the saved deliveries: the real ones verify (their
    // timestamps are recent), a tampered body does not.
    for n in 1..=2 {
        let headers = saved.join(format!("{n:04}.headers"));
        let body = saved.join(format!("{n:04}.body"));
        let out = run(
            sys.cli(&key).args([
                "webhooks",
                "verify",
                "--secret",
                &secret,
                "--headers",
                headers.to_str().unwrap(),
                "--body",
                body.to_str().unwrap(),
            ]),
            30,
        )
        .await;
        assert!(out.status.success(), "{}", show(&out));
        assert!(text(&out.stdout).contains("verified"));
    }
    let tampered = saved.join("tampered.body");
    let mut bytes = std::fs::read(saved.join("0001.body")).unwrap();
    bytes.push(b' ');
    std::fs::write(&tampered, bytes).unwrap();
    let out = run(
        sys.cli(&key).args([
            "webhooks",
            "verify",
            "--secret",
            &secret,
            "--headers",
            saved.join("0001.headers").to_str().unwrap(),
            "--body",
            tampered.to_str().unwrap(),
        ]),
        30,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: not verified"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    // The old request verifies only when its timestamp is ignored.
    let h = write(
        sys.dir.path(),
        "old.json",
        json!({"webhook-id": "msg_old", "webhook-timestamp": old.to_string(), "webhook-signature": sig_for(&secret, "msg_old", old, body)})
            .to_string()
            .as_bytes(),
    );
    let b = write(sys.dir.path(), "old.body", body);
    let verify_old = |extra: &'static [&'static str]| {
        let mut cmd = sys.cli(&key);
        cmd.args(["webhooks", "verify", "--secret", &secret, "--headers"])
            .arg(&h)
            .arg("--body")
            .arg(&b)
            .args(extra);
        cmd
    };
    let out = run(&mut verify_old(&[]), 30).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(text(&out.stderr).contains("--ignore-timestamp"));
    let out = run(&mut verify_old(&["--ignore-timestamp"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));

    // A second run saving to the same folder adds to what the first saved
    // (it used to start again at 0001, over the first run's files).
    let bodies = || -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(&saved)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "body"))
            .filter(|p| {
                p.file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .is_ok()
            })
            .map(|p| {
                (
                    p.file_name().unwrap().to_str().unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    let first_run = bodies();
    let mut cmd = sys.cli(&key);
    cmd.args([
        "webhooks", "listen", "--port", "0", "--secret", &secret, "--json",
    ])
    .arg("--save")
    .arg(&saved);
    let mut again = listen(cmd).await;
    let hook = format!("{}/hooks/paperhook", again.url);
    let now = chrono::Utc::now().timestamp();
    let sig = sig_for(&secret, "msg_second_run", now, b"{\"second\":1}");
    let status = post_signed(&sys, &hook, "msg_second_run", now, &sig, b"{\"second\":1}").await;
    assert_eq!(status, 200);
    let highest = first_run
        .keys()
        .max()
        .unwrap()
        .trim_end_matches(".body")
        .parse::<u64>()
        .unwrap();
    let delivery = again.next().await;
    assert_eq!(delivery["verified"], true);
    assert_eq!(
        delivery["n"],
        highest + 1,
        "shown as the number it is saved under"
    );
    again.child.start_kill().unwrap();
    let _ = again.child.wait().await;
    let second_run = bodies();
    assert_eq!(
        second_run.len(),
        first_run.len() + 1,
        "{:?}",
        second_run.keys()
    );
    for (name, body) in &first_run {
        assert_eq!(&second_run[name], body, "{name} was overwritten");
    }
    assert_eq!(
        second_run[&format!("{:04}.body", highest + 1)],
        b"{\"second\":1}"
    );
}

fn sig_for(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    paperhook_core::webhook::sign(secret, id, ts, body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_answers_a_chosen_status_to_try_retries() {
    let sys = System::start().await;
    let (_, key) = sys.account(100).await;
    let template = sys.template(&key, None).await;
    let secret_out = run(sys.cli(&key).args(["templates", "secret", &template]), 30).await;
    let secret = text(&secret_out.stdout).trim().to_owned();

    // Answer 503 twice, then stop: the worker retries (schedule 0s,0s,0s).
    let mut cmd = sys.cli(&key);
    cmd.args([
        "webhooks", "listen", "--port", "0", "--status", "503", "--count", "2",
    ])
    .env("PAPERHOOK_WEBHOOK_SECRET", &secret);
    let mut l = listen(cmd).await;
    point_webhook(&sys, &key, &template, json!({"url": format!("{}/", l.url)})).await;
    submit_example(&sys, &key, &template).await;

    // Text output: two attempts of the same delivery, verified, answered 503.
    let status = tokio::time::timeout(Duration::from_secs(60), l.child.wait())
        .await
        .expect("the listener stops after --count requests")
        .unwrap();
    assert!(status.success());
    let mut lines = Vec::new();
    while let Some(line) = l.stdout.recv().await {
        lines.push(line);
    }
    let printed = lines.join("\n");
    assert_eq!(printed.matches("✓ verified").count(), 2, "{printed}");
    assert_eq!(printed.matches("→ 503").count(), 2, "{printed}");
    assert!(printed.contains("INV-2026-0042"), "{printed}");
    assert!(!printed.contains('\x1b'), "no colour off a terminal");
    let ids: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("webhook-id "))
        .collect();
    assert_eq!(ids.len(), 2, "{printed}");
    assert_eq!(ids[0], ids[1], "a retry keeps its webhook-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_sends_failed_webhooks_again_once_the_receiver_is_fixed() {
    let sys = System::start().await;
    let (_, key) = sys.account(100).await;
    let template = sys.template(&key, None).await;

    // A broken receiver: 500 to the first attempt and the three retries
    // (schedule 0s,0s,0s), so the delivery fails.
    let mut cmd = sys.cli(&key);
    cmd.args([
        "webhooks",
        "listen",
        "--port",
        "0",
        "--template",
        &template,
        "--status",
        "500",
        "--count",
        "4",
        "--json",
    ]);
    let mut broken = listen(cmd).await;
    point_webhook(
        &sys,
        &key,
        &template,
        json!({"url": format!("{}/", broken.url)}),
    )
    .await;
    submit_example(&sys, &key, &template).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let d = broken.next().await;
        assert_eq!(d["answered"], 500, "{d}");
        ids.push(d["webhook_id"].as_str().unwrap().to_owned());
    }
    let job = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let res = sys
                .client
                .get(format!("{}/v1/jobs?delivery=failed", sys.url))
                .header("x-auth", &key)
                .send()
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            if let Some(job) = body["jobs"][0]["job_id"].as_str() {
                break job.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the delivery did not fail within 30 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // Fixed: the same webhook is sent again, with its webhook-id.
    let mut cmd = sys.cli(&key);
    cmd.args([
        "webhooks",
        "listen",
        "--port",
        "0",
        "--template",
        &template,
        "--count",
        "1",
        "--json",
    ]);
    let mut fixed = listen(cmd).await;
    point_webhook(
        &sys,
        &key,
        &template,
        json!({"url": format!("{}/", fixed.url)}),
    )
    .await;
    let out = run(sys.cli(&key).args(["webhooks", "resend", "--json"]), 60).await;
    assert!(out.status.success(), "{}", show(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"delivery": "failed", "queued": 1, "job_ids": [job]})
    );
    let d = fixed.next().await;
    assert_eq!(
        (d["verified"].as_bool(), d["answered"].as_u64()),
        (Some(true), Some(200)),
        "{d}"
    );
    assert_eq!(d["webhook_id"], ids[0], "{d}");
    assert!(ids.iter().all(|id| id == &ids[0]));
    assert_eq!(d["body"]["job_id"], job);

    // Nothing left: said on stderr, exit 0; a bad template id is a usage error with a hint.
    let out = run(sys.cli(&key).args(["webhooks", "resend", "--gone"]), 60).await;
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("No refused (410 Gone) webhooks to send again"),
        "{}",
        show(&out)
    );
    let out = run(
        sys.cli(&key)
            .args(["webhooks", "resend", "--template", "nope"]),
        30,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("templates list"),
        "{}",
        show(&out)
    );
}
