//! The generated accuracy corpus: invoices, receipts and forms in several
//! layouts and languages, written as digital PDFs by a tiny PDF writer, and
//! turned into scans (rendered, rotated, skewed, noised) on demand. Every
//! document comes with its template and the expected `result`.
//!
//! Shared by the integration tests and `examples/score.rs` (via `#[path]`),
//! so the committed repository holds code, not binary fixtures.

#![allow(dead_code)]

use std::io::Cursor;

use image::{GrayImage, ImageFormat, Luma};
use paperhook_extract::{Options, Template, raster, render_page};
use serde_json::{Map, Value, json};

/// One line of text on a page, at `x`, `y` (top of the text) in points.
#[derive(Debug, Clone)]
pub struct Text {
    pub x: f64,
    pub y: f64,
    pub size: f64,
    pub bold: bool,
    pub s: String,
}

/// A page: texts, horizontal rules and optional JPEG images.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub width: f64,
    pub height: f64,
    pub texts: Vec<Text>,
    pub rules: Vec<(f64, f64, f64)>,
    /// A full-page grey JPEG (a scanned page inside a PDF).
    pub jpeg: Option<(Vec<u8>, u32, u32)>,
}

impl Page {
    pub fn a4() -> Page {
        Page {
            width: 595.0,
            height: 842.0,
            ..Page::default()
        }
    }
    fn t(&mut self, x: f64, y: f64, size: f64, s: impl Into<String>) {
        self.texts.push(Text {
            x,
            y,
            size,
            bold: false,
            s: s.into(),
        });
    }
    fn b(&mut self, x: f64, y: f64, size: f64, s: impl Into<String>) {
        self.texts.push(Text {
            x,
            y,
            size,
            bold: true,
            s: s.into(),
        });
    }
    /// Right-aligned at `right`.
    fn r(&mut self, right: f64, y: f64, size: f64, s: impl Into<String>) {
        let s = s.into();
        let x = right - text_width(&s, size);
        self.t(x, y, size, s);
    }
}

/// Helvetica advance widths (per 1000 em) for the characters we print.
fn char_width(c: char) -> f64 {
    match c {
        '0'..='9' | '$' | '€' | '£' => 556.0,
        '.' | ',' | ' ' | ':' | '\'' | 'i' | 'j' | 'l' | 'I' => 278.0,
        'f' | 't' | 'r' | '/' | '-' | '(' | ')' => 333.0,
        'm' | 'M' | 'W' => 833.0,
        'w' => 722.0,
        c if c.is_uppercase() => 680.0,
        _ => 556.0,
    }
}

pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().map(char_width).sum::<f64>() * size / 1000.0
}

fn cp1252(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            '€' => 0x80,
            '°' => 0xB0,
            c if (c as u32) < 256 => c as u8,
            _ => b'?',
        })
        .collect()
}

fn pdf_string(s: &str) -> Vec<u8> {
    let mut out = vec![b'('];
    for b in cp1252(s) {
        if matches!(b, b'(' | b')' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b')');
    out
}

/// Write pages as a PDF 1.4 file with Helvetica (standard 14, WinAnsi).
pub fn write_pdf(pages: &[Page]) -> Vec<u8> {
    // 1 catalog, 2 pages, 3 Helvetica, 4 Helvetica-Bold, then per page:
    // page, content, and an image when there is one.
    let mut objs: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        Vec::new(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
            .to_vec(),
    ];
    let mut kids = Vec::new();
    for p in pages {
        let page_id = objs.len() + 1;
        kids.push(format!("{page_id} 0 R"));
        let mut content = Vec::new();
        if let Some((_, _, _)) = &p.jpeg {
            content.extend(format!("q {} 0 0 {} 0 0 cm /Im0 Do Q\n", p.width, p.height).as_bytes());
        }
        for (x0, x1, y) in &p.rules {
            content.extend(
                format!("0.5 w {x0} {} m {x1} {} l S\n", p.height - y, p.height - y).as_bytes(),
            );
        }
        for t in &p.texts {
            let baseline = p.height - t.y - 0.78 * t.size;
            content.extend(
                format!(
                    "BT /{} {} Tf 1 0 0 1 {:.2} {:.2} Tm ",
                    if t.bold { "F2" } else { "F1" },
                    t.size,
                    t.x,
                    baseline
                )
                .as_bytes(),
            );
            content.extend(pdf_string(&t.s));
            content.extend(b" Tj ET\n");
        }
        let xobj = if p.jpeg.is_some() {
            format!(" /XObject << /Im0 {} 0 R >>", page_id + 2)
        } else {
            String::new()
        };
        objs.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] /Resources << /Font << /F1 3 0 R /F2 4 0 R >>{xobj} >> /Contents {} 0 R >>",
                p.width,
                p.height,
                page_id + 1
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend(&content);
        stream.extend(b"\nendstream");
        objs.push(stream);
        if let Some((jpeg, w, h)) = &p.jpeg {
            let mut s = format!(
                "<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /DCTDecode /Length {} >>\nstream\n",
                jpeg.len()
            )
            .into_bytes();
            s.extend(jpeg);
            s.extend(b"\nendstream");
            objs.push(s);
        }
    }
    objs[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        pages.len()
    )
    .into_bytes();
    pdf_file(&objs)
}

