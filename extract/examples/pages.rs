//! Print the layout text of each page of a document, as the locators see
//! it: `cargo run -p paperhook-extract --example pages -- FILE [LANG+LANG]`.

use paperhook_extract::{Options, Template, read_pages};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: pages FILE [LANGUAGES]")?;
    let langs: Vec<String> = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "eng".into())
        .split('+')
        .map(String::from)
        .collect();
    let doc = std::fs::read(&path)?;
    // A template with a label field makes scans OCR the whole page.
    let template = Template::from_json(json!({"languages": langs, "fields": [
        {"name": "x", "type": "text", "locator": {"kind": "label", "label": "x"}}]}))?;
    for page in read_pages(&doc, &template, &Options::default())? {
        println!(
            "--- page {} ({:?}, {} words)",
            page.number,
            page.source,
            page.words.len()
        );
        print!("{}", page.text);
    }
    Ok(())
}
