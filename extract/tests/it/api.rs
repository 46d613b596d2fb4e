//! Behaviour around the fields: keywords, required fields, defaults,
//! metadata, page selection, multi-page and mixed documents.

use paperhook_extract::{Options, Source, Template, extract, page_count};
use serde_json::{Value, json};

use crate::corpus::{self, Page, write_pdf};

#[test]
fn keywords_decide_whether_a_template_applies() {
    let receipt = corpus::receipt_fr(0);
    let invoice = corpus::invoice_en(0);
    let err = extract(&receipt.pdf, &invoice.template, &Options::default()).unwrap_err();
    assert_eq!(err.code(), "template_mismatch");
    assert!(err.to_string().contains("\"Invoice\""), "{err}");
    assert!(!err.to_string().contains("no text"), "{err}");
    // A page with nothing on it (no text layer, nothing for OCR to read)
    // says so: the keyword is not what the user should look at.
    let blank = write_pdf(&[Page::a4()]);
    let err = extract(&blank, &invoice.template, &Options::default()).unwrap_err();
    assert_eq!(err.code(), "template_mismatch");
    assert!(
        err.to_string()
            .contains("no text could be read from any page"),
        "{err}"
    );
}

#[test]
fn missing_required_fields_are_reported_not_guessed() {
    let doc = corpus::invoice_en(0);
    let t = Template::from_json(json!({"fields": [
        {"name": "po_number", "type": "text", "required": true, "locator": {"kind": "label", "label": "PO Number"}},
        {"name": "note", "type": "text", "locator": {"kind": "label", "label": "Note"}},
        {"name": "terms", "type": "integer", "required": true, "default": 30, "locator": {"kind": "label", "label": "Terms"}},
        {"name": "invoice_no", "type": "text", "locator": {"kind": "label", "label": "Invoice No"}}
    ]}))
    .unwrap();
    let got = extract(&doc.pdf, &t, &Options::default()).unwrap();
    assert_eq!(got.missing_required, vec!["po_number"]);
    assert_eq!(got.result["po_number"], Value::Null);
    assert_eq!(got.result["note"], Value::Null);
    assert_eq!(got.result["terms"], json!(30));
    // Key order depends on serde_json's preserve_order feature.
    let mut keys: Vec<&String> = got.result.keys().collect();
    keys.sort();
    assert_eq!(keys, ["invoice_no", "note", "po_number", "terms"]);
    assert!(!got.fields.contains_key("po_number") && !got.fields.contains_key("terms"));
    let meta = &got.fields["invoice_no"];
    assert_eq!(
        (meta.page, meta.source, meta.confidence),
        (1, Source::TextLayer, 1.0)
    );
    // The value sits at x = 460 pt, y = 90 pt on a 595 x 842 pt page.
    assert!(
        (meta.bbox[0] - 460.0 / 595.0).abs() < 0.01,
        "{:?}",
        meta.bbox
    );
    assert!(
        (meta.bbox[1] - 90.0 / 842.0).abs() < 0.01,
        "{:?}",
        meta.bbox
    );
    let as_json = serde_json::to_value(&got).unwrap();
    assert_eq!(
        as_json["fields"]["invoice_no"]["source"],
        json!("text_layer")
    );
}

