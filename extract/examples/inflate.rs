//! What measuring a deflate stream costs with the bomb check's reader
//! (flate2 on hayro's zlib-rs backend, since 8e7c3f7) against the miniz
//! reader it replaced, in the same run, on the same data: ordinary PDF
//! content (text operators) and a run of spaces, each inflated in 64 KiB
//! pieces and counted, as `pdf::feed` does. Medians of 15 rounds.
//!
//!     cargo run --release -p paperhook-extract --example inflate

use std::time::{Duration, Instant};

fn content(megabytes: usize) -> Vec<u8> {
    let mut text = Vec::new();
    let mut i = 0u64;
    while text.len() < megabytes << 20 {
        text.extend(
            format!(
                "BT /F1 {} Tf {} {} Td (Invoice line {i} total {}.{:02}) Tj ET\n",
                9 + i % 4,
                56 + i * 7 % 400,
                780 - i * 13 % 700,
                i * 7919 % 10_000,
                i % 100
            )
            .as_bytes(),
        );
        i += 1;
    }
    text
}

fn with_flate2(packed: &[u8]) -> u64 {
    let mut state = flate2::Decompress::new(true);
    let mut out = vec![0u8; 64 * 1024];
    let mut input = packed;
    loop {
        let (before_in, before_out) = (state.total_in(), state.total_out());
        let r = state.decompress(input, &mut out, flate2::FlushDecompress::None);
        input = &input[(state.total_in() - before_in) as usize..];
        let made = state.total_out() - before_out;
        if !matches!(r, Ok(flate2::Status::Ok)) || (made == 0 && input.is_empty()) {
            return state.total_out();
        }
    }
}

fn with_miniz(packed: &[u8]) -> u64 {
    use miniz_oxide::inflate::stream::{InflateState, inflate};
    let mut state = InflateState::new_boxed(miniz_oxide::DataFormat::Zlib);
    let mut out = vec![0u8; 64 * 1024];
    let mut input = packed;
    let mut total = 0u64;
    loop {
        let r = inflate(&mut state, input, &mut out, miniz_oxide::MZFlush::None);
        input = &input[r.bytes_consumed..];
        total += r.bytes_written as u64;
        if !matches!(r.status, Ok(miniz_oxide::MZStatus::Ok))
            || (r.bytes_written == 0 && input.is_empty())
        {
            return total;
        }
    }
}

fn median(f: impl Fn() -> u64, expect: u64) -> Duration {
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(f(), expect);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let text = content(32);
    let spaces = vec![b' '; 256 << 20];
    for (name, data) in [("content, 32 MiB", &text), ("spaces, 256 MiB", &spaces)] {
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(data, 6);
        let new = median(|| with_flate2(&packed), data.len() as u64);
        let old = median(|| with_miniz(&packed), data.len() as u64);
        println!(
            "{name}: flate2/zlib-rs {:.1} ms, miniz {:.1} ms, ratio {:.2} (new/old)",
            new.as_secs_f64() * 1e3,
            old.as_secs_f64() * 1e3,
            new.as_secs_f64() / old.as_secs_f64()
        );
    }
}
