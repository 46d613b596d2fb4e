//! Performance, measured against baselines in the same run:
//! rendering (hayro vs `pdftoppm` and `mutool draw`, 150/300 DPI, one
//! thread and all cores), digital extraction per page, and zonal vs
//! full-page OCR.
//!
//! `OMP_THREAD_LIMIT=1 cargo run --release -p paperhook-extract --example bench`
//! (needs poppler-utils and mupdf-tools for the baselines).

#[path = "../tests/it/corpus.rs"]
mod corpus;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paperhook_extract::{Options, Template, extract, render_page};
use rayon::prelude::*;
use serde_json::json;

const RUNS: usize = 3;
/// Runs per mode of the zonal comparison (each well under a second).
const ZONAL_RUNS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Run `make(first, last)` commands over page ranges split into `jobs`
/// parallel processes and wait for all.
fn external(pages: u32, jobs: u32, make: &dyn Fn(u32, u32) -> Command) -> bool {
    let per = pages.div_ceil(jobs);
    let children: Vec<_> = (0..jobs)
        .filter_map(|j| {
            let first = j * per + 1;
            let last = ((j + 1) * per).min(pages);
            (first <= last).then(|| make(first, last).stderr(Stdio::null()).spawn())
        })
        .collect();
    let mut ok = true;
    for c in children {
        ok &= c.and_then(|mut c| c.wait()).is_ok_and(|s| s.success());
    }
    ok
}

