//! Reads a ZIP batch entry by entry under the batch rules. The one place
//! that opens archives: it rejects traversal, links, folders, encrypted
//! and nested archives, unsupported types and zip bombs.
//!
//! Only the current entry is ever in memory: each accepted entry is handed
//! to `emit` (which stores it) before the next is read.

use std::io::{Read, Seek, SeekFrom};

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

/// The most bytes of an entry's name a message quotes (escaped).
const QUOTE_MAX_BYTES: usize = 255;

/// An entry's name quoted for a message, escaped (the message shows what
/// the archive holds, control characters too), cut after about
/// [`QUOTE_MAX_BYTES`]: escaping makes a name of control characters up to
/// ten times longer, and messages are stored and sent in webhooks.
fn quoted(raw: &str) -> String {
    let mut escaped = 0;
    for (at, c) in raw.char_indices() {
        escaped += c.escape_debug().map(char::len_utf8).sum::<usize>();
        if escaped > QUOTE_MAX_BYTES {
            return format!("{:?}… (a name of {} bytes)", &raw[..at], raw.len());
        }
    }
    format!("{raw:?}")
}

/// Entries the batch ignores: macOS resource forks and dot-files.
fn ignored(name: &str) -> bool {
    name.starts_with("__MACOSX/")
        || name
            .split('/')
            .any(|part| part.starts_with('.') && part != "." && part != "..")
}

/// The number of entries the archive's end record declares, read before the
/// central directory: the zip crate holds every entry's header in memory
/// (some hundred bytes each) before its count can be checked, and a 50 MiB
/// archive of empty entries declares about 700,000. None when there is no
/// readable end record (the zip crate then says what is wrong).
fn declared_entries<R: Read + Seek>(reader: &mut R) -> std::io::Result<Option<u64>> {
    let len = reader.seek(SeekFrom::End(0))?;
    // The end record (22 bytes) and its comment (at most 65,535).
    let tail_len = len.min(22 + 65_535);
    reader.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0; tail_len as usize];
    reader.read_exact(&mut tail)?;
    let Some(end) = tail.windows(4).rposition(|w| w == b"PK\x05\x06") else {
        return Ok(None);
    };
    let Some(record) = tail.get(end..end + 22) else {
        return Ok(None);
    };
    let entries = u16::from_le_bytes([record[10], record[11]]);
    if entries != u16::MAX {
        return Ok(Some(entries.into()));
    }
    // ZIP64: the locator just before the end record gives the offset of the
    // ZIP64 end record, which holds the count in 8 bytes at 32.
    let Some(locator) = end.checked_sub(20).and_then(|at| tail.get(at..end)) else {
        return Ok(None);
    };
    if &locator[..4] != b"PK\x06\x07" {
        return Ok(None);
    }
    let offset = u64::from_le_bytes(locator[8..16].try_into().expect("8 bytes"));
    let mut record = [0u8; 40];
    if offset.checked_add(40).is_none_or(|past| past > len) {
        return Ok(None);
    }
    reader.seek(SeekFrom::Start(offset))?;
    reader.read_exact(&mut record)?;
    if &record[..4] != b"PK\x06\x06" {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(
        record[32..40].try_into().expect("8 bytes"),
    )))
}

fn too_many(entries: u64, limits: Limits) -> ZipFailure {
    fail(
        "zip_too_many_entries",
        format!(
            "the ZIP archive has {entries} entries; the limit is {}",
            limits.max_entries
        ),
    )
}