/// A PDF file of these objects, numbered from 1 (the first is the
/// catalog), with a fixed document ID so that equal objects give equal bytes.
pub fn pdf_file(objs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend(o);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R /ID [<5061706572686f6f6b2d636f72707573> <5061706572686f6f6b2d636f72707573>] >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A small deterministic generator (xorshift), so every run builds the
/// same corpus.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// A generated document with its template and expected result.
pub struct Doc {
    pub name: String,
    pub layout: &'static str,
    pub pdf: Vec<u8>,
    /// The page the PDF was written from (to build multi-page files).
    pub page: Page,
    pub template: Template,
    pub expected: Map<String, Value>,
}

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

fn cents(c: i64, dec: char, thou: char) -> String {
    let int = (c / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(thou);
        }
        grouped.push(ch);
    }
    format!("{grouped}{dec}{:02}", c % 100)
}

fn money(c: i64) -> Value {
    json!((c as f64) / 100.0)
}

const CUSTOMERS: [&str; 5] = [
    "Northwind Traders",
    "Blue Harbor Cafe",
    "Kestrel Dynamics",
    "Oakridge Clinic",
    "Summit Outdoor Co",
];
const ITEMS_EN: [&str; 8] = [
    "Cordless drill 18V",
    "Safety gloves",
    "Steel hammer",
    "Tape measure 5m",
    "Wood screws (box)",
    "Spirit level",
    "Utility knife",
    "Work lamp LED",
];
const ITEMS_DE: [&str; 6] = [
    "Bürostuhl Komfort",
    "Schreibtischlampe",
    "Aktenordner blau",
    "Druckerpapier A4",
    "Kugelschreiber Set",
    "Whiteboard groß",
];

