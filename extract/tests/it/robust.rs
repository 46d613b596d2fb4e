//! Hostile and broken inputs: each gives its typed error, fast.

use std::time::{Duration, Instant};

use paperhook_extract::{Error, Options, Template, extract, page_count, render_page};
use serde_json::json;

use crate::corpus::{self, Page, tiff_extra_offset, tiff_file, write_pdf};

fn template() -> Template {
    Template::from_json(json!({"fields": [
        {"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "Total\\s+(.+)"}}]}))
    .unwrap()
}

/// What `guard` says of a decoder that panicked: no test input may.
const PANICKED: &str = "the decoder failed on it";

fn code(doc: &[u8], opts: &Options) -> &'static str {
    let started = Instant::now();
    let err = extract(doc, &template(), opts).expect_err("extraction must fail");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{err} took {:?}",
        started.elapsed()
    );
    assert!(!err.to_string().is_empty());
    assert!(!err.to_string().contains(PANICKED), "{err}");
    err.code()
}

fn encrypt(pdf: &[u8], owner: &str, user: &str) -> Vec<u8> {
    let mut doc = lopdf::Document::load_mem(pdf).unwrap();
    let state = lopdf::EncryptionState::try_from(lopdf::EncryptionVersion::V2 {
        document: &doc,
        owner_password: owner,
        user_password: user,
        key_length: 128,
        permissions: lopdf::Permissions::all(),
    })
    .unwrap();
    doc.encrypt(&state).unwrap();
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A PNG declaring `w` x `h` pixels, with valid CRCs and almost no data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    png_header_of(w, h, 8, 0)
}

/// A PNG header of `w` x `h` pixels at `depth` bits of colour type `color`
/// (0 grey, 6 RGBA), with an empty image.
fn png_header_of(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([depth, color, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [
        ihdr,
        b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01".to_vec(),
        b"IEND".to_vec(),
    ] {
        out.extend((chunk.len() as u32 - 4).to_be_bytes());
        out.extend(&chunk);
        out.extend(crc32(&chunk).to_be_bytes());
    }
    out
}

#[test]
fn empty_unknown_and_corrupt_inputs() {
    let opts = Options::default();
    assert_eq!(code(b"", &opts), "empty_document");
    assert_eq!(code(b"hello, this is text", &opts), "unsupported_type");
    assert_eq!(code(b"PK\x03\x04zipzip", &opts), "unsupported_type");
    assert_eq!(
        code(b"%PDF-1.7\n this is not a PDF at all", &opts),
        "corrupt_document"
    );
    assert_eq!(
        code(b"\x89PNG\r\n\x1a\n\0\0garbage", &opts),
        "corrupt_document"
    );
    assert_eq!(
        code(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], &opts),
        "corrupt_document"
    );
    assert_eq!(code(b"II*\0\x08\0\0\0\xff\xff", &opts), "corrupt_document");
    let err = extract(b"GIF89a....", &template(), &opts).unwrap_err();
    assert!(err.to_string().contains("GIF"), "{err}");
}

#[test]
fn truncated_files_fail_cleanly() {
    let opts = Options::default();
    let doc = corpus::invoice_en(1);
    let png = corpus::encode(
        &corpus::scan_image(&doc.pdf, &corpus::SCANS[2], 1),
        image::ImageFormat::Png,
    );
    assert_eq!(code(&png[..png.len() / 2], &opts), "corrupt_document");
    let jpeg = corpus::encode(
        &corpus::scan_image(&doc.pdf, &corpus::SCANS[2], 1),
        image::ImageFormat::Jpeg,
    );
    // A JPEG cut short still decodes its top part or fails; it never panics.
    if let Err(e) = extract(&jpeg[..jpeg.len() / 3], &template(), &opts) {
        assert!(!e.to_string().contains(PANICKED), "{e}");
    }
    // Every prefix of a PDF gives a result or a typed error, never a panic.
    for cut in (0..doc.pdf.len()).step_by(97) {
        match extract(&doc.pdf[..cut], &template(), &opts) {
            Ok(_) => {}
            Err(e) => assert!(
                ["empty_document", "unsupported_type", "corrupt_document"].contains(&e.code())
                    && !e.to_string().contains(PANICKED),
                "cut {cut}: {e}"
            ),
        }
    }
}

#[test]
fn encrypted_pdfs() {
    let doc = corpus::invoice_en(2);
    let locked = encrypt(&doc.pdf, "owner", "user-secret");
    let err = extract(&locked, &doc.template, &Options::default()).unwrap_err();
    assert_eq!(err.code(), "encrypted_pdf");
    assert!(err.to_string().contains("password"), "{err}");
    assert_eq!(
        page_count(&locked, &Options::default()).unwrap_err().code(),
        "encrypted_pdf"
    );
    // Only an owner password (no password to open): readable as usual.
    let owner_only = encrypt(&doc.pdf, "owner", "");
    let got = extract(&owner_only, &doc.template, &Options::default()).unwrap();
    assert_eq!(got.result["invoice_no"], doc.expected["invoice_no"]);
}

#[test]
fn images_declaring_billions_of_pixels_are_rejected_from_the_header() {
    let started = Instant::now();
    let err = extract(
        &png_header(100_000, 100_000),
        &template(),
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "image_too_large");
    assert!(err.to_string().contains("100000x100000"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Under the side limit but over the pixel limit.
    let opts = Options {
        max_pixels_per_page: 1_000_000,
        ..Options::default()
    };
    let img = image::GrayImage::from_pixel(1200, 1000, image::Luma([255]));
    let png = corpus::encode(&img, image::ImageFormat::Png);
    assert_eq!(code(&png, &opts), "image_too_large");
}

/// A PDF whose (TrueType, not embedded) Helvetica carries a ToUnicode map
/// sending `X` to <0000>, as broken PDFs do (hayro passes it on for
/// TrueType and CID fonts); the page reads `Invoice No INV-X42`.
fn pdf_with_nul_glyphs() -> Vec<u8> {
    let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n\
1 begincodespacerange <00> <FF> endcodespacerange\n\
1 beginbfchar <58> <0000> endbfchar\n\
endcmap CMapName currentdict /CMap defineresource pop end end";
    let content = b"BT /F1 12 Tf 50 700 Td (Invoice No INV-X42) Tj ET\n\
BT /F1 12 Tf 50 650 Td (Status XX) Tj ET";
    let stream = |dict: &str, data: &[u8]| {
        let mut s = format!("<< {dict}/Length {} >>\nstream\n", data.len()).into_bytes();
        s.extend(data);
        s.extend(b"\nendstream");
        s
    };
    corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>".to_vec(),
        stream("", content),
        b"<< /Type /Font /Subtype /TrueType /BaseFont /Helvetica /Encoding /WinAnsiEncoding /ToUnicode 6 0 R >>".to_vec(),
        stream("", cmap),
    ])
}

#[test]
fn nul_characters_of_a_broken_text_layer_never_reach_text_or_values() {
    let pdf = pdf_with_nul_glyphs();
    let t = Template::from_json(json!({"fields": [
        {"name": "invoice_no", "type": "text", "locator": {"kind": "label", "label": "Invoice No"}},
        {"name": "line", "type": "text", "whitespace": "keep",
         "locator": {"kind": "regex", "pattern": "(?s)(Invoice.*)"}},
        {"name": "region", "type": "text", "locator": {"kind": "region", "box": [0, 0, 1, 1]}}]}))
    .unwrap();
    let pages = paperhook_extract::read_pages(&pdf, &t, &Options::default()).unwrap();
    let text = serde_json::to_string(&pages).unwrap();
    assert!(text.contains("INV-42"), "{text}");
    assert!(!text.contains("\\u0000"), "{text}");
    let got = extract(&pdf, &t, &Options::default()).unwrap();
    assert_eq!(got.result["invoice_no"], json!("INV-42"));
    let result = serde_json::to_string(&got.result).unwrap();
    assert!(!result.contains("\\u0000"), "{result}");
    assert!(result.contains("Status"), "{result}");
}

#[test]
fn a_tiff_over_a_decoder_limit_says_what_is_too_large() {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    // 6000 x 6000 RGBA at 16 bits: 36 million pixels pass the pixel
    // limit, but decode to 288 MB, over the decoder's 256 MB.
    let extra_at = tiff_extra_offset(11);
    let mut extra: Vec<u8> = [16u16; 4].iter().flat_map(|b| b.to_le_bytes()).collect();
    extra.extend([0u8; 16]);
    let tiff = tiff_file(
        &[
            (256, LONG, 1, 6000),
            (257, LONG, 1, 6000),
            (258, SHORT, 4, extra_at),
            (259, SHORT, 1, 1),
            (262, SHORT, 1, 2),
            (273, LONG, 1, extra_at + 8),
            (277, SHORT, 1, 4),
            (278, LONG, 1, 6000),
            (279, LONG, 1, 16),
            (284, SHORT, 1, 1),
            (338, SHORT, 1, 2),
        ],
        &extra,
    );
    let started = Instant::now();
    let err = extract(&tiff, &template(), &Options::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code(), "image_too_large");
    let msg = err.to_string();
    assert!(!msg.contains("0x0"), "{msg}");
    assert!(
        msg.contains("page 1") && msg.contains("6000x6000") && msg.contains("288 MB"),
        "{msg}"
    );
    assert!(msg.contains("max_pixels_per_page"), "{msg}");

    // The same as a PNG: the decoder's limit, not a pixel limit it is under.
    let png = png_header_of(6000, 6000, 16, 6);
    let err = extract(&png, &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "image_too_large", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("6000x6000 pixels of 8 bytes each (288 MB decoded)")
            && msg.contains("8 bits a sample"),
        "{msg}"
    );
    assert!(!msg.contains("the limit is"), "{msg}");

    // A directory declaring 100 million strips: 400 MB of offsets, before
    // any size is known.
    let tiff = tiff_file(
        &[
            (256, LONG, 1, 100),
            (257, LONG, 1, 100),
            (258, SHORT, 1, 8),
            (259, SHORT, 1, 1),
            (262, SHORT, 1, 1),
            (273, LONG, 100_000_000, tiff_extra_offset(9)),
            (277, SHORT, 1, 1),
            (278, LONG, 1, 1),
            (279, LONG, 100_000_000, tiff_extra_offset(9)),
        ],
        &[0u8; 64],
    );
    let err = extract(&tiff, &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "image_too_large", "{err}");
    let msg = err.to_string();
    assert!(!msg.contains("0x0"), "{msg}");
    assert!(msg.contains("directory") && msg.contains("MB"), "{msg}");
}

#[test]
fn pdf_embedding_a_huge_image_is_refused_before_rendering() {
    let bomb = Page {
        jpeg: Some((vec![0xFF, 0xD8, 0xFF, 0xD9], 100_000, 100_000)),
        ..Page::a4()
    };
    let started = Instant::now();
    let err = extract(&write_pdf(&[bomb]), &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "image_too_large");
    assert!(err.to_string().contains("100000x100000"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A one-page PDF whose content stream is `data` under `filter`.
/// A stream object of `data` under `filter`.
fn stream_object(filter: &str, data: &[u8]) -> Vec<u8> {
    let mut stream =
        format!("<< /Length {} /Filter {filter} >>\nstream\n", data.len()).into_bytes();
    stream.extend(data);
    stream.extend(b"\nendstream");
    stream
}

fn pdf_with_content(filter: &str, data: &[u8]) -> Vec<u8> {
    let stream = stream_object(filter, data);
    corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>".to_vec(),
        stream,
    ])
}

/// `pages` pages, each with `/Contents {contents}` (object 4 is `packed`,
/// deflated content) and Helvetica as /F1.
fn pages_sharing(pages: usize, contents: &str, packed: &[u8]) -> Vec<u8> {
    let stream = stream_object("/FlateDecode", packed);
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", 5 + i)).collect();
    let mut objs = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        )
        .into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        stream,
    ];
    for _ in 0..pages {
        objs.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {contents} >>"
            )
            .into_bytes(),
        );
    }
    corpus::pdf_file(&objs)
}

#[test]
fn content_streams_repeated_past_the_limit_are_refused_and_shared_ones_read() {
    // 100 MB of content (a total and spaces) in 100 KB of deflate.
    let mut content = TOTAL.as_bytes().to_vec();
    content.resize(100 << 20, b' ');
    let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&content, 1);
    // Listed three times by one page: hayro would join 300 MB for it. The
    // same in raw deflate (no zlib header), which hayro reads too.
    let raw = miniz_oxide::deflate::compress_to_vec(&content, 1);
    for packed in [&zlib, &raw] {
        let thrice = pages_sharing(1, "[4 0 R 4 0 R 4 0 R]", packed);
        assert!(thrice.len() < 1 << 20, "{} bytes", thrice.len());
        let err = extract(&thrice, &template(), &Options::default()).unwrap_err();
        assert_eq!(err.code(), "stream_too_large", "{err}");
        assert!(
            err.to_string()
                .contains("the content of page 1 expands beyond 256 MB"),
            "{err}"
        );
    }
    // Twice is within it, and one stream shared by six pages (which hayro
    // kept once per page: 600 MB, the bad-input corpus measures it) is
    // read page by page.
    for doc in [
        pages_sharing(1, "[4 0 R 4 0 R]", &zlib),
        pages_sharing(6, "4 0 R", &raw),
    ] {
        let got = extract(&doc, &template(), &Options::default()).unwrap();
        assert_eq!(got.result["total"], json!(5.0));
    }
}