/// Walks the archive in order and calls `emit` for each entry that becomes a
/// document (accepted or rejected). `emit` returning an error stops the walk.
pub fn scan<R: Read + Seek>(
    mut reader: R,
    limits: Limits,
    mut emit: impl FnMut(Entry) -> Result<(), ZipFailure>,
) -> Result<usize, ZipFailure> {
    let declared = declared_entries(&mut reader)
        .and_then(|n| reader.seek(SeekFrom::Start(0)).map(|_| n))
        .map_err(|e| {
            fail(
                "invalid_zip",
                format!("the ZIP archive could not be read: {e}"),
            )
        })?;
    if let Some(entries) = declared.filter(|n| *n > u64::from(limits.max_entries)) {
        return Err(too_many(entries, limits));
    }
    // The one place that opens archives (clippy.toml points everyone here).
    #[allow(clippy::disallowed_methods)]
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| {
        fail(
            "invalid_zip",
            format!("the ZIP archive could not be read: {e}"),
        )
    })?;
    if archive.len() > limits.max_entries as usize {
        return Err(too_many(archive.len() as u64, limits));
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
        // Stored as the document's name without control characters, cut
        // (the message quotes the raw name, escaped and cut too).
        let name = sniff::file_name(&raw_name);
        let q = quoted(&raw_name);
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
                    "{q} has an unsafe path (absolute, `..`, backslashes or a NUL character); it was not extracted"
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
                    "{q} is inside a folder; files must be placed in the root of the ZIP archive"
                ),
            ))?;
            emitted += 1;
            continue;
        }
        if is_link {
            emit(reject(
                "zip_symlink",
                format!("{q} is a symbolic link; send the file itself"),
            ))?;
            emitted += 1;
            continue;
        }
        if encrypted {
            emit(reject(
                "zip_entry_encrypted",
                format!("{q} is encrypted with a password; send it without encryption"),
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
                    "{q} is {size} bytes uncompressed; the limit is {} bytes",
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
                    "{q} compresses {}:1; the limit is {}:1 (possible zip bomb)",
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
            let entry = archive
                .by_index(i)
                .map_err(|e| fail("invalid_zip", format!("{q} could not be read: {e}")))?;
            entry
                .take(size.min(limits.max_entry_bytes) + 1)
                .read_to_end(&mut data)
                .map_err(|e| fail("invalid_zip", format!("{q} could not be unpacked: {e}")))?;
        }
        if data.len() as u64 > size {
            return Err(fail(
                "invalid_zip",
                format!("{q} is larger than its header says; the archive was rejected"),
            ));
        }
        let entry = match sniff::detect(&data) {
            Some(DocType::Zip) => reject(
                "zip_nested",
                format!("{q} is a ZIP archive; nested archives are not supported"),
            ),
            Some(doc_type) => Entry::Document {
                name: name.clone(),
                doc_type,
                data,
            },
            None => reject(
                "unsupported_type",
                format!("{q} is not a PDF, PNG, JPEG or TIFF file"),
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

    /// The count is read from the end record, before the zip crate reads a
    /// central directory it would hold whole: an archive declaring a
    /// million entries (ZIP64) is refused for that, not read first.
    #[test]
    fn the_declared_count_is_checked_first() {
        let ok = build(&[("a.png", b"x"), ("b.png", b"y"), ("c.png", b"z")]);
        assert_eq!(declared_entries(&mut Cursor::new(&ok)).unwrap(), Some(3));
        let mut zip64 = Vec::new();
        zip64.extend_from_slice(b"PK\x06\x06");
        zip64.extend_from_slice(&44u64.to_le_bytes());
        zip64.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip64.extend_from_slice(&1_000_000u64.to_le_bytes());
        zip64.extend_from_slice(&1_000_000u64.to_le_bytes());
        zip64.extend_from_slice(&[0; 16]);
        zip64.extend_from_slice(b"PK\x06\x07");
        zip64.extend_from_slice(&[0; 4]);
        zip64.extend_from_slice(&0u64.to_le_bytes());
        zip64.extend_from_slice(&1u32.to_le_bytes());
        zip64.extend_from_slice(b"PK\x05\x06");
        zip64.extend_from_slice(&[0xFF; 16]);
        zip64.extend_from_slice(&[0, 0]);
        let err = run(zip64, LIMITS).unwrap_err();
        assert_eq!(err.code, "zip_too_many_entries", "{err}");
        assert!(err.message.contains("1000000 entries"), "{err}");
        // No end record at all: the zip crate's own error.
        let err = run(b"PK\x03\x04 not a zip".to_vec(), LIMITS).unwrap_err();
        assert_eq!(err.code, "invalid_zip", "{err}");
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
