//! PDF input through hayro: text layer via a small text device, pixels via
//! the renderer, both in the same page coordinates.

use std::sync::Arc;

use hayro::hayro_interpret::font::GlyphRun;
use hayro::hayro_interpret::hayro_syntax::object::{Name, Object};
use hayro::hayro_interpret::hayro_syntax::page::Page;
use hayro::hayro_interpret::hayro_syntax::{Filter, LoadPdfError, Pdf};
use hayro::hayro_interpret::util::TransformExt;
use hayro::hayro_interpret::{
    BlendMode, ClipPath, Context, Device, DrawMode, DrawProps, Image, ImageDrawProps,
    InterpreterCache, InterpreterSettings, SoftMask, interpret_page,
};
use hayro::kurbo::{Affine, BezPath, Point, Rect};
use hayro::vello_cpu::color::palette::css::WHITE;
use image::GrayImage;
use unicode_normalization::UnicodeNormalization;

use crate::Error;
use crate::layout::{PageText, Source, Word};

/// Largest page side hayro can allocate.
const MAX_SIDE: f64 = 65_535.0;
/// Lowest resolution still worth OCR after clamping a huge page.
const MIN_OCR_DPI: f64 = 100.0;

pub fn open(doc: &[u8]) -> Result<Pdf, Error> {
    Pdf::new(Arc::new(doc.to_vec())).map_err(|e| match e {
        LoadPdfError::Decryption(d) => Error::Encrypted {
            detail: format!("{d:?}"),
        },
        LoadPdfError::Invalid => Error::Corrupt {
            kind: "PDF",
            detail: "no readable cross-reference table or page tree".into(),
        },
    })
}

/// Glyphs of one page in upright page points, top-left origin.
#[derive(Default)]
struct TextDevice {
    glyphs: Vec<Glyph>,
}

struct Glyph {
    text: String,
    x0: f64,
    x1: f64,
    top: f64,
    bottom: f64,
    baseline: f64,
    size: f64,
}