/// English invoice: values right of labels, a region for the due date, a
/// table of items, two VAT lines summed by a regex.
pub fn invoice_en(seed: u64) -> Doc {
    let mut r = Rng::new(seed);
    let mut p = Page::a4();
    let inv = format!("INV-{}-{:04}", 2023 + r.below(3), r.below(10000));
    let (d, m, y) = (
        1 + r.below(28) as u32,
        1 + r.below(12) as u32,
        2023 + r.below(3) as i32,
    );
    let due = (1 + r.below(28) as u32, 1 + r.below(12) as u32, 2025);
    let date_text = if seed.is_multiple_of(2) {
        format!("{d:02}.{m:02}.{y}")
    } else {
        format!("{} {d}, {y}", MONTHS_EN[m as usize - 1])
    };
    let customer = *r.pick(&CUSTOMERS);
    let status = *r.pick(&["Paid", "Unpaid", "Overdue"]);
    p.b(50.0, 50.0, 16.0, "ACME Tools Ltd.");
    p.t(50.0, 72.0, 9.0, "12 Harbour Road, Bristol BS1 4XX");
    p.b(400.0, 50.0, 20.0, "INVOICE");
    p.t(380.0, 90.0, 10.0, "Invoice No:");
    p.t(460.0, 90.0, 10.0, &inv);
    p.t(380.0, 105.0, 10.0, "Date:");
    p.t(460.0, 105.0, 10.0, &date_text);
    p.t(380.0, 120.0, 10.0, "Due date:");
    p.t(
        460.0,
        120.0,
        10.0,
        format!("{:04}-{:02}-{:02}", due.2, due.1, due.0),
    );
    p.b(50.0, 150.0, 10.0, "Bill to");
    p.t(50.0, 165.0, 10.0, customer);
    p.t(
        50.0,
        178.0,
        10.0,
        format!("{} Market Street", 1 + r.below(200)),
    );
    p.t(50.0, 191.0, 10.0, "London");
    p.b(50.0, 230.0, 10.0, "Description");
    p.b(318.0, 230.0, 10.0, "Qty");
    p.b(392.0, 230.0, 10.0, "Unit price");
    p.b(498.0, 230.0, 10.0, "Amount");
    p.rules.push((50.0, 545.0, 244.0));
    let mut y_row = 252.0;
    let mut items = Vec::new();
    let mut subtotal = 0i64;
    let n = 2 + r.below(4);
    let mut names: Vec<&str> = ITEMS_EN.to_vec();
    for _ in 0..n {
        let name = names.remove(r.below(names.len() as u64) as usize);
        let qty = 1 + r.below(12) as i64;
        let unit = 150 + r.below(25000) as i64;
        let amount = qty * unit;
        subtotal += amount;
        p.t(50.0, y_row, 10.0, name);
        p.r(338.0, y_row, 10.0, qty.to_string());
        p.r(445.0, y_row, 10.0, cents(unit, '.', ','));
        p.r(540.0, y_row, 10.0, cents(amount, '.', ','));
        items.push(json!({"description": name, "qty": qty, "unit_price": money(unit), "amount": money(amount)}));
        y_row += 17.0;
    }
    p.rules.push((50.0, 545.0, y_row));
    y_row += 12.0;
    let vat_a = subtotal * 20 / 100;
    let vat_b = 100 + r.below(900) as i64;
    let total = subtotal + vat_a + vat_b;
    for (label, v) in [
        ("Subtotal", subtotal),
        ("VAT 20%", vat_a),
        ("VAT 5%", vat_b),
    ] {
        p.t(392.0, y_row, 10.0, label);
        p.r(540.0, y_row, 10.0, cents(v, '.', ','));
        y_row += 15.0;
    }
    p.b(392.0, y_row, 11.0, "Total");
    p.r(540.0, y_row, 11.0, format!("£{}", cents(total, '.', ',')));
    let iban = "GB29 NWBK 6016 1331 9268 19";
    p.t(50.0, 740.0, 9.0, format!("IBAN: {iban}"));
    p.t(50.0, 755.0, 9.0, format!("Status: {status}"));
    p.t(50.0, 790.0, 8.0, "Thank you for your business.");
    let template = Template::from_json(json!({
        "keywords": ["Invoice"],
        "fields": [
            {"name": "invoice_no", "type": "text", "required": true, "validate": "^INV-\\d{4}-\\d{4}$",
             "locator": {"kind": "label", "label": "Invoice No", "direction": "right"}},
            {"name": "date", "type": "date", "required": true, "locator": {"kind": "label", "label": "Date", "direction": "right"}},
            {"name": "due_date", "type": "date", "locator": {"kind": "region", "box": [0.76, 0.138, 0.98, 0.162]}},
            {"name": "customer", "type": "text", "locator": {"kind": "label", "label": "Bill to", "direction": "below", "max_gap": 0.05}},
            {"name": "items", "type": "text", "locator": {"kind": "table", "end": "^\\s*(Subtotal|Total)",
              "columns": [
                {"name": "description", "header": "Description", "required": true},
                {"name": "qty", "header": "Qty", "type": "integer"},
                {"name": "unit_price", "header": "Unit price", "type": "money"},
                {"name": "amount", "header": "Amount", "type": "money"}]}},
            {"name": "subtotal", "type": "money", "locator": {"kind": "regex", "pattern": "Subtotal\\s+(\\S+)"}},
            {"name": "vat", "type": "money", "locator": {"kind": "regex", "pattern": "VAT \\d+%\\s+(\\S+)", "occurrence": "all", "combine": "sum"}},
            {"name": "total", "type": "money", "required": true, "locator": {"kind": "regex", "pattern": "(?m)^\\s*Total\\s+(.+)$", "occurrence": "last"}},
            {"name": "iban", "type": "text", "whitespace": "remove", "validate": "^[A-Z]{2}\\d{2}[A-Z0-9]{10,30}$",
             "locator": {"kind": "label", "label": "IBAN"}},
            {"name": "status", "type": "enum", "values": ["Paid", "Unpaid", "Overdue"], "locator": {"kind": "label", "label": "Status"}},
            {"name": "currency", "type": "text", "default": "GBP", "locator": {"kind": "regex", "pattern": "\\b(EUR|USD)\\b"}}
        ]
    }))
    .expect("invoice_en template is valid");
    let mut expected = Map::new();
    expected.insert("invoice_no".into(), json!(inv));
    expected.insert("date".into(), json!(format!("{y:04}-{m:02}-{d:02}")));
    expected.insert(
        "due_date".into(),
        json!(format!("{:04}-{:02}-{:02}", due.2, due.1, due.0)),
    );
    expected.insert("customer".into(), json!(customer));
    expected.insert("items".into(), Value::Array(items));
    expected.insert("subtotal".into(), money(subtotal));
    expected.insert("vat".into(), money(vat_a + vat_b));
    expected.insert("total".into(), money(total));
    expected.insert("iban".into(), json!(iban.replace(' ', "")));
    expected.insert("status".into(), json!(status));
    expected.insert("currency".into(), json!("GBP"));
    Doc {
        name: format!("invoice_en_{seed}"),
        layout: "invoice_en",
        pdf: write_pdf(std::slice::from_ref(&p)),
        page: p,
        template,
        expected,
    }
}

