//! What the extraction fuzz targets share: their template, and the
//! integration tests' PDF writer (`tests/it/corpus.rs`, as the examples
//! use it).

use std::sync::OnceLock;

use paperhook_extract::Template;

#[path = "../../tests/it/corpus.rs"]
mod corpus;

pub use corpus::pdf_file;

/// A field of each locator kind.
pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        Template::from_json(serde_json::json!({"fields": [
            {"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "Total\\s+(\\S+)"}},
            {"name": "date", "type": "date", "locator": {"kind": "label", "label": "Date"}},
            {"name": "zone", "type": "text", "locator": {"kind": "region", "box": [0.1, 0.1, 0.3, 0.2]}},
            {"name": "items", "type": "text", "locator": {"kind": "table", "columns": [{"name": "qty", "type": "integer"}]}}
        ]}))
        .expect("valid template")
    })
}