impl<'a> Device<'a> for TextDevice {
    fn draw_path(&mut self, _: &BezPath, _: DrawProps<'a>, _: &DrawMode) {}
    fn push_clip_path(&mut self, _: &ClipPath) {}
    fn push_transparency_group(&mut self, _: f32, _: Option<SoftMask<'a>>, _: BlendMode) {}
    fn draw_image(&mut self, _: Image<'a, '_>, _: ImageDrawProps<'a>) {}
    fn pop_clip(&mut self) {}
    fn pop_transparency_group(&mut self) {}

    fn draw_glyph_run(&mut self, run: &GlyphRun<'_, 'a>, props: DrawProps<'a>, _: &DrawMode) {
        // Invisible text (an OCR layer) is kept: it is the page's text.
        if self.glyphs.len() > 2_000_000 {
            return;
        }
        for g in run.glyphs() {
            let Some(u) = g.as_unicode() else { continue };
            let text: String = match u {
                hayro::hayro_interpret::hayro_cmap::BfString::Char(c) => c.to_string(),
                hayro::hayro_interpret::hayro_cmap::BfString::String(s) => s,
            };
            let advance = match &**g {
                hayro::hayro_interpret::font::Glyph::Outline(o) => o.advance_width(),
                hayro::hayro_interpret::font::Glyph::Type3(t) => t.advance_width(),
            }
            .filter(|a| a.is_finite() && *a > 0.0)
            .unwrap_or(500.0) as f64;
            // Glyph space is 1000 units an em.
            let t: Affine = props.transform * g.transform();
            let o = t * Point::new(0.0, 0.0);
            let adv = t * Point::new(advance, 0.0);
            let up = t * Point::new(0.0, 1000.0);
            let size = ((up.x - o.x).powi(2) + (up.y - o.y).powi(2)).sqrt();
            if !size.is_finite() || size < 0.5 || !o.x.is_finite() || !o.y.is_finite() {
                continue;
            }
            let top = t * Point::new(0.0, 800.0);
            let bot = t * Point::new(0.0, -200.0);
            self.glyphs.push(Glyph {
                text: text.nfkc().collect(),
                x0: o.x.min(adv.x),
                x1: o.x.max(adv.x).max(o.x + 0.05 * size),
                top: top.y.min(bot.y),
                bottom: top.y.max(bot.y),
                baseline: o.y,
                size,
            });
        }
    }
}

/// Group glyphs into words by whitespace, baseline and horizontal gaps.
fn words_from_glyphs(glyphs: Vec<Glyph>, width: f64, height: f64) -> Vec<Word> {
    let mut words = Vec::new();
    let mut cur: Option<(String, f64, f64, f64, f64, f64, f64)> = None; // text x0 x1 top bottom baseline size
    let flush = |cur: &mut Option<(String, f64, f64, f64, f64, f64, f64)>,
                 words: &mut Vec<Word>| {
        if let Some((text, x0, x1, top, bottom, _, _)) = cur.take()
            && !text.trim().is_empty()
        {
            words.push(Word {
                text,
                bbox: [x0 / width, top / height, x1 / width, bottom / height]
                    .map(|v| v.clamp(0.0, 1.0)),
                confidence: 1.0,
            });
        }
    };
    for g in glyphs {
        if g.text.chars().all(char::is_whitespace) {
            flush(&mut cur, &mut words);
            continue;
        }
        let joins = cur.as_ref().is_some_and(|c| {
            let gap = g.x0 - c.2;
            (g.baseline - c.5).abs() < 0.3 * c.6.min(g.size)
                && gap < 0.15 * c.6.max(g.size)
                && gap > -0.5 * c.6
        });
        if !joins {
            flush(&mut cur, &mut words);
        }
        match &mut cur {
            Some(c) => {
                c.0.push_str(&g.text);
                c.1 = c.1.min(g.x0);
                c.2 = c.2.max(g.x1);
                c.3 = c.3.min(g.top);
                c.4 = c.4.max(g.bottom);
            }
            None => cur = Some((g.text, g.x0, g.x1, g.top, g.bottom, g.baseline, g.size)),
        }
    }
    flush(&mut cur, &mut words);
    words
}

fn page_size(page: &Page<'_>) -> (f64, f64) {
    let (w, h) = page.render_dimensions();
    (w as f64, h as f64)
}

/// The text layer of one page (possibly empty).
pub fn page_text(pdf: &Pdf, index: usize) -> PageText {
    let number = index as u32 + 1;
    let Some(page) = pdf.pages().get(index) else {
        return PageText::new(number, Source::TextLayer, Vec::new());
    };
    let (w, h) = page_size(page);
    if !(w.is_finite() && h.is_finite()) || w < 1.0 || h < 1.0 {
        return PageText::new(number, Source::TextLayer, Vec::new());
    }
    let transform = page.initial_transform(true).to_kurbo();
    let cache = InterpreterCache::new();
    let mut ctx = Context::new(
        transform,
        Rect::new(0.0, 0.0, w, h),
        &cache,
        page.xref(),
        InterpreterSettings::default(),
    );
    let mut dev = TextDevice::default();
    interpret_page(page, &mut ctx, &mut dev);
    PageText::new(
        number,
        Source::TextLayer,
        words_from_glyphs(dev.glyphs, w, h),
    )
}

/// Render one page in grey at `dpi`, lowered if needed to fit `max_pixels`
/// and hayro's side limit. Returns the image and the DPI used.
pub fn render(
    pdf: &Pdf,
    index: usize,
    dpi: u32,
    max_pixels: u64,
) -> Result<(GrayImage, f64), Error> {
    let number = index as u32 + 1;
    let page = pdf.pages().get(index).ok_or_else(|| Error::Corrupt {
        kind: "PDF",
        detail: format!("page {number} is missing"),
    })?;
    let (w, h) = page_size(page);
    if !(w.is_finite() && h.is_finite()) || w < 1.0 || h < 1.0 {
        return Err(Error::Corrupt {
            kind: "PDF",
            detail: format!("page {number} has a size of {w}x{h} pt"),
        });
    }
    let mut scale = dpi as f64 / 72.0;
    scale = scale
        .min((max_pixels as f64 / (w * h)).sqrt())
        .min(MAX_SIDE / w)
        .min(MAX_SIDE / h);
    if scale * 72.0 < MIN_OCR_DPI.min(dpi as f64) {
        return Err(Error::PageTooLarge {
            page: number,
            width_pt: w,
            height_pt: h,
            max_pixels,
        });
    }
    // hayro truncates the pixmap size: keep both sides >= 1 px and within
    // the limit after rounding.
    let scale = scale as f32;
    let pixmap = hayro::render(
        page,
        &hayro::RenderCache::new(),
        &InterpreterSettings::default(),
        &hayro::RenderSettings::default(),
        &hayro::PixmapSettings {
            x_scale: scale,
            y_scale: scale,
            bg_color: WHITE,
        },
    );
    let (pw, ph) = (pixmap.width() as u32, pixmap.height() as u32);
    let rgba = pixmap.data_as_u8_slice();
    // Opaque over the white background; integer luma that vectorises.
    let gray: Vec<u8> = rgba
        .chunks_exact(4)
        .map(|px| ((px[0] as u32 * 77 + px[1] as u32 * 150 + px[2] as u32 * 29) >> 8) as u8)
        .collect();
    let img = GrayImage::from_raw(pw, ph, gray).ok_or_else(|| Error::Corrupt {
        kind: "PDF",
        detail: format!("page {number} rendered to no pixels"),
    })?;
    Ok((img, scale as f64 * 72.0))
}

/// Most bytes one compressed stream may expand to. hayro decodes streams
/// whole; a kilobyte of deflate data can claim a gigabyte.
pub const MAX_STREAM_BYTES: u64 = 256 << 20;

/// Whether zlib `data` inflates to more than `cap` bytes, found by
/// inflating into a small reused buffer (no allocation of the output).
fn inflates_beyond(data: &[u8], cap: u64) -> bool {
    use miniz_oxide::inflate::stream::{InflateState, inflate};
    use miniz_oxide::{DataFormat, MZFlush, MZStatus};
    let mut state = InflateState::new_boxed(DataFormat::Zlib);
    let mut out = vec![0u8; 64 * 1024];
    let mut input = data;
    let mut total = 0u64;
    loop {
        let r = inflate(&mut state, input, &mut out, MZFlush::None);
        total += r.bytes_written as u64;
        if total > cap {
            return true;
        }
        input = &input[r.bytes_consumed.min(input.len())..];
        match r.status {
            Ok(MZStatus::StreamEnd) | Err(_) => return false,
            Ok(_) if r.bytes_consumed == 0 && r.bytes_written == 0 => return false,
            Ok(_) => {}
        }
    }
}

/// Whether LZW `data` (PDF's flavour: MSB first, 8-bit symbols) decodes to
/// more than `cap` bytes, counted as [`inflates_beyond`] does. Both code
/// size rules are tried (`EarlyChange` 1, the default, and 0): a stream
/// that claims the wrong one must not slip through.
fn lzw_expands_beyond(data: &[u8], cap: u64) -> bool {
    use weezl::{BitOrder, LzwStatus, decode::Decoder};
    let decoders = [
        Decoder::with_tiff_size_switch(BitOrder::Msb, 8),
        Decoder::new(BitOrder::Msb, 8),
    ];
    let mut out = vec![0u8; 64 * 1024];
    decoders.into_iter().any(|mut decoder| {
        let mut input = data;
        let mut total = 0u64;
        loop {
            let r = decoder.decode_bytes(input, &mut out);
            total += r.consumed_out as u64;
            if total > cap {
                return true;
            }
            input = &input[r.consumed_in.min(input.len())..];
            match r.status {
                Ok(LzwStatus::Done | LzwStatus::NoProgress) | Err(_) => return false,
                Ok(LzwStatus::Ok) => {}
            }
        }
    })
}

/// The bytes RunLength `data` decodes to (each 2-byte run can claim 128).
fn run_length_size(data: &[u8]) -> u64 {
    let (mut i, mut total) = (0usize, 0u64);
    while let Some(&n) = data.get(i) {
        match n {
            128 => break,
            0..=127 => {
                total += u64::from(n) + 1;
                i += usize::from(n) + 2;
            }
            _ => {
                total += 257 - u64::from(n);
                i += 2;
            }
        }
    }
    total
}

/// Whether a stream's first filter expands its data beyond `cap` bytes.
/// The filters that can (deflate, LZW, RunLength) are counted; the image
/// codecs are bounded by the image's declared size, checked apart.
fn expands_beyond(filter: Option<&Filter>, raw: &[u8], cap: u64) -> bool {
    match filter {
        Some(Filter::FlateDecode) => inflates_beyond(raw, cap),
        Some(Filter::LzwDecode) => lzw_expands_beyond(raw, cap),
        Some(Filter::RunLengthDecode) => run_length_size(raw) > cap,
        _ => false,
    }
}

/// Refuse, before any page is interpreted, PDFs whose streams would make
/// hayro allocate without bound: a deflate, LZW or RunLength stream
/// expanding beyond [`MAX_STREAM_BYTES`], or an image declaring more than `max_pixels`
/// (a CCITT image of 100,000 x 100,000 pixels would allocate 10 GB and
/// abort the process).
pub fn check_streams(pdf: &Pdf, max_pixels: u64) -> Result<(), Error> {
    for obj in pdf.objects() {
        let Object::Stream(stream) = obj else {
            continue;
        };
        let dict = stream.dict();
        if dict
            .get::<Name<'_>>("Subtype")
            .is_some_and(|n| n.as_str() == "Image")
        {
            let w = dict.get::<f64>("Width").unwrap_or(0.0).max(0.0);
            let h = dict.get::<f64>("Height").unwrap_or(0.0).max(0.0);
            if w * h > max_pixels as f64 {
                return Err(Error::EmbeddedImageTooLarge {
                    width: w as u64,
                    height: h as u64,
                    max_pixels,
                });
            }
        }
        if expands_beyond(
            stream.filters().first(),
            &stream.raw_data(),
            MAX_STREAM_BYTES,
        ) {
            return Err(Error::Corrupt {
                kind: "PDF",
                detail: format!(
                    "a compressed stream expands beyond {} MB",
                    MAX_STREAM_BYTES >> 20
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LZW of `blocks` runs of 3,000,000 zero bytes (a bomb: about 5 KB each).
    fn lzw_zeros(blocks: usize, tiff_switch: bool) -> Vec<u8> {
        use weezl::{BitOrder, encode::Encoder};
        let mut encoder = if tiff_switch {
            Encoder::with_tiff_size_switch(BitOrder::Msb, 8)
        } else {
            Encoder::new(BitOrder::Msb, 8)
        };
        let zeros = vec![0u8; 3_000_000 * blocks];
        encoder.encode(&zeros).unwrap()
    }

    #[test]
    fn lzw_and_run_length_bombs_are_counted_not_decoded() {
        for tiff_switch in [true, false] {
            let bomb = lzw_zeros(4, tiff_switch);
            assert!(bomb.len() < 100_000, "{} bytes", bomb.len());
            assert!(lzw_expands_beyond(&bomb, 11_000_000));
            assert!(!lzw_expands_beyond(&bomb, 12_000_000));
            assert!(expands_beyond(Some(&Filter::LzwDecode), &bomb, 11_000_000));
        }
        assert!(!lzw_expands_beyond(b"not lzw", 10));
        // Runs: 3 literal bytes, then 0x81 = 128 copies of one byte, then EOD.
        let rle = [2, b'a', b'b', b'c', 0x81, b'z', 128, 5, 5];
        assert_eq!(run_length_size(&rle), 3 + 128);
        let bomb: Vec<u8> = std::iter::repeat_n([0x81u8, 0], 10_000).flatten().collect();
        assert_eq!(run_length_size(&bomb), 1_280_000);
        assert!(expands_beyond(
            Some(&Filter::RunLengthDecode),
            &bomb,
            1_000_000
        ));
        assert!(!expands_beyond(Some(&Filter::DctDecode), &bomb, 1));
        assert_eq!(
            run_length_size(&[127]),
            128,
            "a truncated run counts what it claims"
        );
    }
}