/// German invoice: values below their labels, comma decimals, month names.
pub fn invoice_de(seed: u64) -> Doc {
    let mut r = Rng::new(seed + 1000);
    let mut p = Page::a4();
    let inv = format!("RE{}", 100_000 + r.below(900_000));
    let kd = 10_000 + r.below(90_000) as i64;
    let (d, m, y) = (1 + r.below(28) as u32, 1 + r.below(12) as u32, 2024);
    let paid = r.below(2) == 0;
    p.b(380.0, 50.0, 14.0, "Muster GmbH");
    p.t(380.0, 68.0, 9.0, "Hauptstraße 5, 10115 Berlin");
    p.b(50.0, 120.0, 18.0, "RECHNUNG");
    p.t(50.0, 150.0, 9.0, "Rechnungsnummer");
    p.t(50.0, 163.0, 11.0, &inv);
    p.t(200.0, 150.0, 9.0, "Rechnungsdatum");
    p.t(
        200.0,
        163.0,
        11.0,
        format!("{d}. {} {y}", MONTHS_DE[m as usize - 1]),
    );
    p.t(350.0, 150.0, 9.0, "Kundennummer");
    p.t(350.0, 163.0, 11.0, kd.to_string());
    p.b(50.0, 210.0, 10.0, "Pos");
    p.b(85.0, 210.0, 10.0, "Beschreibung");
    p.b(320.0, 210.0, 10.0, "Menge");
    p.b(390.0, 210.0, 10.0, "Einzelpreis");
    p.b(500.0, 210.0, 10.0, "Gesamt");
    p.rules.push((50.0, 545.0, 224.0));
    let mut y_row = 232.0;
    let mut items = Vec::new();
    let mut net = 0i64;
    let mut names: Vec<&str> = ITEMS_DE.to_vec();
    for pos in 1..=(2 + r.below(3) as i64) {
        let name = names.remove(r.below(names.len() as u64) as usize);
        let qty = 1 + r.below(20) as i64;
        let unit = 99 + r.below(90_000) as i64;
        let amount = qty * unit;
        net += amount;
        p.t(50.0, y_row, 10.0, pos.to_string());
        p.t(85.0, y_row, 10.0, name);
        p.r(350.0, y_row, 10.0, qty.to_string());
        p.r(445.0, y_row, 10.0, cents(unit, ',', '.'));
        p.r(540.0, y_row, 10.0, cents(amount, ',', '.'));
        items.push(json!({"pos": pos, "description": name, "qty": qty, "unit": money(unit), "amount": money(amount)}));
        y_row += 17.0;
    }
    y_row += 14.0;
    let vat = net * 19 / 100;
    let total = net + vat;
    p.t(360.0, y_row, 10.0, "Zwischensumme");
    p.r(540.0, y_row, 10.0, format!("{} €", cents(net, ',', '.')));
    p.t(360.0, y_row + 15.0, 10.0, "MwSt. 19%");
    p.r(
        540.0,
        y_row + 15.0,
        10.0,
        format!("{} €", cents(vat, ',', '.')),
    );
    p.b(360.0, y_row + 32.0, 11.0, "Gesamtbetrag");
    p.r(
        540.0,
        y_row + 32.0,
        11.0,
        format!("{} €", cents(total, ',', '.')),
    );
    p.t(
        50.0,
        700.0,
        10.0,
        format!("Bezahlt: {}", if paid { "ja" } else { "nein" }),
    );
    p.t(50.0, 760.0, 8.0, "Lieferdatum");
    p.t(
        50.0,
        771.0,
        10.0,
        format!("{:02}.{:02}.{y}", d.min(27) + 1, m),
    );
    let template = Template::from_json(json!({
        "languages": ["deu", "eng"],
        "keywords": ["Rechnung"],
        "fields": [
            {"name": "invoice_no", "type": "text", "required": true, "locator": {"kind": "label", "label": "Rechnungsnummer", "direction": "below"}},
            {"name": "date", "type": "date", "required": true, "locator": {"kind": "label", "label": "Rechnungsdatum", "direction": "below"}},
            {"name": "customer_no", "type": "integer", "locator": {"kind": "label", "label": "Kundennummer", "direction": "auto"}},
            {"name": "items", "type": "text", "decimal_separator": ",", "thousands_separator": ".",
             "locator": {"kind": "table", "end": "^\\s*(Zwischensumme|Gesamtbetrag)",
              "columns": [
                {"name": "pos", "header": "Pos", "type": "integer"},
                {"name": "description", "header": "Beschreibung", "required": true},
                {"name": "qty", "header": "Menge", "type": "integer"},
                {"name": "unit", "header": "Einzelpreis", "type": "money"},
                {"name": "amount", "header": "Gesamt", "type": "money"}]}},
            {"name": "net", "type": "money", "decimal_separator": ",", "thousands_separator": ".",
             "locator": {"kind": "regex", "pattern": "Zwischensumme\\s+(.+)"}},
            {"name": "vat", "type": "money", "decimal_separator": ",", "thousands_separator": ".",
             "locator": {"kind": "label", "label": "MwSt. 19%", "direction": "right", "max_gap": 0.4}},
            {"name": "total", "type": "money", "required": true, "decimal_separator": ",", "thousands_separator": ".",
             "locator": {"kind": "regex", "pattern": "Gesamtbetrag\\s+(.+)", "occurrence": "last"}},
            {"name": "paid", "type": "boolean", "locator": {"kind": "label", "label": "Bezahlt"}},
            {"name": "delivery", "type": "date", "locator": {"kind": "region", "page": "last", "box": [0.07, 0.912, 0.3, 0.93]}}
        ]
    }))
    .expect("invoice_de template is valid");
    let mut expected = Map::new();
    expected.insert("invoice_no".into(), json!(inv));
    expected.insert("date".into(), json!(format!("{y:04}-{m:02}-{d:02}")));
    expected.insert("customer_no".into(), json!(kd));
    expected.insert("items".into(), Value::Array(items));
    expected.insert("net".into(), money(net));
    expected.insert("vat".into(), money(vat));
    expected.insert("total".into(), money(total));
    expected.insert("paid".into(), json!(paid));
    expected.insert(
        "delivery".into(),
        json!(format!("{y:04}-{m:02}-{:02}", d.min(27) + 1)),
    );
    Doc {
        name: format!("invoice_de_{seed}"),
        layout: "invoice_de",
        pdf: write_pdf(std::slice::from_ref(&p)),
        page: p,
        template,
        expected,
    }
}