#[test]
fn page_selection_and_regex_occurrences_across_pages() {
    let mut pages = Vec::new();
    for (i, total) in ["10.00", "20.50", "5.25"].iter().enumerate() {
        let mut p = Page::a4();
        p.texts.push(corpus::Text {
            x: 50.0,
            y: 50.0,
            size: 12.0,
            bold: false,
            s: format!("Page {} of 3", i + 1),
        });
        p.texts.push(corpus::Text {
            x: 50.0,
            y: 400.0,
            size: 12.0,
            bold: false,
            s: format!("Total {total}"),
        });
        pages.push(p);
    }
    let pdf = write_pdf(&pages);
    assert_eq!(page_count(&pdf, &Options::default()).unwrap(), 3);
    let t = Template::from_json(json!({"fields": [
        {"name": "first", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)"}},
        {"name": "last", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)", "occurrence": "last"}},
        {"name": "all", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)", "occurrence": "all"}},
        {"name": "sum", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)", "occurrence": "all", "combine": "sum"}},
        {"name": "min", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)", "occurrence": "all", "combine": "min"}},
        {"name": "p2", "type": "money", "locator": {"kind": "regex", "pattern": "Total (\\S+)", "page": 2}},
        {"name": "region_last", "type": "text", "locator": {"kind": "region", "page": "last", "box": [0.05, 0.04, 0.5, 0.1]}},
        {"name": "region_p9", "type": "text", "locator": {"kind": "region", "page": 9, "box": [0.05, 0.04, 0.5, 0.1]}},
        {"name": "label_any", "type": "money", "locator": {"kind": "label", "label": "Total", "page": "last"}},
        {"name": "none_one", "type": "text", "default": "n/a", "locator": {"kind": "regex", "pattern": "Nothing (\\S+)", "occurrence": "all"}},
        {"name": "none_list", "type": "money", "default": [1, 2.5], "locator": {"kind": "regex", "pattern": "Nothing (\\S+)", "occurrence": "all"}},
        {"name": "none_sum", "type": "money", "default": 0, "locator": {"kind": "regex", "pattern": "Nothing (\\S+)", "occurrence": "all", "combine": "sum"}}
    ]}))
    .unwrap();
    let got = extract(&pdf, &t, &Options::default()).unwrap();
    assert_eq!(got.pages, 3);
    assert_eq!(got.result["first"], json!(10.0));
    assert_eq!(got.result["last"], json!(5.25));
    assert_eq!(got.result["all"], json!([10.0, 20.5, 5.25]));
    assert_eq!(got.result["sum"], json!(35.75));
    assert_eq!(got.result["min"], json!(5.25));
    assert_eq!(got.result["p2"], json!(20.5));
    assert_eq!(got.fields["p2"].page, 2);
    assert_eq!(got.result["region_last"], json!("Page 3 of 3"));
    assert_eq!(got.result["region_p9"], Value::Null);
    assert_eq!(got.result["label_any"], json!(5.25));
    // An `all` field is an array when nothing is found, too.
    assert_eq!(got.result["none_one"], json!(["n/a"]));
    assert_eq!(got.result["none_list"], json!([1, 2.5]));
    assert_eq!(got.result["none_sum"], json!(0));
}

#[test]
fn mixed_pdf_uses_the_text_layer_and_ocr_per_page() {
    // Page 1: a digital invoice. Page 2: a scanned form embedded as JPEG.
    let invoice = corpus::invoice_en(1);
    let form = corpus::form_en(1);
    let scan = corpus::scan_image(&form.pdf, &corpus::SCANS[0], 1);
    let jpeg = corpus::encode(&scan, image::ImageFormat::Jpeg);
    let mut p1 = Page::a4();
    p1.texts.push(corpus::Text {
        x: 380.0,
        y: 90.0,
        size: 10.0,
        bold: false,
        s: "Invoice No:".into(),
    });
    p1.texts.push(corpus::Text {
        x: 460.0,
        y: 90.0,
        size: 10.0,
        bold: false,
        s: invoice.expected["invoice_no"].as_str().unwrap().into(),
    });
    let p2 = Page {
        jpeg: Some((jpeg, scan.width(), scan.height())),
        ..Page::a4()
    };
    let pdf = write_pdf(&[p1, p2]);
    let mut fields = vec![
        json!({"name": "invoice_no", "type": "text", "locator": {"kind": "label", "label": "Invoice No"}}),
    ];
    for f in &form.template.fields {
        let mut v = serde_json::to_value(f).unwrap();
        v["locator"]["page"] = json!(2);
        fields.push(v);
    }
    let t = Template::from_json(json!({ "fields": fields })).unwrap();
    let got = extract(&pdf, &t, &Options::default()).unwrap();
    assert_eq!(got.result["invoice_no"], invoice.expected["invoice_no"]);
    assert_eq!(got.fields["invoice_no"].source, Source::TextLayer);
    for (k, want) in &form.expected {
        assert!(
            corpus::field_ok(got.result.get(k), want),
            "{k}: got {:?}, want {want}",
            got.result.get(k)
        );
        assert_eq!(
            (got.fields[k].page, got.fields[k].source),
            (2, Source::Ocr),
            "{k}"
        );
        assert!(got.fields[k].confidence > 0.5 && got.fields[k].confidence <= 1.0);
    }
    // Only the scanned page was rendered and read; the digital page alone costs neither.
    assert!(
        got.timings.render > std::time::Duration::ZERO,
        "{:?}",
        got.timings
    );
    assert!(
        got.timings.ocr > std::time::Duration::ZERO,
        "{:?}",
        got.timings
    );
    let digital = extract(&invoice.pdf, &invoice.template, &Options::default()).unwrap();
    assert_eq!(digital.timings, paperhook_extract::Timings::default());
}

