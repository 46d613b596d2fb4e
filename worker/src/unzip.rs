//! Reads a ZIP batch entry by entry under the batch rules. The one place
//! that opens archives: it rejects traversal, links, folders, encrypted
//! and nested archives, unsupported types and zip bombs.
//!
//! Only the current entry is ever in memory: each accepted entry is handed
//! to `emit` (which stores it) before the next is read.

use std::io::{Read, Seek};

use paperhook_extract::sniff::{self, DocType};

/// The limits of one batch (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u32,
    pub max_total_bytes: u64,
    pub max_entry_bytes: u64,
    pub max_ratio: u32,
}

/// What one entry of the archive becomes.
#[derive(Debug)]
pub enum Entry {
    /// A document to process.
    Document {
        name: String,
        doc_type: DocType,
        data: Vec<u8>,
    },
    /// A document that fails at once, with a code and a message for the customer.
    Rejected {
        name: String,
        code: &'static str,
        message: String,
    },
}

/// Why the whole archive fails (`UNZIP FILE FAILED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ZipFailure {
    pub code: &'static str,
    pub message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> ZipFailure {
    ZipFailure {
        code,
        message: message.into(),
    }
}

/// Entries the batch ignores: macOS resource forks and dot-files.
fn ignored(name: &str) -> bool {
    name.starts_with("__MACOSX/")
        || name
            .split('/')
            .any(|part| part.starts_with('.') && part != "." && part != "..")
}

