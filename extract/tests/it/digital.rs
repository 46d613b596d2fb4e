use paperhook_extract::{Options, Source, extract};

use crate::corpus::{self, field_ok};

#[test]
fn every_field_of_every_digital_document() {
    let mut wrong = Vec::new();
    let mut total = 0;
    for doc in corpus::corpus(4) {
        let got = extract(&doc.pdf, &doc.template, &Options::default())
            .unwrap_or_else(|e| panic!("{}: {e}", doc.name));
        assert!(
            got.missing_required.is_empty(),
            "{}: missing {:?}",
            doc.name,
            got.missing_required
        );
        for (k, want) in &doc.expected {
            total += 1;
            if !field_ok(got.result.get(k), want) {
                wrong.push(format!(
                    "{}.{k}: got {:?}, want {want}",
                    doc.name,
                    got.result.get(k)
                ));
            }
            if let Some(meta) = got.fields.get(k) {
                assert_eq!(meta.source, Source::TextLayer, "{}.{k}", doc.name);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {total} fields wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
