//! Any bytes as the content of a PDF page: its text layer read and the
//! page rendered, with a typed error or a result, never a panic, an
//! abort, a hang or unbounded memory.
//!
//! The `document` target mutates whole files, whose content streams are
//! mostly compressed: its inputs rarely reach the content parser and the
//! interpreter intact, and most of its time goes to OCR. Here the bytes
//! are the page's content stream, and also the content of a form
//! (`/X1 Do`, which may draw itself), of a tiling pattern (`/P1 scn`) and
//! of a Type 3 font's glyph (`/F3`), in a well-formed file; OCR is left
//! out (its data directory does not exist), so a run tries about 70
//! streams a second on the reference machine (`document`: about 20).
//!
//! `scripts/fuzz.sh content` (see there for the options).

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use paperhook_extract::{Options, extract, render_page};
use paperhook_extract_fuzz::{pdf_file, template};

/// A one-page PDF whose page, form, pattern and Type 3 glyph draw `content`.
fn pdf(content: &[u8]) -> Vec<u8> {
    let stream = |dict: &str| {
        let mut obj = format!("<< {dict} /Length {} >>\nstream\n", content.len()).into_bytes();
        obj.extend_from_slice(content);
        obj.extend_from_slice(b"\nendstream");
        obj
    };
    let resources = "/Resources << /Font << /F1 6 0 R /F3 7 0 R >> /XObject << /X1 5 0 R /Im1 9 0 R >> \
                     /Pattern << /P1 8 0 R >> /ExtGState << /G1 << /ca 0.5 /CA 0.5 >> >> \
                     /ColorSpace << /CS1 [/Indexed /DeviceRGB 1 <000000ffffff>] >> >>";
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R {resources} >>"
        )
        .into_bytes(),
        stream(""),
        stream(&format!(
            "/Type /XObject /Subtype /Form /BBox [0 0 100 100] {resources}"
        )),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        format!(
            "<< /Type /Font /Subtype /Type3 /FontBBox [0 0 10 10] /FontMatrix [0.1 0 0 0.1 0 0] \
             /CharProcs << /a 10 0 R >> /Encoding << /Differences [65 /a] >> /FirstChar 65 \
             /LastChar 65 /Widths [10] {resources} >>"
        )
        .into_bytes(),
        stream(&format!(
            "/PatternType 1 /PaintType 1 /TilingType 1 /BBox [0 0 10 10] /XStep 10 /YStep 10 {resources}"
        )),
        b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray \
          /BitsPerComponent 8 /Length 4 >>\nstream\n\x00\xff\xff\x00\nendstream"
            .to_vec(),
        stream(""),
    ];
    pdf_file(&objects)
}

fuzz_target!(|data: &[u8]| {
    let opts = Options {
        max_pages: 1,
        max_pixels_per_page: 250_000,
        max_side: 1_000,
        dpi: 72,
        page_time_limit: Duration::from_secs(5),
        document_time_limit: Duration::from_secs(10),
        // No such folder: OCR fails at once, after the text layer is read.
        tessdata: Some("/nonexistent/paperhook-fuzz".into()),
        ..Options::default()
    };
    let doc = pdf(data);
    if let Err(e) = extract(&doc, template(), &opts) {
        assert!(!e.code().is_empty());
    }
    if let Err(e) = render_page(&doc, 1, 36, &opts) {
        assert!(!e.code().is_empty());
    }
});