#[test]
fn a_predictor_declaring_huge_rows_is_refused() {
    // hayro allocates a row of Columns x Colors x BitsPerComponent / 8
    // bytes before reading any data: 16 GB, 1.2 GB here.
    let data = miniz_oxide::deflate::compress_to_vec_zlib(b"BT ET", 6);
    for filter in [
        "/FlateDecode /DecodeParms << /Predictor 12 /Columns 2000000000 /Colors 4 /BitsPerComponent 16 >>",
        "[/FlateDecode] /DecodeParms [<< /Predictor 2 /Colors 4 /Columns 300000000 >>]",
    ] {
        let doc = pdf_with_content(filter, &data);
        let err = extract(&doc, &template(), &Options::default()).unwrap_err();
        assert_eq!(err.code(), "stream_too_large", "{filter}: {err}");
        assert!(err.to_string().contains("predictor declares rows"), "{err}");
    }
    // An ordinary predictor row passes.
    let doc = pdf_with_content(
        "/FlateDecode /DecodeParms << /Predictor 12 /Columns 4 >>",
        &data,
    );
    assert!(
        extract(&doc, &template(), &Options::default())
            .err()
            .is_none_or(|e| !matches!(e.code(), "corrupt_document" | "stream_too_large"))
    );
}

#[test]
fn measuring_thousands_of_streams_stops_at_the_document_time_limit() {
    // 500 streams of 20 MB each (10 GB to measure, tens of seconds), none
    // over the limit of one stream: only the document's time limit stops
    // the measuring.
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(&vec![b' '; 20 << 20], 1);
    let mut objs = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>".to_vec(),
    ];
    objs.extend(std::iter::repeat_n(
        stream_object("/FlateDecode", &packed),
        500,
    ));
    let doc = corpus::pdf_file(&objs);
    let opts = Options {
        document_time_limit: Duration::from_millis(300),
        ..Options::default()
    };
    let started = Instant::now();
    let err = extract(&doc, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "document_timeout", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn pdf_with_a_compression_bomb_is_refused_before_decoding() {
    // 300 MB of spaces as a page's content stream, packed to 0.2-5 MB by
    // each filter that can expand without bound, and to a few KB by two
    // deflates in a chain (the first alone expands to about 1.3 MB).
    let spaces = vec![b' '; 300 << 20];
    let deflated = miniz_oxide::deflate::compress_to_vec_zlib(&spaces, 1);
    let bombs = [
        (
            "[/FlateDecode /FlateDecode]",
            miniz_oxide::deflate::compress_to_vec_zlib(&deflated, 9),
        ),
        ("/FlateDecode", deflated),
        (
            "/LZWDecode",
            weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                .encode(&spaces)
                .unwrap(),
        ),
        (
            "/RunLengthDecode",
            std::iter::repeat_n([0x81u8, b' '], spaces.len() / 128)
                .flatten()
                .collect(),
        ),
    ];
    drop(spaces);
    for (filter, packed) in bombs {
        assert!(packed.len() < 6 << 20, "{filter}: {} bytes", packed.len());
        let started = Instant::now();
        let err = extract(
            &pdf_with_content(filter, &packed),
            &template(),
            &Options::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), "stream_too_large", "{filter}");
        assert!(
            err.to_string().contains("expands beyond 256 MB"),
            "{filter}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{filter}");
    }
    // An inline image in a page's content (hex-encoded here, so the
    // content stream itself is small when decoded) whose own deflate data
    // expands to 300 MB; and one that declares 10 billion pixels.
    let hex = |data: &[u8]| -> Vec<u8> {
        data.iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .chain(*b">")
            .collect()
    };
    let inline = |dict: &str, data: &[u8]| {
        let mut content = format!("q 10 0 0 10 0 0 cm BI {dict} ID ").into_bytes();
        content.extend(data);
        content.extend(b" EI Q BT /F1 12 Tf 72 720 Td (Total 5.00) Tj ET");
        pdf_with_content("/ASCIIHexDecode", &hex(&content))
    };
    let deflated = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 300 << 20], 1);
    let err = extract(
        &inline("/W 1 /H 1 /BPC 8 /CS /G /F /Fl", &deflated),
        &template(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("expands beyond 256 MB"), "{err}");
    let err = extract(
        &inline("/W 100000 /H 100000 /BPC 1 /CS /G", b"\0"),
        &template(),
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "image_too_large", "{err}");
    // A small inline image is drawn and the page read.
    let read = extract(
        &inline(
            "/W 2 /H 1 /BPC 8 /CS /G /F /Fl",
            &miniz_oxide::deflate::compress_to_vec_zlib(&[0, 255], 6),
        ),
        &template(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(read.result["total"], json!(5.0));
    // The same filters on a small content stream are read normally.
    let text = b"BT /F1 12 Tf 72 720 Td (hello) Tj ET";
    let small = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
        .encode(text)
        .unwrap();
    let err = extract(
        &pdf_with_content("/LZWDecode", &small),
        &template(),
        &Options::default(),
    );
    assert!(
        err.err()
            .is_none_or(|e| !matches!(e.code(), "corrupt_document" | "stream_too_large"))
    );
}

#[test]
fn a_page_painting_itself_over_and_over_is_refused_before_rendering() {
    // 16,000 page-sized fills, 3 KB of deflate: the renderer would hold
    // 1.7 GB of drawing commands and take most of a minute.
    let fills = |n: usize| -> Vec<u8> {
        let content: String = (0..n)
            .map(|i| format!("{:.2} g 0 0 595 842 re f\n", (i % 100) as f64 / 100.0))
            .collect();
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(content.as_bytes(), 9);
        pdf_with_content("/FlateDecode", &packed)
    };
    let started = Instant::now();
    let err = extract(&fills(16_000), &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "page_too_complex", "{err}");
    assert!(err.to_string().contains("16000 times"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let err = render_page(&fills(16_000), 1, 100, &Options::default()).unwrap_err();
    assert_eq!(err.code(), "page_too_complex", "{err}");
    // Within the limit (a setting) the page is rendered and read.
    let opts = Options {
        max_page_overdraw: 20,
        ..Options::default()
    };
    assert_eq!(code(&fills(21), &opts), "page_too_complex");
    assert!(render_page(&fills(19), 1, 100, &opts).is_ok());
}

/// A PDF of `pages` pages sharing one small content stream that draws form
/// X0; form Xi draws X(i+1) `fan` times, and the last one runs `leaf`:
/// `fan` to the power `depth` leaves a page from a few kilobytes.
fn form_bomb(pages: usize, depth: usize, fan: usize, leaf: &str) -> Vec<u8> {
    // 1 catalog, 2 page tree, 3 font, 4 content, 5.. forms, then pages.
    let first_form = 5;
    let first_page = first_form + depth + 1;
    let kids: String = (0..pages)
        .map(|i| format!("{} 0 R ", first_page + i))
        .collect();
    let stream = |dict: &str, data: &str| {
        format!(
            "<< {dict} /Length {} >>\nstream\n{data}\nendstream",
            data.len()
        )
        .into_bytes()
    };
    let mut objs = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count {pages} >>").into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        stream("", "/X Do"),
    ];
    for level in 0..=depth {
        let (resources, body) = if level < depth {
            (
                format!("/XObject << /X {} 0 R >>", first_form + level + 1),
                "/X Do\n".repeat(fan),
            )
        } else {
            ("/Font << /F1 3 0 R >>".to_string(), leaf.to_string())
        };
        objs.push(stream(
            &format!(
                "/Type /XObject /Subtype /Form /BBox [0 0 595 842] /Resources << {resources} >>"
            ),
            &body,
        ));
    }
    for _ in 0..pages {
        objs.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R \
                 /Resources << /XObject << /X {first_form} 0 R >> >> >>"
            )
            .into_bytes(),
        );
    }
    corpus::pdf_file(&objs)
}

const TOTAL: &str = "BT /F1 12 Tf 72 720 Td (Total 5.00) Tj ET";

#[test]
fn glyphs_drawn_by_a_content_stream_shared_by_every_page_are_limited_per_document() {
    // 80 KB: 500 pages, each drawing "Total 5.00" ten million times (a
    // hundred million glyphs a page). It drew two million glyphs a page
    // and kept them all, on and on.
    let bomb = form_bomb(500, 7, 10, TOTAL);
    assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
    let started = Instant::now();
    let err = extract(&bomb, &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "text_too_large", "{err}");
    assert!(
        err.to_string()
            .contains("more than 2000000 glyphs (passed at page 1)")
            && err.to_string().contains("max_text_glyphs"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The limit is the document's: 5 pages of 1,000 glyphs (100 times
    // "Total 5.00") pass 3,500 at the fourth page, each page under it.
    let five = form_bomb(5, 2, 10, TOTAL);
    let opts = Options {
        max_text_glyphs: 3_500,
        ..Options::default()
    };
    let err = extract(&five, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "text_too_large", "{err}");
    assert!(
        err.to_string().contains("3500 glyphs (passed at page 4)"),
        "{err}"
    );
    // Within it, the same document is read.
    let opts = Options {
        max_text_glyphs: 5_000,
        ..Options::default()
    };
    assert_eq!(
        extract(&five, &template(), &opts).unwrap().result["total"],
        json!(5.0)
    );
}

#[test]
fn forms_drawing_each_other_over_and_over_are_stopped_part_way() {
    // Ten million squares a page through 11 million forms, in 80 KB, on
    // 500 pages: once the budget of drawing operations is spent, hayro
    // is stopped inside the page, not left to finish it.
    let bomb = form_bomb(500, 7, 10, "0 0 1 1 re f");
    let opts = Options {
        max_drawing_operations: 1_000_000,
        ..Options::default()
    };
    let started = Instant::now();
    let err = extract(&bomb, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "document_too_complex", "{err}");
    assert!(
        err.to_string()
            .contains("more than 1000000 drawing operations")
            && err.to_string().contains("max_drawing_operations"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The same budget holds for a page measured before it is rendered.
    let err = render_page(&bomb, 1, 100, &opts).unwrap_err();
    assert_eq!(err.code(), "document_too_complex", "{err}");
    // A page drawing ten of them is rendered and read as a scan would be.
    let small = form_bomb(1, 1, 10, "0 0 1 1 re f");
    assert!(render_page(&small, 1, 100, &opts).is_ok());
}

#[test]
fn time_limits_hold_inside_a_page() {
    // Without a budget, one page of the forms above runs for most of a
    // minute: the limits were only checked between pages.
    let bomb = form_bomb(2, 7, 10, "0 0 1 1 re f");
    let unlimited = Options {
        max_drawing_operations: u64::MAX,
        ..Options::default()
    };
    for (opts, want) in [
        (
            Options {
                document_time_limit: Duration::from_millis(500),
                ..unlimited.clone()
            },
            ("document_timeout", "at page 1"),
        ),
        (
            Options {
                page_time_limit: Duration::from_millis(500),
                ..unlimited.clone()
            },
            ("timeout", "(at page 1)"),
        ),
    ] {
        let started = Instant::now();
        let err = extract(&bomb, &template(), &opts).unwrap_err();
        assert_eq!(err.code(), want.0, "{err}");
        assert!(err.to_string().contains(want.1), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let err = render_page(&bomb, 2, 100, &opts).unwrap_err();
        assert_eq!(err.code(), want.0, "{err}");
    }
}

#[test]
fn the_example_invoice_reads_as_before() {
    let mut template: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/template.json")).unwrap();
    // The API's wrapping of the template: not part of the model.
    for key in ["name", "webhook"] {
        template.as_object_mut().unwrap().remove(key);
    }
    let template = Template::from_json(template).unwrap();
    let got = extract(
        include_bytes!("../../../examples/invoice.pdf"),
        &template,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        serde_json::Value::Object(got.result),
        json!({
            "invoice_date": "2026-11-14",
            "invoice_number": "INV-2026-0042",
            "line_items": [
                {"amount": 73.5, "description": "Paper A4 box", "qty": 3, "unit_price": 24.5},
                {"amount": 178.0, "description": "Toner cartridge", "qty": 2, "unit_price": 89.0},
                {"amount": 12.25, "description": "Stapler", "qty": 1, "unit_price": 12.25}
            ],
            "total": 316.5,
            "vendor": "ACME Supplies Ltd"
        })
    );
    assert!(
        got.fields
            .values()
            .all(|f| f.source == paperhook_extract::Source::TextLayer)
    );
}

#[test]
fn absurd_pdf_page_sizes() {
    // A scanned-looking page (no text) 200,000 pt wide cannot be rendered
    // at a usable resolution: typed error, no 14 GB allocation.
    let huge = write_pdf(&[Page {
        width: 200_000.0,
        height: 200_000.0,
        ..Page::default()
    }]);
    assert_eq!(code(&huge, &Options::default()), "page_too_large");
    // The same size with a text layer needs no rendering and works.
    let mut p = Page {
        width: 200_000.0,
        height: 200_000.0,
        ..Page::default()
    };
    for (i, s) in ["Invoice for big things", "Total 12.50"].iter().enumerate() {
        p.texts.push(corpus::Text {
            x: 100.0,
            y: 100.0 + 30.0 * i as f64,
            size: 20.0,
            bold: false,
            s: s.to_string(),
        });
    }
    let got = extract(&write_pdf(&[p]), &template(), &Options::default()).unwrap();
    assert_eq!(got.result["total"], json!(12.5));
    // A zero-size page holds nothing to read: nothing found, no crash.
    let flat = write_pdf(&[Page {
        width: 0.0,
        height: 0.0,
        ..Page::default()
    }]);
    let got = extract(&flat, &template(), &Options::default()).unwrap();
    assert_eq!(got.pages, 1);
    assert_eq!(got.result["total"], json!(null));
}

#[test]
fn page_limits_and_time_limits() {
    let a = corpus::invoice_en(0);
    let pages: Vec<Page> = (0..3).map(|_| Page::a4()).collect();
    let three = write_pdf(&pages);
    assert_eq!(page_count(&three, &Options::default()).unwrap(), 3);
    let opts = Options {
        max_pages: 2,
        ..Options::default()
    };
    let err = extract(&three, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "page_limit_exceeded");
    assert!(
        err.to_string()
            .contains("more than 2 pages; the limit is 2"),
        "{err}"
    );
    // Time: a scan with a zero page time limit stops at the first check.
    let png = corpus::encode(
        &corpus::scan_image(&a.pdf, &corpus::SCANS[2], 0),
        image::ImageFormat::Png,
    );
    let opts = Options {
        page_time_limit: Duration::ZERO,
        ..Options::default()
    };
    let err = extract(&png, &a.template, &opts).unwrap_err();
    assert_eq!((err.code(), err.is_transient()), ("timeout", true));
    // The whole document's limit: not worth retrying, and it holds for a
    // text-layer PDF too, which renders nothing (checked before each page).
    let opts = Options {
        document_time_limit: Duration::ZERO,
        ..Options::default()
    };
    for doc in [&png, &a.pdf] {
        let err = extract(doc, &a.template, &opts).unwrap_err();
        assert_eq!(
            (err.code(), err.is_transient()),
            ("document_timeout", false)
        );
        assert!(err.to_string().contains("at page 1"), "{err}");
    }
}

/// Tesseract itself stops at the deadline: a page cut short costs clearly
/// less than reading it whole (the fastest of three runs each, in the same
/// test, so a slow or busy machine slows both; layout analysis before the
/// first word cannot be cut, and with the deadline off the cut run takes
/// about as long as the whole one).
#[test]
fn ocr_stops_inside_tesseract_at_the_deadline() {
    use paperhook_extract::ocr::{self, Psm};
    use std::time::Instant;
    let doc = corpus::invoice_de(0);
    let img = corpus::scan_image(&doc.pdf, &corpus::SCANS[0], 0);
    let read = |budget: Option<Duration>| {
        let started = Instant::now();
        let deadline = started + budget.unwrap_or(Duration::from_secs(3600));
        let words = ocr::recognise(&img, 300, Psm::Auto, "eng", None, deadline).unwrap();
        (started.elapsed(), words.len())
    };
    // Warm up: the first call on a thread loads the language data.
    read(None);
    let whole = (0..3).map(|_| read(None)).min().unwrap();
    assert!(whole.1 > 50, "{} words", whole.1);
    let cut = (0..3).map(|_| read(Some(whole.0 / 10))).min().unwrap();
    assert_eq!(cut.1, 0, "words past the deadline");
    assert!(
        cut.0.as_secs_f64() < 0.8 * whole.0.as_secs_f64(),
        "cut short after {:?}; the whole page took {:?}",
        cut.0,
        whole.0
    );
}

#[test]
fn unknown_language_is_an_ocr_error_naming_it() {
    let a = corpus::form_en(0);
    let png = corpus::encode(
        &corpus::scan_image(&a.pdf, &corpus::SCANS[2], 0),
        image::ImageFormat::Png,
    );
    let opts = Options {
        languages: Some(vec!["xyz".into()]),
        ..Options::default()
    };
    let err = extract(&png, &a.template, &opts).unwrap_err();
    assert_eq!(err.code(), "ocr_failed");
    assert!(err.to_string().contains("xyz"), "{err}");
    // Tesseract alone would read with English and drop the missing one silently.
    let opts = Options {
        languages: Some(vec!["eng".into(), "xyz".into()]),
        ..Options::default()
    };
    let err = extract(&png, &a.template, &opts).unwrap_err();
    assert_eq!(err.code(), "ocr_failed");
    assert!(
        err.to_string().contains("\"xyz\" is not installed"),
        "{err}"
    );
}

#[test]
fn invalid_template_is_rejected_before_reading() {
    let mut t = template();
    t.fields[0].name = String::new();
    let err = extract(b"%PDF-1.4", &t, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::Template(_)));
    assert_eq!(err.code(), "invalid_template");
}

#[test]
fn replace_rules_that_multiply_the_text_fail_the_document_fast() {
    let doc = corpus::invoice_en(0);
    // Each rule repeats every character 10 times (within the per-rule
    // limits): four make "INV-…" ten thousand times longer, and the
    // regex's every match is a candidate.
    let rule = json!({"pattern": "(?s:.)", "with": "$0".repeat(10)});
    let t = Template::from_json(json!({"fields": [
        {"name": "invoice_no", "type": "text", "locator": {"kind": "label", "label": "Invoice No"}},
        {"name": "words", "type": "text", "replace": vec![rule; 4],
         "locator": {"kind": "regex", "pattern": "(\\S+)", "occurrence": "all"}}]}))
    .unwrap();
    let started = Instant::now();
    let err = extract(&doc.pdf, &t, &Options::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(err.code(), "replace_limit_exceeded");
    assert!(
        err.to_string()
            .contains("field \"words\": its replace rules add more than 1048576 bytes"),
        "{err}"
    );
    assert!(!err.is_transient());
    // Growing values within the limit is fine.
    let t = Template::from_json(json!({"fields": [
        {"name": "no", "type": "text", "replace": [{"pattern": "^", "with": "No. "}],
         "locator": {"kind": "label", "label": "Invoice No"}}]}))
    .unwrap();
    let got = extract(&doc.pdf, &t, &Options::default()).unwrap();
    assert_eq!(
        got.result["no"],
        json!(format!(
            "No. {}",
            doc.expected["invoice_no"].as_str().unwrap()
        ))
    );
}

/// Deterministic mutations of valid documents (bit flips, byte runs,
/// truncations): a result or a typed error every time, never a panic.
#[test]
fn mutated_documents_never_panic() {
    let doc = corpus::invoice_en(3);
    let small = corpus::scan_image(&doc.pdf, &corpus::SCANS[2], 3);
    let small = image::imageops::resize(&small, 300, 420, image::imageops::FilterType::Triangle);
    let seeds = [
        doc.pdf.clone(),
        corpus::encode(&small, image::ImageFormat::Png),
        corpus::encode(&small, image::ImageFormat::Jpeg),
        corpus::encode(&small, image::ImageFormat::Tiff),
    ];
    let opts = Options {
        max_pixels_per_page: 2_000_000,
        dpi: 72,
        ..Options::default()
    };
    let mut rng = corpus::Rng::new(42);
    for round in 0..160 {
        let mut m = seeds[round % seeds.len()].clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(m.len() as u64) as usize;
            match rng.below(3) {
                0 => m[at] ^= 1 << rng.below(8),
                1 => m[at..].iter_mut().take(16).for_each(|b| *b = 0xFF),
                _ => m.truncate(at.max(8)),
            }
        }
        // `guard` turns a panic into corrupt_document: its message tells.
        if let Err(e) = extract(&m, &template(), &opts) {
            assert!(!e.to_string().contains(PANICKED), "round {round}: {e}");
        }
        if let Err(e) = page_count(&m, &opts) {
            assert!(!e.to_string().contains(PANICKED), "round {round}: {e}");
        }
    }
}

/// A one-page PDF whose font maps glyph `X` (through its ToUnicode map) to
/// `chars` letters `A`, drawing it `glyphs` times in a row, after a line
/// of ordinary text.
fn pdf_with_long_glyph_text(chars: usize, glyphs: usize) -> Vec<u8> {
    let cmap = format!(
        "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def /CMapType 2 def\n\
         1 begincodespacerange <00> <FF> endcodespacerange\n\
         1 beginbfchar <58> <{}> endbfchar\n\
         endcmap CMapName currentdict /CMap defineresource pop end end",
        "0041".repeat(chars)
    );
    let content = format!(
        "BT /F1 12 Tf 50 750 Td (Total 5.00 EUR) Tj ET\nBT /F1 12 Tf 50 700 Td ({}) Tj ET",
        "X".repeat(glyphs)
    );
    let stream = |data: &[u8]| {
        let mut s = format!("<< /Length {} >>\nstream\n", data.len()).into_bytes();
        s.extend(data);
        s.extend(b"\nendstream");
        s
    };
    corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>".to_vec(),
        stream(content.as_bytes()),
        b"<< /Type /Font /Subtype /TrueType /BaseFont /Helvetica /Encoding /WinAnsiEncoding /ToUnicode 6 0 R >>".to_vec(),
        stream(cmap.as_bytes()),
    ])
}

#[test]
fn a_glyph_mapped_to_a_long_text_keeps_a_bounded_part_of_it() {
    // 2,000 glyphs of 5,000 characters each: 10 MB of text from 2 KB of
    // content (with 500,000 characters a glyph, gigabytes).
    let pdf = pdf_with_long_glyph_text(5_000, 2_000);
    let pages = paperhook_extract::read_pages(&pdf, &template(), &Options::default()).unwrap();
    let text: usize = pages[0].words.iter().map(|w| w.text.len()).sum();
    assert!(text > 2_000, "{text} bytes");
    assert!(text <= 2_000 * 32 + 100, "{text} bytes kept");
    assert!(pages[0].words.iter().any(|w| w.text == "Total"));
    // The bytes kept count toward the document's limit.
    let opts = Options {
        max_text_bytes: 10_000,
        ..Options::default()
    };
    let err = extract(&pdf, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "text_too_large", "{err}");
    let message = err.to_string();
    assert!(
        message.contains("more than 10000 bytes of text (passed at page 1)")
            && message.contains("max_text_bytes"),
        "{message}"
    );
    // Within it, the page is read.
    let got = extract(&pdf, &template(), &Options::default()).unwrap();
    assert_eq!(got.result["total"], json!(5.0));
}

#[test]
fn the_extracted_values_are_limited_in_size() {
    let doc = corpus::invoice_en(0);
    // Fifty copies of the whole page, whitespace kept.
    let fields: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            json!({"name": format!("f{i}"), "type": "text", "whitespace": "keep",
                   "locator": {"kind": "region", "box": [0, 0, 1, 1]}})
        })
        .collect();
    let t = Template::from_json(json!({ "fields": fields })).unwrap();
    let got = extract(&doc.pdf, &t, &Options::default()).unwrap();
    let size = serde_json::to_string(&got.result).unwrap().len() as u64;
    assert!(size > 20_000, "{size} bytes");
    // The limit counts the values as JSON, with their names.
    for (max, fails) in [(size - 1, true), (size, false)] {
        let opts = Options {
            max_result_bytes: max,
            ..Options::default()
        };
        match extract(&doc.pdf, &t, &opts) {
            Err(err) if fails => {
                assert_eq!(err.code(), "result_too_large", "{err}");
                let message = err.to_string();
                assert!(
                    message.contains(&format!("more than {max} bytes as JSON"))
                        && message.contains("field \"f49\"")
                        && message.contains("max_result_bytes"),
                    "{message}"
                );
            }
            Ok(_) if !fails => {}
            other => panic!("limit {max} of {size}: {other:?}"),
        }
    }
    let opts = Options {
        max_result_bytes: 5_000,
        ..Options::default()
    };
    let err = extract(&doc.pdf, &t, &opts).unwrap_err();
    assert_eq!(err.code(), "result_too_large", "{err}");
    assert!(err.to_string().contains("field \"f"), "{err}");
}

/// A little-endian TIFF of `pages` 1x1 grey directories in a chain, all
/// sharing one pixel.
fn tiff_chain(pages: usize) -> Vec<u8> {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let pixel_at = 8u32;
    let mut out = b"II*\0".to_vec();
    out.extend(12u32.to_le_bytes()); // the first directory
    out.extend([0x80u8, 0, 0, 0]); // the pixel, padded
    let entries = [
        (256u16, LONG, 1u32, 1u32),
        (257, LONG, 1, 1),
        (258, SHORT, 1, 8),
        (259, SHORT, 1, 1),
        (262, SHORT, 1, 1),
        (273, LONG, 1, pixel_at),
        (277, SHORT, 1, 1),
        (278, LONG, 1, 1),
        (279, LONG, 1, 1),
    ];
    for i in 0..pages {
        out.extend((entries.len() as u16).to_le_bytes());
        for (tag, kind, count, value) in entries {
            out.extend(tag.to_le_bytes());
            out.extend(kind.to_le_bytes());
            out.extend(count.to_le_bytes());
            out.extend(value.to_le_bytes());
        }
        let next = if i + 1 == pages {
            0
        } else {
            out.len() as u32 + 4
        };
        out.extend(next.to_le_bytes());
    }
    out
}

#[test]
fn tiff_directories_are_counted_no_further_than_the_page_limit() {
    let tiff = tiff_chain(10_000);
    let opts = |max_pages: u32| Options {
        max_pages,
        ..Options::default()
    };
    // Every directory is there to be counted.
    assert_eq!(page_count(&tiff, &opts(20_000)).unwrap(), 10_000);
    // One past the limit is enough to refuse it.
    assert_eq!(page_count(&tiff, &opts(5)).unwrap(), 6);
    let started = Instant::now();
    let err = extract(&tiff, &template(), &opts(5)).unwrap_err();
    assert_eq!(err.code(), "page_limit_exceeded", "{err}");
    assert!(
        err.to_string()
            .contains("the document has more than 5 pages; the limit is 5"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Rendering one page (a preview) counts only as far as that page:
    // the first pages of a TIFF longer than the limit render.
    assert!(render_page(&tiff, 1, 72, &opts(5)).is_ok());
    assert!(render_page(&tiff, 10_000, 72, &opts(5)).is_ok());
    let err = render_page(&tiff, 10_001, 72, &opts(5)).unwrap_err();
    assert!(
        err.to_string()
            .contains("page 10001 does not exist; the document has 10000"),
        "{err}"
    );
    // Counting stops at the document's time limit.
    let opts = Options {
        max_pages: 20_000,
        document_time_limit: Duration::ZERO,
        ..Options::default()
    };
    let err = page_count(&tiff, &opts).unwrap_err();
    assert_eq!(err.code(), "document_timeout", "{err}");
}

#[test]
fn a_table_row_wrapped_over_many_lines_is_joined_whole() {
    // One row whose description wraps over 50,000 more lines (the
    // quantity column is required, so they continue it), on a page tall
    // enough to hold them. The join was quadratic: this holds its result,
    // not its time (performance is measured, not timed in tests).
    const LINES: usize = 50_000;
    let height = 12.0 * (LINES as f64 + 10.0);
    let mut content = format!(
        "BT /F1 10 Tf 50 {top} Td (Description) Tj 250 0 Td (Qty) Tj ET\n\
         BT /F1 10 Tf 50 {row} Td (Widget) Tj 250 0 Td (2) Tj ET\n\
         BT /F1 10 Tf 12 TL 50 {next} Td",
        top = height - 24.0,
        row = height - 36.0,
        next = height - 48.0,
    );
    let mut expected = String::from("Widget");
    for i in 0..LINES {
        content.push_str(&format!(" (w{i}) Tj T*"));
        expected.push_str(&format!(" w{i}"));
    }
    content.push_str(" ET\n");
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(content.as_bytes(), 6);
    let pdf = corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 {height}] \
             /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
        )
        .into_bytes(),
        stream_object("/FlateDecode", &packed),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ]);
    let t = Template::from_json(json!({"fields": [
        {"name": "items", "type": "text", "locator": {"kind": "table", "columns": [
            {"name": "description", "header": "Description"},
            {"name": "qty", "header": "Qty", "type": "integer", "required": true}]}}]}))
    .unwrap();
    let got = extract(&pdf, &t, &Options::default()).unwrap();
    assert_eq!(
        got.result["items"],
        json!([{"description": expected, "qty": 2}])
    );
}