#[test]
fn multi_page_tiff_reads_every_page() {
    use tiff::encoder::{TiffEncoder, colortype::Gray8};
    let a = corpus::form_en(2);
    let b = corpus::form_en(3);
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut out).unwrap();
        for doc in [&a, &b] {
            let img = corpus::scan_image(&doc.pdf, &corpus::SCANS[2], 0);
            enc.write_image::<Gray8>(img.width(), img.height(), img.as_raw())
                .unwrap();
        }
    }
    let tiff = out.into_inner();
    assert_eq!(page_count(&tiff, &Options::default()).unwrap(), 2);
    let t = Template::from_json(json!({"fields": [
        {"name": "first", "type": "text", "locator": {"kind": "region", "page": 1, "box": [0.37, 0.15, 0.9, 0.2]}},
        {"name": "second", "type": "text", "locator": {"kind": "region", "page": 2, "box": [0.37, 0.15, 0.9, 0.2]}}
    ]}))
    .unwrap();
    let got = extract(&tiff, &t, &Options::default()).unwrap();
    assert_eq!(got.pages, 2);
    assert_eq!(got.result["first"], a.expected["name"]);
    assert_eq!(got.result["second"], b.expected["name"]);
    let opts = Options {
        max_pages: 1,
        ..Options::default()
    };
    assert_eq!(
        extract(&tiff, &t, &opts).unwrap_err().code(),
        "page_limit_exceeded"
    );
}

/// A fax-style TIFF: one strip of 1-bit pixels, uncompressed, with
/// PhotometricInterpretation 0 (WhiteIsZero: a set bit is ink).
fn bilevel_tiff(img: &image::GrayImage) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let row = w.div_ceil(8) as usize;
    let mut bits = vec![0u8; row * h as usize];
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] < 128 {
            bits[y as usize * row + x as usize / 8] |= 0x80 >> (x % 8);
        }
    }
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let entries = [
        (256, LONG, 1, w),
        (257, LONG, 1, h),
        (258, SHORT, 1, 1),
        (259, SHORT, 1, 1),
        (262, SHORT, 1, 0),
        (273, LONG, 1, corpus::tiff_extra_offset(9)),
        (277, SHORT, 1, 1),
        (278, LONG, 1, h),
        (279, LONG, 1, bits.len() as u32),
    ];
    corpus::tiff_file(&entries, &bits)
}

#[test]
fn a_white_is_zero_fax_tiff_reads_as_ink_on_paper() {
    let doc = corpus::form_en(4);
    let scan = corpus::scan_image(&doc.pdf, &corpus::SCANS[2], 0);
    let tiff = bilevel_tiff(&scan);
    let page = paperhook_extract::render_page(&tiff, 1, 150, &Options::default()).unwrap();
    let white = page.pixels().filter(|p| p[0] == 255).count();
    assert!(
        white > page.pixels().len() * 3 / 4,
        "{white} of {} pixels white: the page came out as a negative",
        page.pixels().len()
    );
    let t = Template::from_json(json!({"fields": [
        {"name": "name", "type": "text", "locator": {"kind": "region", "box": [0.37, 0.15, 0.9, 0.2]}}
    ]}))
    .unwrap();
    let got = extract(&tiff, &t, &Options::default()).unwrap();
    assert_eq!(got.result["name"], doc.expected["name"]);
}

