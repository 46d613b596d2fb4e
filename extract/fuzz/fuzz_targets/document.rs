//! Any bytes through the document entry points: a typed error or a
//! result, never a panic, an abort or unbounded memory.
//!
//! `scripts/fuzz.sh document` (see there for the options).

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use paperhook_extract::{Options, extract, page_count};
use paperhook_extract_fuzz::template;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the code paths are the same.
    let opts = Options {
        max_pages: 4,
        max_pixels_per_page: 1_000_000,
        max_side: 4_000,
        dpi: 72,
        page_time_limit: Duration::from_secs(5),
        ..Options::default()
    };
    let _ = page_count(data, &opts);
    if let Err(e) = extract(data, template(), &opts) {
        assert!(!e.code().is_empty());
    }
});