fn main() {
    let cores = rayon::current_num_threads() as u32;
    let docs = corpus::corpus(6);
    let pages: Vec<corpus::Page> = docs.iter().map(|d| d.page.clone()).collect();
    let pdf = corpus::write_pdf(&pages);
    let n = pages.len() as u32;
    let dir = std::env::temp_dir().join(format!("paperhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pdf_path = dir.join("corpus.pdf");
    std::fs::write(&pdf_path, &pdf).expect("writing the PDF");
    let opts = Options::default();
    // `bench zonal` runs only the zonal OCR comparison.
    // `bench zonal` runs only the zonal OCR comparison, `bench regex` only
    // the template's compile passes.
    let only = std::env::args().nth(1);
    if only.is_none() {
        render_and_digital(&pdf, &pdf_path, &dir, &docs, n, cores, &opts);
    }
    if only.as_deref() != Some("zonal") {
        compile_passes(&docs, &opts);
    }
    if only.as_deref() != Some("regex") {
        zonal_vs_full(&docs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn render_and_digital(
    pdf: &[u8],
    pdf_path: &std::path::Path,
    dir: &std::path::Path,
    docs: &[corpus::Doc],
    n: u32,
    cores: u32,
    opts: &Options,
) {
    println!("# Rendering: {n} pages (A4 invoices and forms, receipts), pages/s, median of {RUNS}");
    println!("| renderer | DPI | 1 thread | {cores} threads |");
    println!("|---|---|---|---|");
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let hayro = |dpi: u32| {
        let one = time(RUNS, || {
            for p in 1..=n {
                render_page(pdf, p, dpi, opts).expect("render");
            }
        });
        let all = time(RUNS, || {
            (1..=n).into_par_iter().for_each(|p| {
                render_page(pdf, p, dpi, opts).expect("render");
            })
        });
        (rate(one), rate(all))
    };
    // The C library's defaults first, then as the worker runs (the setting
    // holds for the rest of the process).
    let plain = [hayro(150), hayro(300)];
    assert!(
        paperhook_extract::keep_page_buffers(),
        "mallopt refused the setting"
    );
    for (i, dpi) in [150u32, 300].into_iter().enumerate() {
        println!(
            "| hayro, malloc defaults | {dpi} | {:.1} | {:.1} |",
            plain[i].0, plain[i].1
        );
        let (one, all) = hayro(dpi);
        println!("| hayro, page buffers kept (the worker) | {dpi} | {one:.1} | {all:.1} |");
        let out = dir.join("p");
        let poppler = |jobs: u32| {
            time(RUNS, || {
                let ok = external(n, jobs, &|f, l| {
                    let mut c = Command::new("pdftoppm");
                    c.args([
                        "-gray",
                        "-r",
                        &dpi.to_string(),
                        "-f",
                        &f.to_string(),
                        "-l",
                        &l.to_string(),
                    ])
                    .arg(pdf_path)
                    .arg(&out);
                    c
                });
                assert!(ok, "pdftoppm failed (install poppler-utils)");
            })
        };
        println!(
            "| pdftoppm | {dpi} | {:.1} | {:.1} |",
            rate(poppler(1)),
            rate(poppler(cores))
        );
        let mupdf = |jobs: u32| {
            time(RUNS, || {
                let ok = external(n, jobs, &|f, l| {
                    let mut c = Command::new("mutool");
                    c.args(["draw", "-q", "-c", "gray", "-r", &dpi.to_string(), "-o"])
                        .arg(dir.join(format!("m{f}-%d.pgm")))
                        .arg(pdf_path)
                        .arg(format!("{f}-{l}"));
                    c
                });
                assert!(ok, "mutool failed (install mupdf-tools)");
            })
        };
        println!(
            "| mutool draw | {dpi} | {:.1} | {:.1} |",
            rate(mupdf(1)),
            rate(mupdf(cores))
        );
    }

    println!("\n# Digital extraction, one page, full template, median of 50 runs");
    println!("| layout | fields | ms/page |");
    println!("|---|---|---|");
    for doc in docs.iter().take(4) {
        let d = time(50, || {
            extract(&doc.pdf, &doc.template, opts).expect("extract");
        });
        println!(
            "| {} | {} | {:.2} |",
            doc.layout,
            doc.template.fields.len(),
            d.as_secs_f64() * 1e3
        );
    }
}

/// A worker parses the stored template (which checks it, compiling its
/// patterns) and extracts (which checks it again and compiles them for its
/// fields): three compiles of each pattern before `with_regex_cache`, one
/// inside it. Same page, template and run for both.
fn compile_passes(docs: &[corpus::Doc], opts: &Options) {
    const RUNS: usize = 200;
    println!(
        "\n# Parse + digital extraction of one page as the worker runs it, ms, median of {RUNS}"
    );
    println!("| layout | patterns compiled 3 times (before) | once (`with_regex_cache`) | ratio |");
    println!("|---|---|---|---|");
    for doc in docs.iter().take(4) {
        let spec = serde_json::to_value(&doc.template).expect("template JSON");
        let run = || {
            let template = Template::from_json(spec.clone()).expect("template");
            extract(&doc.pdf, &template, opts).expect("extract");
            template
        };
        // The former extract() checked outside the fields' compiles.
        let before = time(RUNS, || run().validate().expect("valid"));
        let after = time(RUNS, || {
            paperhook_extract::with_regex_cache(run);
        });
        println!(
            "| {} | {:.2} | {:.2} | {:.2}x |",
            doc.layout,
            before.as_secs_f64() * 1e3,
            after.as_secs_f64() * 1e3,
            before.as_secs_f64() / after.as_secs_f64()
        );
    }
}

fn zonal_vs_full(docs: &[corpus::Doc]) {
    println!(
        "\n# Zonal vs full-page OCR, 300 DPI PNG scan of an invoice, 10 region fields, median of {ZONAL_RUNS}"
    );
    let invoice = &docs[0];
    let png = corpus::encode(
        &corpus::scan_image(&invoice.pdf, &corpus::SCANS[0], 0),
        image::ImageFormat::Png,
    );
    // Ten small value boxes, as a template of ten single-value fields has.
    let boxes = [
        [0.765, 0.100, 0.98, 0.122],
        [0.765, 0.118, 0.98, 0.140],
        [0.765, 0.136, 0.98, 0.158],
        [0.08, 0.190, 0.4, 0.212],
        [0.08, 0.207, 0.4, 0.227],
        [0.08, 0.223, 0.3, 0.243],
        [0.82, 0.294, 0.92, 0.316],
        [0.14, 0.876, 0.6, 0.893],
        [0.14, 0.894, 0.3, 0.911],
        [0.66, 0.055, 0.85, 0.09],
    ];
    let fields: Vec<_> = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"name": format!("f{i}"), "type": "text", "locator": {"kind": "region", "box": b}}))
        .collect();
    let zonal_t = Template::from_json(json!({ "fields": fields })).expect("template");
    // Median whole-extraction time and median OCR-stage time (orientation,
    // deskew and recognition: what zonal reading changes; decoding the PNG
    // is the same in both modes).
    let run = |zonal: bool, checks: bool| {
        let o = Options {
            zonal,
            detect_orientation: checks,
            deskew: checks,
            ..Options::default()
        };
        let (mut total, mut ocr) = (Vec::new(), Vec::new());
        for _ in 0..ZONAL_RUNS {
            let t = Instant::now();
            let x = extract(&png, &zonal_t, &o).expect("extract");
            total.push(t.elapsed());
            ocr.push(x.timings.ocr);
        }
        (median(total), median(ocr))
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| mode | whole extraction ms | share | OCR stage ms | share |");
    println!("|---|---|---|---|---|");
    for (checks, what) in [(true, ""), (false, ", no orientation/deskew")] {
        // The first call on a thread starts Tesseract: warm up outside the timing.
        let _ = run(false, checks);
        let (full, full_ocr) = run(false, checks);
        let (zones, zones_ocr) = run(true, checks);
        println!(
            "| full page{what} | {:.0} | 100% | {:.0} | 100% |",
            ms(full),
            ms(full_ocr)
        );
        println!(
            "| 10 zones{what} | {:.0} | {:.0}% | {:.0} | {:.0}% |",
            ms(zones),
            100.0 * ms(zones) / ms(full),
            ms(zones_ocr),
            100.0 * ms(zones_ocr) / ms(full_ocr)
        );
    }
}
