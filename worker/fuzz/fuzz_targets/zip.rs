//! Any bytes through the ZIP batch reader: a typed failure or entries,
//! never a panic, a hang or unbounded memory, and every accepted entry
//! within the limits.
//!
//! `scripts/fuzz.sh zip` (see there for the options).

#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/unzip.rs"]
mod unzip;

use unzip::{Entry, Limits};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the code paths are the same.
    let limits = Limits {
        max_entries: 32,
        max_total_bytes: 4 << 20,
        max_entry_bytes: 1 << 20,
        max_ratio: 100,
    };
    let mut total = 0u64;
    let mut entries = 0u32;
    let _ = unzip::scan(Cursor::new(data), limits, |entry| {
        entries += 1;
        assert!(entries <= limits.max_entries, "more entries than the limit");
        if let Entry::Document { name, data, .. } = entry {
            assert!(data.len() as u64 <= limits.max_entry_bytes, "entry over the limit");
            total += data.len() as u64;
            assert!(total <= limits.max_total_bytes, "total over the limit");
            assert!(
                !name.contains('/') && !name.contains('\\') && !name.starts_with(".."),
                "unsafe name accepted: {name:?}"
            );
        }
        Ok(())
    });
});
