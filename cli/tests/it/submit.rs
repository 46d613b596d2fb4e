//! `paperhook submit` end to end: a folder of 50 mixed documents, and a run
//! interrupted and resumed without duplicates.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const VENDOR: &str = "ACME Supplies Ltd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_fifty_mixed_documents_with_wait_writes_every_result() {
    let sys = System::start().await;
    let (account, key) = sys.account(1000).await;
    let template = sys.template(&key, None).await;

    // 50 files: 45 distinct digital PDFs, a PDF without an invoice number
    // (it fails), a byte-for-byte copy of one PDF, the example scan as PNG
    // and as JPEG, and a ZIP of three more PDFs; plus a text file that is
    // not a document and a dot-file, which are skipped.
    let docs = tempfile::tempdir().unwrap();
    let dir = docs.path().join("invoices");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut expected: HashMap<String, (String, String)> = HashMap::new();
    for i in 0..45 {
        let number = format!("INV-2026-{}", 1000 + i);
        let total = format!("{}.25", 100 + i);
        // Some in a sub-folder: folders are searched recursively.
        let name = if i % 10 == 0 {
            format!("sub/inv-{i:02}.pdf")
        } else {
            format!("inv-{i:02}.pdf")
        };
        write(&dir, &name, &invoice_pdf(Some(&number), &total, VENDOR));
        expected.insert(name, (number, total));
    }
    write(&dir, "zz-bad.pdf", &invoice_pdf(None, "10.00", VENDOR));
    write(
        &dir,
        "copy-of-inv-01.pdf",
        &invoice_pdf(Some("INV-2026-1001"), "101.25", VENDOR),
    );
    write(&dir, "scan.png", example_png());
    let jpeg = {
        let img = image::load_from_memory(example_png()).unwrap();
        let mut out = std::io::Cursor::new(Vec::new());
        img.to_luma8()
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    write(&dir, "scan.jpg", &jpeg);
    let zip_entries: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("z{i}.pdf"),
                invoice_pdf(
                    Some(&format!("INV-2026-{}", 2000 + i)),
                    &format!("{}.50", 200 + i),
                    VENDOR,
                ),
            )
        })
        .collect();
    write(
        &dir,
        "batch.zip",
        &make_zip(
            &zip_entries
                .iter()
                .map(|(n, d)| (n.as_str(), d.clone()))
                .collect::<Vec<_>>(),
        ),
    );
    write(&dir, "notes.txt", b"not a document");
    write(&dir, ".DS_Store", b"\0\0\0\x01Bud1");
    let files = walk_count(&dir);
    assert_eq!(files, 52, "50 documents and two other files");

    let results = docs.path().join("results.csv");
    let out = run(
        sys.cli(&key).args([
            "submit",
            "--template",
            &template,
            dir.to_str().unwrap(),
            "--static",
            "company=Acme, Inc.",
            "--static",
            "batch:=7",
            "--concurrency",
            "4",
            "--wait",
            "--output",
            results.to_str().unwrap(),
            "--json",
        ]),
        240,
    )
    .await;
    // One document failed: exit code 3 and a summary of the reasons.
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Failures by reason"), "{stderr}");
    assert!(stderr.contains("required_field_missing ×1"), "{stderr}");
    assert!(stderr.contains("zz-bad.pdf"), "{stderr}");
    assert!(stderr.contains("skipped 1 file"), "{stderr}");
    assert!(stderr.contains("error: 1 document failed"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour off a terminal: {stderr:?}"
    );
    // Plain progress lines when not on a terminal.
    assert!(stderr.contains("uploaded "), "{stderr}");
    assert!(stderr.contains("done "), "{stderr}");

    let report: Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON document");
    let summary = &report["summary"];
    assert_eq!(summary["files"], 50, "{summary}");
    // The copy has the same content: one job for both.
    assert_eq!(summary["jobs"], 49, "{summary}");
    assert_eq!(summary["created"], 49, "{summary}");
    assert_eq!(summary["replayed"], 0, "{summary}");
    // Documents as the API counts them: the copy is not one more.
    assert_eq!(summary["documents_succeeded"], 50, "{summary}");
    assert_eq!(summary["documents_failed"], 1, "{summary}");
    assert_eq!(summary["pages"], 51, "{summary}");
    assert_eq!(report["failures"][0]["code"], "required_field_missing");
    assert_eq!(sys.jobs_of(account).await, 49);

    // Credits charged, as the account sees them.
    let who = run(sys.cli(&key).args(["whoami", "--json"]), 30).await;
    assert!(who.status.success(), "{}", show(&who));
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    let charged = 1000 - who["credits"].as_i64().unwrap();
    assert_eq!(summary["credits"], charged, "{summary}");
    assert_eq!(
        charged, 50,
        "one credit per page of each successful document"
    );

    // The results file: one row per document, with the extracted values.
    let csv = std::fs::read_to_string(&results).unwrap();
    let header = parse_csv(&csv)[0].clone();
    assert_eq!(
        header,
        [
            "source",
            "job_id",
            "index",
            "file_name",
            "status",
            "pages",
            "error_code",
            "error_message",
            "batch",
            "company",
            "invoice_number",
            "invoice_date",
            "total",
            "vendor",
            "line_items"
        ]
    );
    let records = csv_records(&csv);
    assert_eq!(records.len(), 52, "{csv}");
    let by_source = |suffix: &str| -> Vec<&HashMap<String, String>> {
        records
            .iter()
            .filter(|r| r["source"].ends_with(suffix))
            .collect()
    };
    for (name, (number, total)) in &expected {
        let rows = by_source(&format!("invoices/{name}"));
        assert_eq!(rows.len(), 1, "{name}");
        let r = rows[0];
        assert_eq!(r["status"], "PROCESS IMAGE SUCCESS", "{r:?}");
        assert_eq!(&r["invoice_number"], number, "{r:?}");
        assert_eq!(&r["total"], total, "{r:?}");
        assert_eq!(r["invoice_date"], "2026-11-14", "{r:?}");
        assert_eq!(r["vendor"], VENDOR, "{r:?}");
        assert_eq!(r["company"], "Acme, Inc.");
        assert_eq!(r["batch"], "7");
        assert_eq!(r["pages"], "1");
        let items: Value = serde_json::from_str(&r["line_items"]).unwrap();
        assert_eq!(items[0]["description"], "Paper A4 box", "{items}");
        assert_eq!(items[0]["qty"], 3, "{items}");
    }
    let copy = by_source("copy-of-inv-01.pdf");
    let original = by_source("invoices/inv-01.pdf");
    assert_eq!(copy[0]["invoice_number"], "INV-2026-1001");
    assert_eq!(copy[0]["job_id"], original[0]["job_id"], "sent once");
    for scan in ["scan.png", "scan.jpg"] {
        let r = by_source(scan);
        assert_eq!(r.len(), 1, "{scan}");
        assert_eq!(r[0]["status"], "PROCESS IMAGE SUCCESS", "{:?}", r[0]);
        assert_eq!(r[0]["invoice_number"], "INV-2026-0042", "{:?}", r[0]);
        assert_eq!(r[0]["total"], "316.5", "{:?}", r[0]);
    }
    let zipped = by_source("batch.zip");
    assert_eq!(zipped.len(), 3);
    for (i, r) in zipped.iter().enumerate() {
        let r = zipped
            .iter()
            .find(|r| r["file_name"] == format!("z{i}.pdf"))
            .unwrap_or(r);
        assert_eq!(
            r["invoice_number"],
            format!("INV-2026-{}", 2000 + i),
            "{r:?}"
        );
        assert_eq!(r["total"], format!("{}.5", 200 + i), "{r:?}");
        assert_eq!(r["job_id"], zipped[0]["job_id"], "one job for the ZIP");
    }
    let bad = by_source("zz-bad.pdf");
    assert_eq!(bad[0]["status"], "PROCESS IMAGE FAILED");
    assert_eq!(bad[0]["error_code"], "required_field_missing");
    assert!(
        bad[0]["error_message"].contains("invoice_number"),
        "{:?}",
        bad[0]
    );
    assert_eq!(bad[0]["invoice_number"], "");

    // The results of one job, as the API gives them.
    let zip_job = zipped[0]["job_id"].clone();
    let out = run(
        sys.cli(&key).args(["results", &zip_job, "--format", "csv"]),
        30,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let api_csv = csv_records(&text(&out.stdout));
    assert_eq!(api_csv.len(), 3);
    assert_eq!(api_csv[0]["company"], "Acme, Inc.");
    let out = run(sys.cli(&key).args(["status", &zip_job, "--json"]), 30).await;
    assert!(out.status.success(), "{}", show(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"], "SUCCESS");
    assert_eq!(status["document_type"], "zip");
    assert_eq!(status["documents"].as_array().unwrap().len(), 3);
}

fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_count(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumed_creates_no_duplicates() {
    let sys = System::start().await;
    let (account, key) = sys.account(1000).await;
    let template = sys.template(&key, None).await;
    let docs = tempfile::tempdir().unwrap();
    let dir = docs.path().join("batch");
    std::fs::create_dir(&dir).unwrap();
    const N: i64 = 40;
    for i in 0..N {
        write(
            &dir,
            &format!("doc-{i:02}.pdf"),
            &invoice_pdf(
                Some(&format!("INV-2026-{}", 3000 + i)),
                &format!("{}.00", 10 + i),
                VENDOR,
            ),
        );
    }
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "submit",
            "--template",
            &template,
            dir.to_str().unwrap(),
            "--static",
            "run=resume",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // One at a time, interrupted (Ctrl-C) once a few jobs exist.
    let child = sys
        .cli(&key)
        .args(args(&["--concurrency", "1"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sys.jobs_of(account).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no jobs were created"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap();
    // The shell's kill builtin: no procps needed.
    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let first = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let created_first = sys.jobs_of(account).await;
    assert!(
        created_first < N,
        "the run was interrupted before the end ({created_first} jobs)"
    );
    assert_eq!(first.status.code(), Some(130), "{}", show(&first));
    let stderr = text(&first.stderr);
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );

    // The same command again, waiting for the results this time.
    let results = docs.path().join("results.jsonl");
    let out = run(
        sys.cli(&key).args(args(&[
            "--wait",
            "--output",
            results.to_str().unwrap(),
            "--json",
        ])),
        180,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &report["summary"];
    // Every job of the first run is found again. (A request in flight at the
    // interruption may still have created its job after the count above.)
    let replayed = summary["replayed"].as_i64().unwrap();
    assert!(replayed >= created_first, "{summary}");
    assert_eq!(
        replayed + summary["created"].as_i64().unwrap(),
        N,
        "{summary}"
    );
    assert_eq!(summary["documents_succeeded"], N, "{summary}");
    assert_eq!(sys.jobs_of(account).await, N, "no job was created twice");
    let replayed_jobs = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["replayed"] == true)
        .count() as i64;
    assert_eq!(replayed_jobs, replayed);
    assert!(text(&out.stderr).contains("created by an earlier run"));

    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as i64, N);
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l["source"]
                .as_str()
                .unwrap()
                .ends_with(&format!("doc-{i:02}.pdf")),
            "{l}"
        );
        assert_eq!(l["status"], "PROCESS IMAGE SUCCESS", "{l}");
        assert_eq!(
            l["result"]["invoice_number"],
            format!("INV-2026-{}", 3000 + i),
            "{l}"
        );
        assert_eq!(l["result"]["total"], 10.0 + i as f64, "{l}");
        assert_eq!(l["static_values"]["run"], "resume");
    }

    // A third run replays everything and creates nothing.
    let out = run(sys.cli(&key).args(args(&["--json"])), 60).await;
    assert!(out.status.success(), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["replayed"], N);
    assert_eq!(report["summary"]["created"], 0);
    assert_eq!(sys.jobs_of(account).await, N);

    // Other static values are other jobs.
    let out = run(
        sys.cli(&key).args([
            "submit",
            "--template",
            &template,
            dir.join("doc-00.pdf").to_str().unwrap(),
            "--static",
            "run=other",
        ]),
        60,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(sys.jobs_of(account).await, N + 1);
    // Without --json: one line per job on stdout (id, status, file).
    let line = text(&out.stdout);
    assert!(line.trim_end().ends_with("doc-00.pdf"), "{line}");
    assert!(line.contains("\tNEW\t"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_batches_and_retrying_failed_documents() {
    let sys = System::start().await;
    let (account, key) = sys.account(1000).await;
    let template = sys.template(&key, None).await;
    let docs = tempfile::tempdir().unwrap();
    let dir = docs.path().join("in");
    std::fs::create_dir_all(dir.join("other")).unwrap();
    for i in 0..5 {
        write(
            &dir,
            &format!("a-{i}.pdf"),
            &invoice_pdf(Some(&format!("INV-2026-{}", 4000 + i)), "1.00", VENDOR),
        );
    }
    // The same file name in another folder becomes another ZIP entry.
    write(
        &dir,
        "other/a-4.pdf",
        &invoice_pdf(Some("INV-2026-4999"), "1.00", VENDOR),
    );
    let results = docs.path().join("r.jsonl");
    let out = run(
        sys.cli(&key).args([
            "submit",
            "-t",
            &template,
            dir.to_str().unwrap(),
            "--zip",
            "--zip-max-files",
            "4",
            "--wait",
            "-o",
            results.to_str().unwrap(),
            "--json",
        ]),
        120,
    )
    .await;
    assert!(out.status.success(), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["jobs"], 2, "6 files in batches of 4");
    assert_eq!(report["summary"]["documents_succeeded"], 6);
    assert_eq!(sys.jobs_of(account).await, 2);
    let rows: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    let numbers: HashMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["result"]["invoice_number"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        numbers[&format!("{}", dir.join("a-3.pdf").display())],
        "INV-2026-4003"
    );
    assert_eq!(
        numbers[&format!("{}", dir.join("a-4.pdf").display())],
        "INV-2026-4004"
    );
    assert_eq!(
        numbers[&format!("{}", dir.join("other/a-4.pdf").display())],
        "INV-2026-4999"
    );

    // A failed document: re-running replays the failure; --retry-failed
    // submits it again (once), and a further run replays the new job.
    let bad = write(docs.path(), "bad.pdf", &invoice_pdf(None, "1.00", VENDOR));
    let submit = |extra: &'static [&'static str]| {
        let mut cmd = sys.cli(&key);
        cmd.args([
            "submit",
            "-t",
            &template,
            bad.to_str().unwrap(),
            "--wait",
            "--json",
        ])
        .args(extra);
        cmd
    };
    documents_failed_saying(&mut submit(&[]), 60, "--retry-failed").await;
    let out = run(&mut submit(&[]), 60).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["replayed"], 1);
    assert_eq!(sys.jobs_of(account).await, 3);
    let out = run(&mut submit(&["--retry-failed"]), 60).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["jobs"][0]["resubmitted"], true);
    assert_eq!(sys.jobs_of(account).await, 4);
    let out = run(&mut submit(&[]), 60).await;
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        sys.jobs_of(account).await,
        4,
        "the plain re-run replays the first job"
    );
}

/// A ZIP batch the workers refuse as a whole (more entries than
/// `zip_max_entries`) fails every file of it with that reason in the
/// results file, not with an empty error; and --retry-failed, which would
/// send whole batches again, is refused with --zip.
#[tokio::test]
async fn a_batch_refused_as_a_whole_gives_each_file_the_reason() {
    let sys = System::start_with(|c| c.zip_max_entries = 2).await;
    let (_, key) = sys.account(100).await;
    let template = sys.template(&key, None).await;
    let docs = tempfile::tempdir().unwrap();
    let dir = docs.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3 {
        let number = format!("INV-2026-{}", 5000 + i);
        write(
            &dir,
            &format!("b-{i}.pdf"),
            &invoice_pdf(Some(&number), "1.00", VENDOR),
        );
    }
    let results = docs.path().join("r.csv");
    let (dir, results) = (dir.to_str().unwrap(), results.to_str().unwrap());
    let batches = |retry: bool| {
        let mut cmd = sys.cli(&key);
        let flags = ["--zip", "--wait", "-o", results];
        cmd.args(["submit", "-t", &template, dir]).args(flags);
        if retry {
            cmd.arg("--retry-failed");
        }
        cmd
    };
    let out = documents_failed_saying(&mut batches(false), 120, "without --zip").await;
    // The summary counts every file of the batch, not the batch once.
    assert!(
        text(&out.stderr).contains("documents: 0 done, 3 failed"),
        "{}",
        show(&out)
    );
    let rows = csv_records(&std::fs::read_to_string(results).unwrap());
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["status"], "FAILED", "{row:?}");
        assert_eq!(row["error_code"], "zip_too_many_entries", "{row:?}");
        assert!(!row["error_message"].is_empty(), "{row:?}");
    }
    let out = run(&mut batches(true), 60).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("--retry-failed"),
        "{}",
        show(&out)
    );
}
