//! The cells of Paperhook's CSV results: the API's `POST /v1/job-results`
//! (`result_format: "csv"`) and the command-line client's `--output x.csv`
//! write them alike. Pure functions, no I/O: the client links this and no
//! other crate of the server's.

use serde_json::Value;

/// The first columns of a results CSV, one row per document; the static
/// values and the result's fields follow.
pub const DOCUMENT_COLUMNS: [&str; 7] = [
    "job_id",
    "index",
    "file_name",
    "status",
    "pages",
    "error_code",
    "error_message",
];

/// One RFC 4180 field: quoted when it holds a comma, quote or line break.
/// Text a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return, and not a plain number) gets a leading
/// `'`: extracted text comes from whoever wrote the document.
pub fn csv_field(out: &mut String, value: &str) {
    let formula =
        value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.trim().parse::<f64>().is_err();
    let value = if formula {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&value);
    }
}

/// A JSON value as a cell: strings as they are, null empty, anything else
/// (numbers, booleans, tables) as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn push_row(out: &mut String, cells: &[String]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, c);
    }
    out.push_str("\r\n");
}

/// `name` as a column, unless the header has it already (a static value
/// called `status`, a field called `job_id`): then `prefix` + `name`, and a
/// number after it if even that is taken.
pub fn unique_column(header: &[String], prefix: &str, name: &str) -> String {
    if !header.iter().any(|h| h == name) {
        return name.to_owned();
    }
    let prefixed = format!("{prefix}{name}");
    (1..)
        .map(|n| {
            if n == 1 {
                prefixed.clone()
            } else {
                format!("{prefixed}_{n}")
            }
        })
        .find(|c| !header.contains(c))
        .expect("an unused column name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180_quoting() {
        let mut s = String::new();
        push_row(
            &mut s,
            &["a".into(), "b,c".into(), "say \"hi\"".into(), "x\ny".into()],
        );
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
        assert_eq!(cell(Some(&serde_json::json!([{"q": 1}]))), "[{\"q\":1}]");
        assert_eq!(cell(Some(&Value::Null)), "");
    }

    #[test]
    fn formulas_are_defused_and_numbers_kept() {
        let mut s = String::new();
        push_row(
            &mut s,
            &[
                "=HYPERLINK(\"http://x\")".into(),
                "+cmd".into(),
                "@SUM(A1)".into(),
                "-2+3".into(),
                "\tx".into(),
                "-12.50".into(),
                "+49".into(),
                "a=b".into(),
            ],
        );
        assert_eq!(
            s,
            "\"'=HYPERLINK(\"\"http://x\"\")\",'+cmd,'@SUM(A1),'-2+3,'\tx,-12.50,+49,a=b\r\n"
        );
    }

    #[test]
    fn taken_column_names_get_a_prefix_then_a_number() {
        let header: Vec<String> = ["status", "static_values.status"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(unique_column(&header, "result.", "total"), "total");
        assert_eq!(unique_column(&header, "result.", "status"), "result.status");
        assert_eq!(
            unique_column(&header, "static_values.", "status"),
            "static_values.status_2"
        );
    }
}