#[test]
fn transparent_pixels_lie_on_white_paper() {
    let mut img = image::RgbaImage::new(3, 1);
    img.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
    img.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
    img.put_pixel(2, 0, image::Rgba([0, 0, 0, 128]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    let page = paperhook_extract::render_page(&png, 1, 150, &Options::default()).unwrap();
    assert_eq!(page.as_raw(), &vec![255, 0, 127]);
}

#[test]
fn a_header_inside_a_longer_header_finds_its_own_words() {
    let t = |x: f64, y: f64, s: &str| corpus::Text {
        x,
        y,
        size: 10.0,
        bold: false,
        s: s.into(),
    };
    let mut p = Page::a4();
    p.texts.push(t(50.0, 100.0, "Description"));
    p.texts.push(t(300.0, 100.0, "Unit Price"));
    p.texts.push(t(450.0, 100.0, "Price"));
    p.texts.push(t(50.0, 120.0, "Bolts M8"));
    p.texts.push(t(320.0, 120.0, "0.40"));
    p.texts.push(t(455.0, 120.0, "4.00"));
    let pdf = write_pdf(&[p]);
    // "Price" comes first in the template and would match the second word
    // of "Unit Price" if the longer header did not take its words first.
    let template = Template::from_json(json!({"fields": [
        {"name": "items", "type": "text", "locator": {"kind": "table",
          "columns": [{"name": "item", "header": "Description"},
                      {"name": "price", "header": "Price", "type": "money"},
                      {"name": "unit_price", "header": "Unit Price", "type": "money"}]}}
    ]}))
    .unwrap();
    let got = extract(&pdf, &template, &Options::default()).unwrap();
    assert_eq!(
        got.result["items"],
        json!([{"item": "Bolts M8", "price": 4.0, "unit_price": 0.4}])
    );
}

#[test]
fn tables_continue_under_a_repeated_header_and_join_wrapped_lines() {
    let t = |x: f64, y: f64, s: &str| corpus::Text {
        x,
        y,
        size: 10.0,
        bold: false,
        s: s.into(),
    };
    let header = |p: &mut Page, y: f64| {
        p.texts.push(t(50.0, y, "Item"));
        p.texts.push(t(300.0, y, "Qty"));
        p.texts.push(t(450.0, y, "Price"));
    };
    let mut p1 = Page::a4();
    header(&mut p1, 100.0);
    let mut y = 120.0;
    for (item, qty, price) in [("Bolts M8", "10", "0.40"), ("Nuts M8", "10", "0.20")] {
        p1.texts.push(t(50.0, y, item));
        p1.texts.push(t(305.0, y, qty));
        p1.texts.push(t(455.0, y, price));
        y += 15.0;
    }
    // The next row wraps its description onto a second line.
    p1.texts.push(t(50.0, y, "Hex key set"));
    p1.texts.push(t(305.0, y, "1"));
    p1.texts.push(t(455.0, y, "12.90"));
    p1.texts.push(t(50.0, y + 15.0, "(metric, 9 pieces)"));
    let mut p2 = Page::a4();
    header(&mut p2, 60.0);
    p2.texts.push(t(50.0, 80.0, "Washers"));
    p2.texts.push(t(305.0, 80.0, "20"));
    p2.texts.push(t(455.0, 80.0, "0.05"));
    p2.texts.push(t(50.0, 95.0, "Total"));
    p2.texts.push(t(455.0, 95.0, "22.90"));
    let pdf = write_pdf(&[p1, p2]);
    let template = Template::from_json(json!({"fields": [
        {"name": "items", "type": "text", "locator": {"kind": "table", "end": "^Total",
          "columns": [{"name": "item", "header": "Item", "required": true},
                      {"name": "qty", "header": "Qty", "type": "integer", "required": true},
                      {"name": "price", "header": "Price", "type": "money"}]}},
        {"name": "first_page_only", "type": "text", "locator": {"kind": "table", "page": 1,
          "columns": [{"name": "item", "header": "Item"}]}}
    ]}))
    .unwrap();
    let got = extract(&pdf, &template, &Options::default()).unwrap();
    assert_eq!(
        got.result["items"],
        json!([
            {"item": "Bolts M8", "qty": 10, "price": 0.4},
            {"item": "Nuts M8", "qty": 10, "price": 0.2},
            {"item": "Hex key set (metric, 9 pieces)", "qty": 1, "price": 12.9},
            {"item": "Washers", "qty": 20, "price": 0.05}
        ])
    );
    assert_eq!(got.fields["items"].page, 1);
    assert_eq!(
        got.result["first_page_only"].as_array().map(Vec::len),
        Some(4)
    );
}