/// Walks the archive in order and calls `emit` for each entry that becomes a
/// document (accepted or rejected). `emit` returning an error stops the walk.
pub fn scan<R: Read + Seek>(
    reader: R,
    limits: Limits,
    mut emit: impl FnMut(Entry) -> Result<(), ZipFailure>,
) -> Result<usize, ZipFailure> {
    // The one place that opens archives (clippy.toml points everyone here).
    #[allow(clippy::disallowed_methods)]
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| {
        fail(
            "invalid_zip",
            format!("the ZIP archive could not be read: {e}"),
        )
    })?;
    if archive.len() > limits.max_entries as usize {
        return Err(fail(
            "zip_too_many_entries",
            format!(
                "the ZIP archive has {} entries; the limit is {}",
                archive.len(),
                limits.max_entries
            ),
        ));
    }
    let mut total: u64 = 0;
    let mut emitted = 0;
    for i in 0..archive.len() {
        let (raw_name, encrypted, is_dir, is_link, size, compressed) = {
            let entry = archive.by_index_raw(i).map_err(|e| {
                fail(
                    "invalid_zip",
                    format!("entry {i} of the ZIP archive is corrupt: {e}"),
                )
            })?;
            (
                entry.name().map(|n| n.into_owned()).unwrap_or_default(),
                entry.encrypted(),
                entry.is_dir(),
                entry.is_symlink(),
                entry.size(),
                entry.compressed_size(),
            )
        };
        if is_dir {
            continue;
        }
        // Stored as the rejected document's name: PostgreSQL text cannot
        // hold a NUL (the message quotes the raw name, escaped).
        let name = raw_name.replace('\0', "\u{FFFD}");
        let reject = |code: &'static str, message: String| Entry::Rejected {
            name: name.clone(),
            code,
            message,
        };
        // Before the dot-file rule: `..\\evil.pdf` starts with a dot, yet its
        // sender must hear that the name is unsafe, not have it dropped.
        if raw_name.contains('\\')
            || raw_name.starts_with('/')
            || raw_name.split('/').any(|p| p == "..")
            || raw_name.contains('\0')
        {
            emit(reject(
                "zip_unsafe_path",
                format!(
                    "{raw_name:?} has an unsafe path (absolute, `..`, backslashes or a NUL character); it was not extracted"
                ),
            ))?;
            emitted += 1;
            continue;
        }
        if ignored(&raw_name) {
            continue;
        }
        if raw_name.contains('/') {
            emit(reject(
                "zip_entry_in_folder",
                format!(
                    "{raw_name:?} is inside a folder; files must be placed in the root of the ZIP archive"
                ),
            ))?;
            emitted += 1;
            continue;
        }
        if is_link {
            emit(reject(
                "zip_symlink",
                format!("{raw_name:?} is a symbolic link; send the file itself"),
            ))?;
            emitted += 1;
            continue;
        }
        if encrypted {
            emit(reject(
                "zip_entry_encrypted",
                format!("{raw_name:?} is encrypted with a password; send it without encryption"),
            ))?;
            emitted += 1;
            continue;
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(fail(
                "zip_too_large",
                format!(
                    "the ZIP archive unpacks to more than the limit of {} bytes",
                    limits.max_total_bytes
                ),
            ));
        }
        if size > limits.max_entry_bytes {
            emit(reject(
                "document_too_large",
                format!(
                    "{raw_name:?} is {size} bytes uncompressed; the limit is {} bytes",
                    limits.max_entry_bytes
                ),
            ))?;
            emitted += 1;
            continue;
        }
        if size / compressed.max(1) > u64::from(limits.max_ratio) {
            emit(reject(
                "zip_ratio_exceeded",
                format!(
                    "{raw_name:?} compresses {}:1; the limit is {}:1 (possible zip bomb)",
                    size / compressed.max(1),
                    limits.max_ratio
                ),
            ))?;
            emitted += 1;
            continue;
        }
        // The sizes in the header can lie: read at most one byte past them.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        {
            let entry = archive.by_index(i).map_err(|e| {
                fail(
                    "invalid_zip",
                    format!("{raw_name:?} could not be read: {e}"),
                )
            })?;
            entry
                .take(size.min(limits.max_entry_bytes) + 1)
                .read_to_end(&mut data)
                .map_err(|e| {
                    fail(
                        "invalid_zip",
                        format!("{raw_name:?} could not be unpacked: {e}"),
                    )
                })?;
        }
        if data.len() as u64 > size {
            return Err(fail(
                "invalid_zip",
                format!("{raw_name:?} is larger than its header says; the archive was rejected"),
            ));
        }
        let entry = match sniff::detect(&data) {
            Some(DocType::Zip) => reject(
                "zip_nested",
                format!("{raw_name:?} is a ZIP archive; nested archives are not supported"),
            ),
            Some(doc_type) => Entry::Document {
                name: raw_name.clone(),
                doc_type,
                data,
            },
            None => reject(
                "unsupported_type",
                format!("{raw_name:?} is not a PDF, PNG, JPEG or TIFF file"),
            ),
        };
        emit(entry)?;
        emitted += 1;
    }
    Ok(emitted)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use zip::write::SimpleFileOptions;

    use super::*;

    const LIMITS: Limits = Limits {
        max_entries: 10,
        max_total_bytes: 1 << 20,
        max_entry_bytes: 1 << 19,
        max_ratio: 100,
    };

    fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, SimpleFileOptions::default())
                    .unwrap();
            } else {
                w.start_file(*name, SimpleFileOptions::default()).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn run(zip: Vec<u8>, limits: Limits) -> Result<Vec<Entry>, ZipFailure> {
        let mut out = Vec::new();
        scan(Cursor::new(zip), limits, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    fn codes(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Document { name, .. } => format!("ok:{name}"),
                Entry::Rejected { name, code, .. } => format!("{code}:{name}"),
            })
            .collect()
    }

    #[test]
    fn batch_rules() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let zip = build(&[
            ("a.png", png),
            ("__MACOSX/._a.png", b"junk"),
            (".DS_Store", b"junk"),
            ("folder/", b""),
            ("folder/b.pdf", b"%PDF-1.4"),
            ("c.txt", b"hello"),
            ("d.pdf", b"%PDF-1.4 x"),
        ]);
        let inner = build(&[("x.png", png)]);
        let zip2 = build(&[
            ("inner.zip", &inner),
            ("../evil.png", png),
            ("..\\win.png", png),
            ("/abs.png", png),
            ("__MACOSX/../x.png", png),
        ]);
        assert_eq!(
            codes(&run(zip, LIMITS).unwrap()),
            [
                "ok:a.png",
                "zip_entry_in_folder:folder/b.pdf",
                "unsupported_type:c.txt",
                "ok:d.pdf"
            ]
        );
        assert_eq!(
            codes(&run(zip2, LIMITS).unwrap()),
            [
                "zip_nested:inner.zip",
                "zip_unsafe_path:../evil.png",
                "zip_unsafe_path:..\\win.png",
                "zip_unsafe_path:/abs.png",
                "zip_unsafe_path:__MACOSX/../x.png"
            ]
        );
    }

    #[test]
    fn limits() {
        let many: Vec<(String, Vec<u8>)> = (0..11)
            .map(|i| (format!("{i}.png"), b"\x89PNG\r\n\x1a\n".to_vec()))
            .collect();
        let refs: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let err = run(build(&refs), LIMITS).unwrap_err();
        assert_eq!(err.code, "zip_too_many_entries");

        let mut bomb = b"%PDF-1.4\n".to_vec();
        bomb.resize(400_000, b' ');
        let got = run(build(&[("bomb.pdf", &bomb)]), LIMITS).unwrap();
        assert_eq!(codes(&got), ["zip_ratio_exceeded:bomb.pdf"]);

        let small = Limits {
            max_total_bytes: 100_000,
            ..LIMITS
        };
        let err = run(build(&[("bomb.pdf", &bomb)]), small).unwrap_err();
        assert_eq!(err.code, "zip_too_large");

        assert_eq!(
            run(b"PK\x03\x04garbage".to_vec(), LIMITS).unwrap_err().code,
            "invalid_zip"
        );
    }
}