const ARTICLES_FR: [&str; 8] = [
    "Baguette",
    "Lait demi-écrémé",
    "Pommes Gala",
    "Café moulu",
    "Beurre doux",
    "Yaourt nature",
    "Jambon blanc",
    "Eau minérale",
];

/// French till receipt: narrow page, DD/MM/YYYY, regex all with max and
/// join, a replace rule.
pub fn receipt_fr(seed: u64) -> Doc {
    let mut r = Rng::new(seed + 2000);
    let mut p = Page {
        width: 260.0,
        height: 520.0,
        ..Page::default()
    };
    let ticket = r.below(99_999) + 1;
    let (d, m, y) = (1 + r.below(28) as u32, 1 + r.below(12) as u32, 2024);
    p.b(30.0, 20.0, 12.0, "SUPERMARCHÉ DU CENTRE");
    p.t(30.0, 38.0, 8.0, "1 place de la Gare, 69002 Lyon");
    p.t(
        30.0,
        60.0,
        9.0,
        format!(
            "Date : {d:02}/{m:02}/{y}  {:02}:{:02}",
            8 + r.below(12),
            r.below(60)
        ),
    );
    p.t(30.0, 74.0, 9.0, format!("Ticket n° {ticket:06}"));
    let mut y_row = 100.0;
    let mut total = 0i64;
    let mut max = 0i64;
    let mut names = Vec::new();
    let mut pool: Vec<&str> = ARTICLES_FR.to_vec();
    for _ in 0..(3 + r.below(4)) {
        let name = pool.remove(r.below(pool.len() as u64) as usize);
        let price = 50 + r.below(1500) as i64;
        total += price;
        max = max.max(price);
        names.push(name);
        p.t(30.0, y_row, 9.0, name);
        p.r(230.0, y_row, 9.0, cents(price, ',', ' '));
        y_row += 13.0;
    }
    y_row += 10.0;
    p.b(30.0, y_row, 11.0, "TOTAL");
    p.r(
        230.0,
        y_row,
        11.0,
        format!("{} EUR", cents(total, ',', ' ')),
    );
    p.t(30.0, y_row + 30.0, 8.0, "Merci de votre visite");
    let template = Template::from_json(json!({
        "languages": ["fra", "eng"],
        "keywords": ["TOTAL"],
        "fields": [
            {"name": "date", "type": "date", "required": true, "date_formats": ["DD/MM/YYYY"],
             "locator": {"kind": "regex", "pattern": "Date\\s*:\\s*(\\S+)"}},
            {"name": "ticket", "type": "integer", "replace": [{"pattern": "^0+", "with": ""}],
             "locator": {"kind": "label", "label_regex": "Ticket\\s+n\\S?", "direction": "right"}},
            {"name": "total", "type": "money", "required": true, "decimal_separator": ",",
             "locator": {"kind": "regex", "pattern": "TOTAL\\s+(.+)"}},
            {"name": "max_price", "type": "money", "decimal_separator": ",",
             "locator": {"kind": "regex", "pattern": "(?m)^\\s*\\p{L}[^\\n]*?\\s{2,}(\\d+,\\d{2})\\s*$", "occurrence": "all", "combine": "max"}},
            {"name": "articles", "type": "text",
             "locator": {"kind": "regex", "pattern": "(?m)^\\s*(\\p{L}[\\p{L} -]*?)\\s{2,}\\d+,\\d{2}\\s*$", "occurrence": "all", "combine": "join", "separator": "; "}}
        ]
    }))
    .expect("receipt_fr template is valid");
    let mut expected = Map::new();
    expected.insert("date".into(), json!(format!("{y:04}-{m:02}-{d:02}")));
    expected.insert("ticket".into(), json!(ticket));
    expected.insert("total".into(), money(total));
    expected.insert("max_price".into(), money(max));
    expected.insert("articles".into(), json!(names.join("; ")));
    Doc {
        name: format!("receipt_fr_{seed}"),
        layout: "receipt_fr",
        pdf: write_pdf(std::slice::from_ref(&p)),
        page: p,
        template,
        expected,
    }
}