#[test]
fn a_stream_over_max_pdf_stream_bytes_is_stream_too_large() {
    // 10 KB of content: within the default, past a limit of 4,000 bytes.
    let mut content = TOTAL.as_bytes().to_vec();
    content.resize(10_000, b' ');
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(&content, 6);
    let doc = pages_sharing(1, "4 0 R", &packed);
    let got = extract(&doc, &template(), &Options::default()).unwrap();
    assert_eq!(got.result["total"], json!(5.0));
    let opts = Options {
        max_pdf_stream_bytes: 4_000,
        ..Options::default()
    };
    let err = extract(&doc, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "stream_too_large", "{err}");
    let message = err.to_string();
    assert!(
        message.contains("a compressed stream expands beyond 4000 bytes")
            && message.contains("max_pdf_stream_bytes"),
        "{message}"
    );
    // A page's content streams together: three of 1,500 bytes each.
    content.truncate(1_500);
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(&content, 6);
    let doc = pages_sharing(1, "[4 0 R 4 0 R 4 0 R]", &packed);
    let err = extract(&doc, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "stream_too_large", "{err}");
    assert!(
        err.to_string()
            .contains("the content of page 1 expands beyond 4000 bytes"),
        "{err}"
    );
    let got = extract(
        &pages_sharing(1, "[4 0 R 4 0 R]", &packed),
        &template(),
        &opts,
    )
    .unwrap();
    assert_eq!(got.result["total"], json!(5.0));
}

