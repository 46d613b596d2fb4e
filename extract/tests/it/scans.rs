//! Scans of the generated corpus: clean, low-resolution, JPEG, TIFF,
//! rotated, skewed and noisy. Each test holds the level measured with
//! `examples/score.rs` on the same documents (seed 0 of each layout).

use paperhook_extract::{Options, Source, extract};

use crate::corpus::{self, Scan, field_ok};

/// Fields right out of all fields, over one document of each layout.
fn score(scan: &Scan) -> (usize, usize, Vec<String>) {
    let (mut right, mut total, mut misses) = (0, 0, Vec::new());
    for (i, doc) in corpus::corpus(1).iter().enumerate() {
        let bytes = corpus::encode(&corpus::scan_image(&doc.pdf, scan, i as u64), scan.format);
        let got = extract(&bytes, &doc.template, &Options::default())
            .unwrap_or_else(|e| panic!("{}: {e}", doc.name));
        for (k, want) in &doc.expected {
            total += 1;
            if field_ok(got.result.get(k), want) {
                right += 1;
                if let Some(meta) = got.fields.get(k) {
                    assert_eq!(meta.source, Source::Ocr, "{}.{k}", doc.name);
                }
            } else {
                misses.push(format!(
                    "{}.{k}: got {:?}, want {want}",
                    doc.name,
                    got.result.get(k)
                ));
            }
        }
    }
    (right, total, misses)
}

fn holds(name: &str, min_right: usize) {
    let scan = corpus::SCANS
        .iter()
        .find(|s| s.name == name)
        .expect("known scan kind");
    let (right, total, misses) = score(scan);
    assert_eq!(total, 31);
    assert!(
        right >= min_right,
        "{name}: {right}/{total} (measured {min_right}); misses:\n{}",
        misses.join("\n")
    );
}

#[test]
fn clean_300_dpi_png() {
    holds("scan_300_clean", 31);
}

#[test]
fn jpeg_200_dpi() {
    holds("scan_200_jpeg", 30);
}

#[test]
fn tiff_150_dpi() {
    holds("scan_150_tiff", 31);
}

#[test]
fn rotated_90_and_skewed() {
    holds("scan_300_rot90_skew", 30);
}

#[test]
fn rotated_180_skewed_and_noisy() {
    holds("scan_300_rot180_noisy", 31);
}

/// The README's example scan (150 DPI). Tesseract gives some words boxes
/// that reach over their neighbours ("Paper" over "A4") or leave a letter
/// out ("Globex" without its "Gl"): the words still form one line, and
/// the left-out letter is not read a second time as a word of its own.
#[test]
fn example_scan_keeps_words_whose_boxes_overlap_on_their_line() {
    let template = paperhook_extract::Template::from_json(serde_json::json!({"fields": [
        {"name": "customer", "type": "text", "locator": {"kind": "label", "label": "Bill To:", "direction": "right"}},
        {"name": "items", "type": "text", "locator": {"kind": "table", "end": "^\\s*Subtotal",
          "columns": [
            {"name": "description", "header": "Description", "required": true},
            {"name": "qty", "header": "Qty", "type": "integer"}]}}
    ]}))
    .unwrap();
    let png = include_bytes!("../../../examples/invoice.png");
    let got = extract(png, &template, &Options::default()).unwrap();
    assert_eq!(got.result["customer"], "Globex Corporation");
    assert_eq!(
        got.result["items"],
        serde_json::json!([
            {"description": "Paper A4 box", "qty": 3},
            {"description": "Toner cartridge", "qty": 2},
            {"description": "Stapler", "qty": 1}
        ])
    );
}