const NAMES: [&str; 5] = [
    "John Smith",
    "Maria Garcia",
    "Wei Zhang",
    "Olga Petrova",
    "Ahmed Khan",
];

/// A form read only through regions (zonal OCR on scans).
pub fn form_en(seed: u64) -> Doc {
    let mut r = Rng::new(seed + 3000);
    let mut p = Page::a4();
    let name = *r.pick(&NAMES);
    let (d, m, y) = (
        1 + r.below(28) as u32,
        1 + r.below(12) as u32,
        1950 + r.below(50) as i32,
    );
    let member = r.below(2) == 0;
    let kind = *r.pick(&["Gold", "Silver", "Bronze"]);
    let paid = 1000 + r.below(300_000) as i64;
    let ref_no = format!("AF-{:05}", r.below(100_000));
    p.b(50.0, 60.0, 18.0, "APPLICATION FORM");
    p.t(400.0, 64.0, 10.0, format!("Ref: {ref_no}"));
    let rows: [(&str, String); 5] = [
        ("Full name", name.to_owned()),
        ("Date of birth", format!("{m:02}/{d:02}/{y}")),
        ("Member", if member { "Yes".into() } else { "No".into() }),
        ("Membership type", kind.to_owned()),
        ("Amount paid", format!("$ {}", cents(paid, '.', ','))),
    ];
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 140.0 + i as f64 * 60.0;
        p.t(60.0, y, 11.0, format!("{label}:"));
        p.t(230.0, y, 12.0, value.clone());
        p.rules.push((225.0, 520.0, y + 16.0));
    }
    let bx = |i: usize| {
        let y = 140.0 + i as f64 * 60.0;
        json!([0.37, (y - 10.0) / 842.0, 0.9, (y + 24.0) / 842.0])
    };
    let template = Template::from_json(json!({
        "fields": [
            {"name": "ref", "type": "text", "required": true, "replace": [{"pattern": "^Ref:\\s*", "with": ""}],
             "locator": {"kind": "region", "box": [0.64, 0.06, 0.95, 0.1]}},
            {"name": "name", "type": "text", "required": true, "locator": {"kind": "region", "box": bx(0)}},
            {"name": "birth_date", "type": "date", "date_formats": ["MM/DD/YYYY"], "locator": {"kind": "region", "box": bx(1)}},
            {"name": "member", "type": "boolean", "locator": {"kind": "region", "box": bx(2)}},
            {"name": "membership", "type": "enum", "values": ["Gold", "Silver", "Bronze"], "locator": {"kind": "region", "box": bx(3)}},
            {"name": "amount_paid", "type": "money", "locator": {"kind": "region", "box": bx(4)}}
        ]
    }))
    .expect("form_en template is valid");
    let mut expected = Map::new();
    expected.insert("ref".into(), json!(ref_no));
    expected.insert("name".into(), json!(name));
    expected.insert("birth_date".into(), json!(format!("{y:04}-{m:02}-{d:02}")));
    expected.insert("member".into(), json!(member));
    expected.insert("membership".into(), json!(kind));
    expected.insert("amount_paid".into(), money(paid));
    Doc {
        name: format!("form_en_{seed}"),
        layout: "form_en",
        pdf: write_pdf(std::slice::from_ref(&p)),
        page: p,
        template,
        expected,
    }
}

