//! Detects a document's type from its first bytes, never from its name;
//! and the name it is kept under. (Here, not in the core crate, so that
//! the ZIP reader's fuzz target, built without the core crate, has it.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocType {
    Pdf,
    Png,
    Jpeg,
    Tiff,
    Zip,
}

/// The longest file name a document keeps, in characters.
pub const FILE_NAME_MAX_CHARS: usize = 255;

/// A document's file name as it is stored, shown and sent in webhooks,
/// from an upload's or a ZIP entry's (which may be 65,535 bytes): control
/// characters dropped (PostgreSQL text cannot even hold a NUL), at most
/// [`FILE_NAME_MAX_CHARS`].
pub fn file_name(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(FILE_NAME_MAX_CHARS)
        .collect()
}

/// How many leading bytes `detect` needs.
pub const SNIFF_LEN: usize = 1024;

impl DocType {
    pub fn as_str(self) -> &'static str {
        match self {
            DocType::Pdf => "pdf",
            DocType::Png => "png",
            DocType::Jpeg => "jpeg",
            DocType::Tiff => "tiff",
            DocType::Zip => "zip",
        }
    }

    pub fn parse(s: &str) -> Option<DocType> {
        Some(match s {
            "pdf" => DocType::Pdf,
            "png" => DocType::Png,
            "jpeg" => DocType::Jpeg,
            "tiff" => DocType::Tiff,
            "zip" => DocType::Zip,
            _ => return None,
        })
    }

    pub fn mime(self) -> &'static str {
        match self {
            DocType::Pdf => "application/pdf",
            DocType::Png => "image/png",
            DocType::Jpeg => "image/jpeg",
            DocType::Tiff => "image/tiff",
            DocType::Zip => "application/zip",
        }
    }
}

/// The type of a document from its first bytes (at least [`SNIFF_LEN`] when available).
///
/// PDF allows junk before `%PDF-` (readers scan the first 1024 bytes); the
/// other formats must start with their magic number.
pub fn detect(head: &[u8]) -> Option<DocType> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(DocType::Png)
    } else if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(DocType::Jpeg)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(DocType::Tiff)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(DocType::Zip)
    } else if head[..head.len().min(SNIFF_LEN)]
        .windows(5)
        .any(|w| w == b"%PDF-")
    {
        Some(DocType::Pdf)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(detect(b"%PDF-1.7\n"), Some(DocType::Pdf));
        assert_eq!(detect(b"\xEF\xBB\xBF%PDF-1.4"), Some(DocType::Pdf));
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n...."), Some(DocType::Png));
        assert_eq!(detect(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(DocType::Jpeg));
        assert_eq!(detect(b"II*\0\x08\0\0\0"), Some(DocType::Tiff));
        assert_eq!(detect(b"MM\0*\0\0\0\x08"), Some(DocType::Tiff));
        assert_eq!(detect(b"PK\x03\x04\x14\0"), Some(DocType::Zip));
        assert_eq!(detect(b"PK\x05\x06"), Some(DocType::Zip));
        assert_eq!(detect(b"GIF89a"), None);
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b"hello %PD"), None);
        // A PDF marker past the first KiB does not count.
        let mut late = vec![b' '; 2000];
        late.extend_from_slice(b"%PDF-1.4");
        assert_eq!(detect(&late), None);
    }
}