#[test]
fn the_match_and_replace_limits_are_settings() {
    let doc = corpus::invoice_en(0);
    let words = Template::from_json(json!({"fields": [
        {"name": "words", "type": "text",
         "locator": {"kind": "regex", "pattern": "(\\S+)", "occurrence": "all"}}]}))
    .unwrap();
    let opts = Options {
        max_field_matches: 5,
        ..Options::default()
    };
    let err = extract(&doc.pdf, &words, &opts).unwrap_err();
    assert_eq!(err.code(), "match_limit_exceeded", "{err}");
    assert!(err.to_string().contains("more than 5 values"), "{err}");
    assert!(extract(&doc.pdf, &words, &Options::default()).is_ok());

    // "No. " adds 4 bytes to the one value.
    let prefixed = Template::from_json(json!({"fields": [
        {"name": "no", "type": "text", "replace": [{"pattern": "^", "with": "No. "}],
         "locator": {"kind": "label", "label": "Invoice No"}}]}))
    .unwrap();
    let opts = |max_replace_growth_bytes: usize| Options {
        max_replace_growth_bytes,
        ..Options::default()
    };
    let err = extract(&doc.pdf, &prefixed, &opts(3)).unwrap_err();
    assert_eq!(err.code(), "replace_limit_exceeded", "{err}");
    assert!(err.to_string().contains("add more than 3 bytes"), "{err}");
    assert!(extract(&doc.pdf, &prefixed, &opts(4)).is_ok());
}