/// The corpus: `per_layout` documents of each layout.
pub fn corpus(per_layout: u64) -> Vec<Doc> {
    let mut docs = Vec::new();
    for seed in 0..per_layout {
        docs.push(invoice_en(seed));
        docs.push(invoice_de(seed));
        docs.push(receipt_fr(seed));
        docs.push(form_en(seed));
    }
    docs
}

/// How a digital document is turned into a scan.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    pub name: &'static str,
    pub dpi: u32,
    /// Clockwise quarter turns.
    pub quarters: u32,
    pub skew_deg: f64,
    /// Standard deviation of the added grey noise.
    pub noise: f64,
    /// Fraction of pixels flipped to black or white.
    pub speckle: f64,
    pub format: ImageFormat,
}

pub const SCANS: [Scan; 5] = [
    Scan {
        name: "scan_300_clean",
        dpi: 300,
        quarters: 0,
        skew_deg: 0.0,
        noise: 0.0,
        speckle: 0.0,
        format: ImageFormat::Png,
    },
    Scan {
        name: "scan_200_jpeg",
        dpi: 200,
        quarters: 0,
        skew_deg: 0.0,
        noise: 4.0,
        speckle: 0.0,
        format: ImageFormat::Jpeg,
    },
    Scan {
        name: "scan_150_tiff",
        dpi: 150,
        quarters: 0,
        skew_deg: 0.0,
        noise: 0.0,
        speckle: 0.0,
        format: ImageFormat::Tiff,
    },
    Scan {
        name: "scan_300_rot90_skew",
        dpi: 300,
        quarters: 1,
        skew_deg: 1.2,
        noise: 10.0,
        speckle: 0.002,
        format: ImageFormat::Png,
    },
    Scan {
        name: "scan_300_rot180_noisy",
        dpi: 300,
        quarters: 2,
        skew_deg: -0.8,
        noise: 14.0,
        speckle: 0.004,
        format: ImageFormat::Png,
    },
];

