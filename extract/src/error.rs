//! The crate's one error type.

use std::fmt::Display;

/// Longest text of a decoder (or of a panic inside one) quoted in an
/// error, in characters.
pub const MAX_DETAIL_CHARS: usize = 300;

/// A decoder's error text as the `detail` of an [`Error`], which users
/// see: what a decoder says can quote the document's own bytes, at any
/// length. Control characters (line breaks, terminal escapes, U+0000)
/// become spaces; past [`MAX_DETAIL_CHARS`] it is cut, ending in `…`.
pub(crate) fn decoder_text(text: impl Display) -> String {
    let text: String = text
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut chars = text.trim().chars();
    let mut out: String = chars.by_ref().take(MAX_DETAIL_CHARS).collect();
    if chars.next().is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Why a document could not be extracted. Every variant has a stable
/// [`Error::code`] and a message that quotes the offending value or limit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("the document is empty (0 bytes)")]
    Empty,
    #[error("unsupported document type ({found}); send a PDF, PNG, JPEG or TIFF file")]
    UnsupportedType { found: String },
    #[error("the {kind} file is corrupt or truncated: {detail}")]
    Corrupt { kind: &'static str, detail: String },
    #[error(
        "the PDF is encrypted with a password ({detail}); remove the password and send it again"
    )]
    Encrypted { detail: String },
    /// A PDF's page tree and a TIFF's directories are read no further
    /// than one past the limit.
    #[error("the document has more than {max} pages; the limit is {max}")]
    PageLimitReached { max: u32 },
    #[error(
        "page {page} of the image is {width}x{height} pixels; the limit is {max_pixels} pixels and {max_side} pixels a side"
    )]
    ImageTooLarge {
        page: u32,
        width: u64,
        height: u64,
        max_pixels: u64,
        max_side: u32,
    },
    #[error("page {page} of the image is too large to decode: {detail}")]
    ImageDecodeLimit { page: u32, detail: String },
    #[error("the PDF embeds an image of {width}x{height} pixels; the limit is {max_pixels} pixels")]
    EmbeddedImageTooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
    },
    #[error(
        "page {page} is {width_pt:.0}x{height_pt:.0} pt; it cannot be rendered at a usable resolution within {max_pixels} pixels"
    )]
    PageTooLarge {
        page: u32,
        width_pt: f64,
        height_pt: f64,
        max_pixels: u64,
    },
    #[error(
        "page {page} paints about {overdraw:.0} times its own area; rendering it would take too much memory (the limit is {max} times: max_page_overdraw)"
    )]
    PageTooComplex { page: u32, overdraw: f64, max: u32 },
    #[error(
        "the PDF's text draws more than {max} glyphs (passed at page {page}); split it into smaller documents, or raise max_text_glyphs"
    )]
    TextTooLarge { page: u32, max: u64 },
    #[error(
        "the PDF's text layers hold more than {max_bytes} bytes of text (passed at page {page}); split it into smaller documents, or raise max_text_bytes"
    )]
    TextBytesTooLarge { page: u32, max_bytes: u64 },
    #[error(
        "the PDF is too large to decode: {detail} (the limit of one stream, of a page's content, and of the object streams together is {max_bytes} bytes: max_pdf_stream_bytes)"
    )]
    StreamTooLarge { detail: String, max_bytes: u64 },
    #[error(
        "the extracted values take more than {max_bytes} bytes as JSON (passed at field {field:?}); use smaller regions or fewer fields, or raise max_result_bytes"
    )]
    ResultTooLarge { field: String, max_bytes: u64 },
    #[error(
        "the PDF makes more than {max} drawing operations (shapes, clips, text runs, images, forms; passed at page {page}); split it into smaller documents, or raise max_drawing_operations"
    )]
    TooManyOperations { page: u32, max: u64 },
    #[error(
        "the PDF has more than {max} objects; split it into smaller documents, or raise max_pdf_objects"
    )]
    TooManyObjects { max: u64 },
    #[error("processing took longer than the limit of {limit_ms} ms (at page {page})")]
    Timeout { page: u32, limit_ms: u64 },
    #[error(
        "processing the document took longer than its limit of {limit_secs} s (stopped at page {page}); split it into smaller documents, or raise document_time_limit_secs"
    )]
    DocumentTimeout { page: u32, limit_secs: f64 },
    #[error(
        "the document does not match the template: keyword {keyword:?} was not found{}",
        if *.no_text { "; no text could be read from any page (a blank page, or a damaged or truncated file)" } else { "" }
    )]
    TemplateMismatch {
        keyword: String,
        /// No page gave any text at all: the keyword is not the problem.
        no_text: bool,
    },
    #[error(
        "field {field:?}: its replace rules add more than {max_bytes} bytes of text to this document's values (the limit per document); a rule whose \"with\" repeats the match ($0$0...) multiplies the text"
    )]
    ReplaceLimit { field: String, max_bytes: usize },
    #[error(
        "field {field:?}: its regex found more than {max} values in this document (the limit of occurrence \"all\"); make the pattern more specific or choose a page"
    )]
    MatchLimit { field: String, max: usize },
    #[error("OCR failed: {detail}")]
    Ocr { detail: String },
    #[error("invalid template: {0}")]
    Template(#[from] crate::template::TemplateError),
}

impl Error {
    /// Stable machine-readable code, safe to show to API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Empty => "empty_document",
            Error::UnsupportedType { .. } => "unsupported_type",
            Error::Corrupt { .. } => "corrupt_document",
            Error::Encrypted { .. } => "encrypted_pdf",
            Error::PageLimitReached { .. } => "page_limit_exceeded",
            Error::ImageTooLarge { .. }
            | Error::ImageDecodeLimit { .. }
            | Error::EmbeddedImageTooLarge { .. } => "image_too_large",
            Error::PageTooLarge { .. } => "page_too_large",
            Error::PageTooComplex { .. } => "page_too_complex",
            Error::TextTooLarge { .. } | Error::TextBytesTooLarge { .. } => "text_too_large",
            Error::StreamTooLarge { .. } => "stream_too_large",
            Error::ResultTooLarge { .. } => "result_too_large",
            Error::TooManyOperations { .. } | Error::TooManyObjects { .. } => {
                "document_too_complex"
            }
            Error::Timeout { .. } => "timeout",
            Error::DocumentTimeout { .. } => "document_timeout",
            Error::TemplateMismatch { .. } => "template_mismatch",
            Error::ReplaceLimit { .. } => "replace_limit_exceeded",
            Error::MatchLimit { .. } => "match_limit_exceeded",
            Error::Ocr { .. } => "ocr_failed",
            Error::Template(_) => "invalid_template",
        }
    }

    /// Whether trying the same document again could succeed (a timeout under
    /// load); every other error is a property of the document or template.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_text_is_short_and_without_control_characters() {
        assert_eq!(
            decoder_text(" bad\nzlib\u{1b}[31m data\0 "),
            "bad zlib [31m data"
        );
        let exact = "é".repeat(MAX_DETAIL_CHARS);
        assert_eq!(decoder_text(&exact), exact);
        let long = decoder_text(format!("{exact}x"));
        assert_eq!(long.chars().count(), MAX_DETAIL_CHARS);
        assert!(long.ends_with("é…"), "{long}");
        let err = Error::Corrupt {
            kind: "PNG",
            detail: decoder_text("\u{7}".repeat(100_000)),
        };
        assert!(err.to_string().len() < 400, "{err}");
    }
}