#[test]
fn max_render_dpi_caps_what_a_template_asks() {
    // A page without text, so it is rendered for OCR: at the template's
    // 600 DPI it cannot fit 600,000 pixels above 100 DPI; at 72 it does.
    let blank = write_pdf(&[Page::a4()]);
    let t = Template::from_json(json!({"dpi": 600, "fields": [
        {"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "Total\\s+(.+)"}}]}))
    .unwrap();
    let opts = Options {
        max_pixels_per_page: 600_000,
        ..Options::default()
    };
    let err = extract(&blank, &t, &opts).unwrap_err();
    assert_eq!(err.code(), "page_too_large", "{err}");
    let opts = Options {
        max_render_dpi: 72,
        ..opts
    };
    let got = extract(&blank, &t, &opts).unwrap();
    assert_eq!(got.result["total"], json!(null));
}

#[test]
fn a_page_tree_is_read_to_one_page_past_the_limit() {
    // 200,000 pages in 800 KB: hayro kept a few hundred bytes for each
    // before anything could count them (a 20 KB PDF packing 5 million
    // held 4.7 GB).
    let kids = "<<>>".repeat(200_000);
    let doc = corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!("<< /Type /Pages /Kids [{kids}] /Count 1 >>").into_bytes(),
    ]);
    let opts = Options {
        max_pages: 5,
        ..Options::default()
    };
    assert_eq!(page_count(&doc, &opts).unwrap(), 6);
    assert_eq!(page_count(&doc, &Options::default()).unwrap(), 501);
    let err = extract(&doc, &template(), &opts).unwrap_err();
    assert_eq!(err.code(), "page_limit_exceeded");
    assert!(
        err.to_string()
            .contains("more than 5 pages; the limit is 5"),
        "{err}"
    );
    // A preview reads the tree to the page it shows.
    let shown = render_page(&doc, 3, 72, &opts).unwrap();
    assert!(shown.width() > 0);
}

/// A PDF 1.5 file whose objects live in deflated object streams: the
/// first holds the page tree (one blank page), each further one an empty
/// dictionary; stream `i` is padded with `pads[i]` spaces. Its
/// cross-reference stream is deflated too, its rows followed by
/// `xref_pad` zero bytes, its dictionary ending with `xref_extra`.
fn packed_pdf(pads: &[usize], xref_pad: usize, xref_extra: &str) -> Vec<u8> {
    // Objects: 1 catalog, 2 page tree, 3 cross-reference stream, then
    // object stream 4 + 2i holding object 5 + 2i (object 5 is 2's home:
    // numbered apart so that ids do not depend on the count).
    let mut rows: Vec<(u8, usize, u8)> = vec![(0, 0, 255); 4 + 2 * pads.len()];
    let mut out = b"%PDF-1.7\n".to_vec();
    rows[1] = (1, out.len(), 0);
    out.extend(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
    for (i, &pad) in pads.iter().enumerate() {
        let (stream, member) = (4 + 2 * i, if i == 0 { 2 } else { 5 + 2 * i });
        let header = format!("{member} 0 ");
        let mut raw = header.clone().into_bytes();
        raw.extend(if i == 0 {
            &b"<< /Type /Pages /Kids [<< /Type /Page /MediaBox [0 0 200 200] >>] /Count 1 >>"[..]
        } else {
            &b"<< >>"[..]
        });
        raw.resize(raw.len() + pad, b' ');
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6);
        rows[stream] = (1, out.len(), 0);
        rows[member] = (2, stream, 0);
        out.extend(
            format!(
                "{stream} 0 obj\n<< /Type /ObjStm /N 1 /First {} /Filter /FlateDecode /Length {} >>\nstream\n",
                header.len(),
                packed.len()
            )
            .as_bytes(),
        );
        out.extend(&packed);
        out.extend(b"\nendstream\nendobj\n");
    }
    let xref = out.len();
    rows[3] = (1, xref, 0);
    let mut table: Vec<u8> = rows
        .iter()
        .flat_map(|&(kind, field, generation)| {
            let mut row = vec![kind];
            row.extend((field as u32).to_be_bytes());
            row.push(generation);
            row
        })
        .collect();
    table.resize(table.len() + xref_pad, 0);
    let table = miniz_oxide::deflate::compress_to_vec_zlib(&table, 6);
    out.extend(
        format!(
            "3 0 obj\n<< /Type /XRef /Size {} /W [1 4 1] /Root 1 0 R /Filter /FlateDecode /Length {}{xref_extra} >>\nstream\n",
            rows.len(),
            table.len()
        )
        .as_bytes(),
    );
    out.extend(&table);
    out.extend(format!("\nendstream\nendobj\nstartxref\n{xref}\n%%EOF\n").as_bytes());
    out
}

#[test]
fn streams_that_hold_objects_are_decoded_within_max_pdf_stream_bytes() {
    let small = Options {
        max_pdf_stream_bytes: 1 << 20,
        ..Options::default()
    };
    let too_large = |doc: &[u8], got: Result<u32, Error>| {
        let err = got.unwrap_err();
        assert_eq!(err.code(), "stream_too_large", "{err}");
        assert!(
            err.to_string()
                .contains("the streams that hold its objects expand beyond 1 MB"),
            "{err}"
        );
        // Within the default limit, the same file is read.
        assert_eq!(page_count(doc, &Options::default()).unwrap(), 1);
    };
    assert_eq!(page_count(&packed_pdf(&[0], 0, ""), &small).unwrap(), 1);
    // hayro decoded these whole when the file was opened, before any
    // check of ours: a 2 MB upload held 2 GB.
    let objects = packed_pdf(&[2 << 20], 0, "");
    too_large(&objects, page_count(&objects, &small));
    let table = packed_pdf(&[0], 2 << 20, "");
    too_large(&table, page_count(&table, &small));
    // Object streams are kept while the document is open: together they
    // may hold no more (two of 600 KB, the second read by the checks
    // that visit every object).
    let two = packed_pdf(&[600_000, 600_000], 0, "");
    assert_eq!(page_count(&two, &small).unwrap(), 1);
    too_large(
        &two,
        extract(&two, &template(), &small).map(|got| got.pages),
    );
}

#[test]
fn cross_reference_stream_predictors_that_divided_by_zero_or_overflowed() {
    // Rows of no bytes (a division by zero), and 16 colours of 16 bits
    // (256 bits, overflowing the byte it was counted in): both panicked
    // in the PDF reader, which then read the file by scanning it.
    for parms in [
        "/Predictor 2 /Columns 0",
        "/Predictor 2 /Columns 6 /Colors 16 /BitsPerComponent 16",
        "/Predictor 12 /Columns 6 /Colors 16 /BitsPerComponent 16",
    ] {
        let doc = packed_pdf(&[0], 0, &format!(" /DecodeParms << {parms} >>"));
        assert_eq!(page_count(&doc, &Options::default()).unwrap(), 1, "{parms}");
    }
}

#[test]
fn a_pdf_listing_more_objects_than_max_pdf_objects_is_too_complex() {
    // A catalog, a page tree of one page and 2,000 more objects, in a
    // classic cross-reference table; the PDF reader then scans the file
    // for objects, as for a broken table, and finds as many.
    let mut objs = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>".to_vec(),
    ];
    objs.extend((0..2_000).map(|_| b"<< >>".to_vec()));
    let doc = corpus::pdf_file(&objs);
    assert_eq!(page_count(&doc, &Options::default()).unwrap(), 1);
    let opts = Options {
        max_pdf_objects: 1_000,
        ..Options::default()
    };
    // A cross-reference stream listing more (six rows, two allowed).
    let packed = packed_pdf(&[0], 0, "");
    assert_eq!(page_count(&packed, &Options::default()).unwrap(), 1);
    let two = Options {
        max_pdf_objects: 2,
        ..Options::default()
    };
    for (err, max) in [
        (page_count(&doc, &opts).unwrap_err(), 1000),
        (extract(&doc, &template(), &opts).unwrap_err(), 1000),
        (page_count(&packed, &two).unwrap_err(), 2),
    ] {
        assert_eq!(err.code(), "document_too_complex", "{err}");
        assert!(
            err.to_string().contains(&format!(
                "more than {max} objects; split it into smaller documents, or raise max_pdf_objects"
            )),
            "{err}"
        );
    }
}

#[test]
fn an_inline_image_split_over_content_streams_decodes_within_the_limit() {
    // A black 100 x 100 inline image whose data decodes to 2 MiB, its
    // `EI` in the page's second content stream: each stream alone holds
    // no whole image for the checks to measure, and the PDF reader parses
    // inline images apart from their document (it decoded them without
    // bound: 629 MB from 1.6 KB).
    let mut first = b"q 100 0 0 100 0 0 cm BI /W 100 /H 100 /BPC 8 /CS /G /F /Fl ID ".to_vec();
    first.extend(miniz_oxide::deflate::compress_to_vec_zlib(
        &vec![0; 2 << 20],
        6,
    ));
    first.push(b' ');
    let stream = |data: &[u8]| {
        let mut s = format!("<< /Length {} >>\nstream\n", data.len()).into_bytes();
        s.extend(data);
        s.extend(b"\nendstream");
        s
    };
    let doc = corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents [4 0 R 5 0 R] >>".to_vec(),
        stream(&first),
        stream(b"EI Q"),
    ]);
    let mean = |opts: &Options| {
        let page = render_page(&doc, 1, 72, opts).unwrap();
        page.pixels().map(|p| u64::from(p.0[0])).sum::<u64>() / page.pixels().len() as u64
    };
    // Within the default limit it is drawn; past a limit of 1 MiB, not.
    assert!(mean(&Options::default()) < 10);
    let small = Options {
        max_pdf_stream_bytes: 1 << 20,
        ..Options::default()
    };
    assert!(mean(&small) > 245);
}