/// Render page 1 of a PDF and degrade it like a scanner would.
pub fn scan_image(pdf: &[u8], scan: &Scan, seed: u64) -> GrayImage {
    let mut img = render_page(pdf, 1, scan.dpi, &Options::default()).expect("corpus PDFs render");
    if scan.skew_deg != 0.0 {
        img = raster::rotate_small(&img, scan.skew_deg);
    }
    img = raster::rotate_quarter(&img, scan.quarters);
    if scan.noise > 0.0 || scan.speckle > 0.0 {
        let mut r = Rng::new(seed + 77);
        for p in img.pixels_mut() {
            // Sum of uniforms: roughly normal noise.
            let n: f64 = (0..4)
                .map(|_| (r.below(1000) as f64 / 1000.0) - 0.5)
                .sum::<f64>()
                * scan.noise
                * 1.7;
            let mut v = p[0] as f64 + n;
            if scan.speckle > 0.0 && (r.below(1_000_000) as f64) < scan.speckle * 1e6 {
                v = if r.below(2) == 0 { 0.0 } else { 255.0 };
            }
            *p = Luma([v.clamp(0.0, 255.0) as u8]);
        }
    }
    img
}

/// Encode a grey image in a scan's format.
pub fn encode(img: &GrayImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)
        .expect("encoding a grey image");
    out.into_inner()
}

/// Field-level comparison: a table counts as one field, right only when
/// every row and cell matches.
pub fn field_ok(got: Option<&Value>, want: &Value) -> bool {
    match (got, want) {
        (Some(Value::Number(a)), Value::Number(b)) => {
            (a.as_f64().unwrap_or(f64::NAN) - b.as_f64().unwrap_or(0.0)).abs() < 0.005
        }
        (Some(Value::Array(a)), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| field_ok(Some(x), y))
        }
        (Some(Value::Object(a)), Value::Object(b)) => b.iter().all(|(k, v)| field_ok(a.get(k), v)),
        (Some(a), b) => a == b,
        (None, _) => false,
    }
}

/// A little-endian TIFF of one page: `entries` as (tag, type, count,
/// value or offset), and `extra` bytes appended after the directory
/// (offsets into it start at [`tiff_extra_offset`]).
pub fn tiff_file(entries: &[(u16, u16, u32, u32)], extra: &[u8]) -> Vec<u8> {
    let mut out = b"II*\0".to_vec();
    out.extend(8u32.to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    for &(tag, kind, count, value) in entries {
        out.extend(tag.to_le_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend(value.to_le_bytes());
    }
    out.extend(0u32.to_le_bytes());
    assert_eq!(out.len() as u32, tiff_extra_offset(entries.len()));
    out.extend(extra);
    out
}

pub fn tiff_extra_offset(entries: usize) -> u32 {
    8 + 2 + 12 * entries as u32 + 4
}
