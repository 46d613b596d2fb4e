//! Field-level accuracy of the generated corpus, per input kind and per
//! locator kind.
//!
//! `OMP_THREAD_LIMIT=1 cargo run --release -p paperhook-extract --example score [per_layout]`

#[path = "../tests/it/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::time::Instant;

use paperhook_extract::{Options, extract};

fn main() {
    let per_layout: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let docs = corpus::corpus(per_layout);
    // SCORE_DUMP=dir writes the digital PDFs there, to inspect them.
    if let Ok(dir) = std::env::var("SCORE_DUMP") {
        for d in &docs {
            std::fs::write(format!("{dir}/{}.pdf", d.name), &d.pdf).expect("writing a dump");
        }
    }
    let opts = Options::default();
    // (input kind, locator kind) -> (right, total)
    let mut tally: BTreeMap<(String, String), (u32, u32)> = BTreeMap::new();
    let mut misses = Vec::new();
    let inputs: Vec<Option<&corpus::Scan>> = std::iter::once(None)
        .chain(corpus::SCANS.iter().map(Some))
        .collect();
    for input in inputs {
        let kind = input.map_or("digital_pdf", |s| s.name);
        let started = Instant::now();
        for (i, doc) in docs.iter().enumerate() {
            let bytes = match input {
                None => doc.pdf.clone(),
                Some(scan) => {
                    corpus::encode(&corpus::scan_image(&doc.pdf, scan, i as u64), scan.format)
                }
            };
            let got = extract(&bytes, &doc.template, &opts);
            for field in &doc.template.fields {
                let want = &doc.expected[&field.name];
                let ok = got
                    .as_ref()
                    .is_ok_and(|g| corpus::field_ok(g.result.get(&field.name), want));
                let e = tally
                    .entry((kind.to_owned(), field.locator.kind().to_owned()))
                    .or_default();
                e.1 += 1;
                if ok {
                    e.0 += 1;
                } else {
                    let g = match &got {
                        Ok(g) => g
                            .result
                            .get(&field.name)
                            .cloned()
                            .unwrap_or_default()
                            .to_string(),
                        Err(e) => format!("error {}: {e}", e.code()),
                    };
                    misses.push(format!(
                        "{kind} {}.{}: got {g}, want {want}",
                        doc.name, field.name
                    ));
                }
            }
        }
        eprintln!(
            "{kind}: {} documents in {:.1} s",
            docs.len(),
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{:<24} {:<8} {:>6} {:>6} {:>8}",
        "input", "locator", "right", "total", "accuracy"
    );
    let mut per_input: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for ((input, loc), (ok, n)) in &tally {
        println!(
            "{input:<24} {loc:<8} {ok:>6} {n:>6} {:>7.1}%",
            100.0 * *ok as f64 / *n as f64
        );
        let e = per_input.entry(input.clone()).or_default();
        e.0 += ok;
        e.1 += n;
    }
    println!();
    for (input, (ok, n)) in &per_input {
        println!(
            "{input:<24} {:<8} {ok:>6} {n:>6} {:>7.1}%",
            "all",
            100.0 * *ok as f64 / *n as f64
        );
    }
    if !misses.is_empty() {
        println!("\nmisses:");
        for m in misses {
            println!("  {m}");
        }
    }
}