/// Extracts `doc` (one page whose content ends with [`TOTAL`]), which
/// must find the total, and tells how long it took.
fn total_read_in(doc: &[u8]) -> Duration {
    let started = Instant::now();
    let got = extract(doc, &template(), &Options::default()).unwrap();
    assert_eq!(got.result["total"], json!(5.0));
    started.elapsed()
}

#[test]
fn inline_images_whose_end_is_unclear_are_read_with_bounded_work() {
    // An inline image's data may hold `EI`; the PDF reader tells which
    // one ends it by reading on, and parses what follows as content,
    // inline images included, each searching in turn. A chain of them
    // recursed as deep as it was long: 100,000 links (a few KB packed)
    // overflowed the stack and aborted the process; 40 ran for hours.
    let link = "EI EI BI /W 1 /H 1 /BPC 8 /CS /G ID ";
    let content = format!(
        "q BI /W 1 /H 1 /BPC 8 /CS /G ID {}EI Q\n{TOTAL}",
        link.repeat(100_000)
    );
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(content.as_bytes(), 6);
    let took = total_read_in(&pages_sharing(1, "4 0 R", &packed));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // Each `EI` was checked against every later one when a binary byte
    // comes after them all: 100,000 of them, minutes per reading.
    let mut content = b"q BI /W 1 /H 1 /BPC 8 /CS /G ID ".to_vec();
    content.extend(b"EI ".repeat(100_000));
    content.extend(b"\x80 EI Q\n");
    content.extend(TOTAL.as_bytes());
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(&content, 6);
    let took = total_read_in(&pages_sharing(1, "4 0 R", &packed));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // Images with no `EI` after them: each looked through the rest of the
    // stream (200,000 of them, about a minute per reading); and images
    // whose next `BI` has no dictionary, each step of the search looking
    // for the next `EI` through the rest again.
    for content in [
        "BI ID ".repeat(200_000),
        format!(
            "q BI /W 1 /H 1 /BPC 8 /CS /G ID x EI {}",
            "BI)".repeat(400_000)
        ),
    ] {
        let content = format!("{TOTAL}\n{content}");
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(content.as_bytes(), 6);
        let took = total_read_in(&pages_sharing(1, "4 0 R", &packed));
        assert!(took < Duration::from_secs(20), "took {took:?}");
    }

    // A small chain drawn 2,000 times (a form): the searches' floor is
    // shared by what a page draws, not given to each stream anew (each
    // drawing cost a quarter of a second).
    let chain = format!("q BI /W 1 /H 1 /BPC 8 /CS /G ID {}EI Q", link.repeat(40));
    let stream = |dict: &str, data: &[u8]| {
        let mut s = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
        s.extend(data);
        s.extend(b"\nendstream");
        s
    };
    let content = format!("{}\n{TOTAL}", "q /X1 Do Q ".repeat(2_000));
    let doc = corpus::pdf_file(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] \
          /Resources << /Font << /F1 5 0 R >> /XObject << /X1 6 0 R >> >> /Contents 4 0 R >>"
            .to_vec(),
        stream("", content.as_bytes()),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 50 50]",
            chain.as_bytes(),
        ),
    ]);
    let took = total_read_in(&doc);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_damaged_pdf_is_rebuilt_unless_that_would_read_it_over_and_over() {
    // Without its cross-reference data the reader scans the file for its
    // objects, and still reads it.
    let packed = miniz_oxide::deflate::compress_to_vec_zlib(TOTAL.as_bytes(), 6);
    let mut doc = pages_sharing(1, "4 0 R", &packed);
    let at = doc.windows(9).rposition(|w| w == b"startxref").unwrap();
    doc.truncate(at);
    total_read_in(&doc);

    // The scan parsed the object after each `N G obj` to its end, and
    // went on from where that parse began: one unclosed string after
    // another made it read the rest of the file each time (hours for a
    // few megabytes). Past 16 times the file (and a floor of 64 MiB),
    // the document is refused.
    // Likewise comments: the scan went on within each, and each object
    // number there read the rest of the line as a comment again (1 MB,
    // minutes).
    for unit in [&b"1 % "[..], b"1 0 obj % ", b"<</Type/ObjStm>> % "] {
        let mut doc = b"%PDF-1.4\n".to_vec();
        doc.extend(unit.repeat((1 << 20) / unit.len()));
        let started = Instant::now();
        let err = extract(&doc, &template(), &Options::default()).unwrap_err();
        assert_eq!(err.code(), "corrupt_document", "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }

    let mut doc = b"%PDF-1.4\n".to_vec();
    doc.extend(b"1 0 obj ( ".repeat(1_000_000));
    let err = extract(&doc, &template(), &Options::default()).unwrap_err();
    assert_eq!(err.code(), "corrupt_document", "{err}");
    assert!(
        err.to_string().contains(
            "its cross-reference data is damaged, and rebuilding it would read the file \
             more than 16 times over; re-save it with a PDF tool"
        ),
        "{err}"
    );
}

/// Text placed past the range of a pixel coordinate (`72 7999…920 Td`,
/// found by the `content` fuzz target) overflowed the renderer's glyph
/// position: a panic with overflow checks, so the document failed as
/// corrupt; and without them (release builds) a glyph 2^32 pixels right
/// of the page was drawn on it, its position cut to 32 bits. Such glyphs
/// are left out now; the rest of the page is drawn.
#[test]
fn glyphs_placed_past_the_pixel_range_are_left_out_of_the_render() {
    let far = "7999999999999999999999999999999920";
    for place in [
        format!("72 {far}"),
        format!("{far} 72"),
        format!("-{far} 72"),
        "72 -3000000000".to_owned(),
        "4294967400 72".to_owned(),
    ] {
        let content = format!(
            "BT /F1 12 Tf {place} Td (Total 5.00) Tj ET BT /F1 40 Tf 72 400 Td (Shown) Tj ET"
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend(content.as_bytes());
        stream.extend(b"\nendstream");
        let doc = corpus::pdf_file(&[
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] \
              /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>"
                .to_vec(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
            stream,
        ]);
        let page = render_page(&doc, 1, 72, &Options::default())
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        let dark = |rows: std::ops::Range<u32>| {
            page.enumerate_pixels()
                .filter(|(_, y, p)| rows.contains(y) && p.0[0] < 128)
                .count()
        };
        assert!(
            dark(400..450) > 100,
            "{place}: the text on the page is drawn"
        );
        // 72 pt from the bottom: where the glyph cut to 32 bits landed.
        assert_eq!(
            dark(740..800),
            0,
            "{place}: a glyph off the page was drawn on it"
        );
    }
}
