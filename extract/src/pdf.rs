//! PDF input through hayro: text layer via a small text device, pixels via
//! the renderer, both in the same page coordinates.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hayro::hayro_interpret::font::GlyphRun;
use hayro::hayro_interpret::hayro_syntax::content::UntypedIter;
use hayro::hayro_interpret::hayro_syntax::object::{
    Array, Dict, MaybeRef, Name, Object, ObjectIdentifier, Stream,
};
use hayro::hayro_interpret::hayro_syntax::page::Page;
use hayro::hayro_interpret::hayro_syntax::{
    Exceeded, Filter, Limits, LoadPdfError, Pdf, REPAIR_READS_PER_BYTE,
};
use hayro::hayro_interpret::util::TransformExt;
use hayro::hayro_interpret::{
    BlendMode, ClipPath, Context, Device, DrawMode, DrawProps, Image, ImageDrawProps,
    InterpreterCache, InterpreterSettings, SoftMask, interpret_page,
};
use hayro::kurbo::{Affine, BezPath, Point, Rect, Shape};
use hayro::vello_cpu::color::palette::css::WHITE;
use image::GrayImage;
use unicode_normalization::UnicodeNormalization;

use crate::Error;
use crate::layout::{PageText, Source, Word};

mod lenient;

/// Largest page side hayro can allocate.
const MAX_SIDE: f64 = 65_535.0;
/// Lowest resolution still worth OCR after clamping a huge page.
const MIN_OCR_DPI: f64 = 100.0;

/// What opening a document may read: its page tree to `max_pages` + 1
/// pages (one more tells that there are more), streams (and its object
/// streams together) decoded to `max_pdf_stream_bytes`, the streams that
/// hold its objects measured before they are decoded, and
/// `max_pdf_objects` objects. hayro-syntax itself
/// reads the whole page tree and decodes the cross-reference and object
/// streams it needs when a document is opened, before any of our checks:
/// our copy of it takes these limits (vendor/README.md).
pub fn limits(max_pages: u32, opts: &crate::Options) -> Limits {
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Limits {
        max_pages: usize::try_from(max_pages).unwrap_or(usize::MAX),
        max_decoded_bytes: size(opts.max_pdf_stream_bytes),
        max_objects: size(opts.max_pdf_objects),
        measure: Some(measure),
    }
}

/// The bytes a stream may decode to under `limits`.
fn max_stream(limits: &Limits) -> u64 {
    u64::try_from(limits.max_decoded_bytes).unwrap_or(u64::MAX)
}

/// [`Limits::measure`]: what a stream decodes to, measured as
/// [`check_streams`] measures streams (keeping nothing).
fn measure(filters: &[Filter], raw: &[u8], cap: usize) -> usize {
    let cap = u64::try_from(cap).unwrap_or(u64::MAX);
    usize::try_from(decoded_len(filters, raw, cap)).unwrap_or(usize::MAX)
}

pub fn open(doc: &[u8], limits: Limits) -> Result<Pdf, Error> {
    Pdf::new_with_limits(Arc::new(doc.to_vec()), "", limits).map_err(|e| match e {
        LoadPdfError::Decryption(d) => Error::Encrypted {
            detail: crate::error::decoder_text(format!("{d:?}")),
        },
        LoadPdfError::Invalid => Error::Corrupt {
            kind: "PDF",
            detail: "no readable cross-reference table or page tree".into(),
        },
        LoadPdfError::LimitExceeded(what) => passed(what, &limits),
    })
}

/// The error for a limit of the document's passed while it was read:
/// a stream that holds its structure (cross-reference data, object
/// streams) decoding beyond `max_decoded_bytes` (or its object streams
/// together), more than `max_objects` objects, or a damaged file that
/// could not be rebuilt within the reading the reader allows.
fn passed(what: Exceeded, limits: &Limits) -> Error {
    match what {
        Exceeded::DecodedBytes => {
            let max_bytes = max_stream(limits);
            Error::StreamTooLarge {
                detail: format!(
                    "the streams that hold its objects expand beyond {}",
                    size_text(max_bytes)
                ),
                max_bytes,
            }
        }
        Exceeded::Objects => Error::TooManyObjects {
            max: limits.max_objects as u64,
        },
        // A damaged file whose rebuilding would read it over and over:
        // nothing an ordinary damaged file comes near.
        Exceeded::Repair => Error::Corrupt {
            kind: "PDF",
            detail: format!(
                "its cross-reference data is damaged, and rebuilding it would read the file \
                 more than {REPAIR_READS_PER_BYTE} times over; re-save it with a PDF tool"
            ),
        },
    }
}

/// What interpreting pages may cost: glyphs drawn (each one kept costs
/// memory), drawing operations (every call hayro makes into a device:
/// shapes, clips, text runs, images, forms, marked content) and time.
/// One meter is shared by all the pages of a pass over a document, so a
/// small content stream shared by every page cannot multiply its cost by
/// the page count.
///
/// hayro has no way to stop an interpretation: a page whose forms draw
/// each other ten times over, 50 deep, would run on after any cap. So the
/// devices charge the meter on every call, and once a limit is passed the
/// meter unwinds out of hayro (a private payload through
/// [`resume_unwind`], which skips the panic hook) to [`interpret`], which
/// catches it and reports the [`Cut`]. Work between two device calls is
/// not seen: the operators of a content stream (up to
/// `max_pdf_stream_bytes` of them) that draw nothing, forms hidden by
/// optional content or without a `/BBox` among them, which hayro decodes
/// on every use before it finds it has nothing to draw.
pub struct Meter {
    max_glyphs: u64,
    max_text_bytes: u64,
    max_operations: u64,
    glyphs: u64,
    /// Bytes of text the devices keep.
    text_bytes: u64,
    operations: u64,
    /// The document's time limit: when it started, how long it is.
    document: (Instant, Duration),
    /// The page's, if it has one.
    page: Option<(Instant, Duration)>,
    /// The earlier of the two ends.
    deadline: Instant,
    cut: Option<Cut>,
}

/// Why interpretation stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Glyphs,
    TextBytes,
    Operations,
    Time,
}

/// What unwinds out of hayro when the meter cuts a page short.
struct Stop;

impl Meter {
    /// A meter with the limits of `opts` for a document whose work began
    /// at `started`.
    pub fn new(opts: &crate::Options, started: Instant) -> Meter {
        let limit = opts.document_time_limit;
        Meter {
            max_glyphs: opts.max_text_glyphs,
            max_text_bytes: opts.max_text_bytes,
            max_operations: opts.max_drawing_operations,
            glyphs: 0,
            text_bytes: 0,
            operations: 0,
            document: (started, limit),
            page: None,
            deadline: started + limit,
            cut: None,
        }
    }

    /// The page whose work began at `started` may take `limit` (and ends
    /// with the document at the latest).
    pub fn start_page(&mut self, started: Instant, limit: Duration) {
        self.page = Some((started, limit));
        self.deadline = (started + limit).min(self.document.0 + self.document.1);
    }

    /// Charges one device call drawing `glyphs` glyphs; past a limit,
    /// stops the interpretation (see [`Meter`]).
    fn charge(&mut self, glyphs: usize) {
        self.operations += 1;
        self.glyphs += glyphs as u64;
        let cut = if self.glyphs > self.max_glyphs {
            Cut::Glyphs
        } else if self.operations > self.max_operations {
            Cut::Operations
        } else if Instant::now() >= self.deadline {
            Cut::Time
        } else {
            return;
        };
        self.stop(cut);
    }

    /// Charges `bytes` more bytes of text kept; past the limit, stops the
    /// interpretation.
    fn keep(&mut self, bytes: u64) {
        self.text_bytes += bytes;
        if self.text_bytes > self.max_text_bytes {
            self.stop(Cut::TextBytes);
        }
    }

    fn stop(&mut self, cut: Cut) -> ! {
        self.cut = Some(cut);
        resume_unwind(Box::new(Stop));
    }

    /// The error for a cut at page `number`.
    fn error(&self, cut: Cut, number: u32) -> Error {
        match cut {
            Cut::Glyphs => Error::TextTooLarge {
                page: number,
                max: self.max_glyphs,
            },
            Cut::TextBytes => Error::TextBytesTooLarge {
                page: number,
                max_bytes: self.max_text_bytes,
            },
            Cut::Operations => Error::TooManyOperations {
                page: number,
                max: self.max_operations,
            },
            Cut::Time => match self.page {
                Some((started, limit)) if started + limit <= self.document.0 + self.document.1 => {
                    Error::Timeout {
                        page: number,
                        limit_ms: limit.as_millis() as u64,
                    }
                }
                _ => Error::DocumentTimeout {
                    page: number,
                    limit_secs: self.document.1.as_secs_f64(),
                },
            },
        }
    }
}

/// What a device keeps of what it is given, for the [`Meter`].
trait Keeps {
    /// Bytes of text kept so far.
    fn text_bytes(&self) -> u64 {
        0
    }
}

/// `dev`, with every call charged to `meter` first (and the text it keeps
/// after): the one place where interpreting a page is metered, whatever
/// the device.
struct Charged<'d, 'm, D> {
    dev: &'d mut D,
    meter: &'m mut Meter,
}

impl<'a, D: Device<'a> + Keeps> Device<'a> for Charged<'_, '_, D> {
    fn draw_path(&mut self, path: &BezPath, props: DrawProps<'a>, mode: &DrawMode) {
        self.meter.charge(0);
        self.dev.draw_path(path, props, mode);
    }
    fn push_clip_path(&mut self, clip: &ClipPath) {
        self.meter.charge(0);
        self.dev.push_clip_path(clip);
    }
    fn push_transparency_group(&mut self, o: f32, mask: Option<SoftMask<'a>>, blend: BlendMode) {
        self.meter.charge(0);
        self.dev.push_transparency_group(o, mask, blend);
    }
    fn draw_glyph_run(&mut self, run: &GlyphRun<'_, 'a>, props: DrawProps<'a>, mode: &DrawMode) {
        // Every glyph counts, read or not: each costs the interpreter.
        self.meter.charge(run.glyphs().len());
        let before = self.dev.text_bytes();
        self.dev.draw_glyph_run(run, props, mode);
        self.meter.keep(self.dev.text_bytes() - before);
    }
    fn draw_image(&mut self, image: Image<'a, '_>, props: ImageDrawProps<'a>) {
        self.meter.charge(0);
        self.dev.draw_image(image, props);
    }
    fn pop_clip(&mut self) {
        self.meter.charge(0);
        self.dev.pop_clip();
    }
    fn pop_transparency_group(&mut self) {
        self.meter.charge(0);
        self.dev.pop_transparency_group();
    }
    fn begin_marked_content(&mut self, tag: &[u8], properties: Option<&Dict<'_>>) {
        self.meter.charge(0);
        self.dev.begin_marked_content(tag, properties);
    }
    fn end_marked_content(&mut self) {
        self.meter.charge(0);
        self.dev.end_marked_content();
    }
}

/// Most characters of text one glyph keeps: a font's ToUnicode map may
/// give a glyph any text (a ligature has two or three characters; one
/// glyph of 500,000, drawn thousands of times, would take gigabytes).
const MAX_GLYPH_CHARS: usize = 32;

/// Glyphs of one page in upright page points, top-left origin.
#[derive(Default)]
struct TextDevice {
    glyphs: Vec<Glyph>,
    /// Bytes of their text.
    text_bytes: u64,
}

impl Keeps for TextDevice {
    fn text_bytes(&self) -> u64 {
        self.text_bytes
    }
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
            let text: String = text.nfkc().take(MAX_GLYPH_CHARS).collect();
            self.text_bytes += text.len() as u64;
            self.glyphs.push(Glyph {
                text,
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

/// Adds up the area one page paints (fills and strokes by their bounding
/// boxes, clips, glyphs by their em boxes; not images), clipped to the page.
/// The renderer keeps a command for every tile each shape covers until the
/// page is done: about 100 KB for each page-sized fill at 300 DPI, so a
/// few kilobytes of content drawing the page over and over again can take
/// gigabytes (and a decoder assertion at 2 GB).
struct PaintDevice {
    page: Rect,
    painted: f64,
}

impl PaintDevice {
    fn add(&mut self, transform: Affine, r: Rect) {
        let r = transform.transform_rect_bbox(r).intersect(self.page);
        if r.width() > 0.0 && r.height() > 0.0 && r.area().is_finite() {
            self.painted += r.area();
        }
    }
}

impl Keeps for PaintDevice {}

impl<'a> Device<'a> for PaintDevice {
    fn draw_path(&mut self, path: &BezPath, props: DrawProps<'a>, _: &DrawMode) {
        self.add(props.transform, path.bounding_box());
    }
    fn push_clip_path(&mut self, clip: &ClipPath) {
        self.add(Affine::IDENTITY, clip.path.bounding_box());
    }
    fn push_transparency_group(&mut self, _: f32, _: Option<SoftMask<'a>>, _: BlendMode) {}
    fn draw_image(&mut self, _: Image<'a, '_>, _: ImageDrawProps<'a>) {}
    fn pop_clip(&mut self) {}
    fn pop_transparency_group(&mut self) {}
    fn draw_glyph_run(&mut self, run: &GlyphRun<'_, 'a>, props: DrawProps<'a>, _: &DrawMode) {
        for g in run.glyphs() {
            // Glyph space is 1000 units an em.
            self.add(
                props.transform * g.transform(),
                Rect::new(0.0, -200.0, 1000.0, 800.0),
            );
        }
    }
}

/// How many times over a page of `w` x `h` points paints its own area.
fn overdraw(page: &Page<'_>, w: f64, h: f64, meter: &mut Meter) -> Result<f64, Cut> {
    let mut dev = PaintDevice {
        page: Rect::new(0.0, 0.0, w, h),
        painted: 0.0,
    };
    interpret(page, w, h, &mut dev, meter)?;
    Ok(dev.painted / (w * h))
}

/// Runs a page's content through `dev`, in upright page points, until
/// `meter` cuts it short.
fn interpret<'a>(
    page: &Page<'a>,
    w: f64,
    h: f64,
    dev: &mut (impl Device<'a> + Keeps),
    meter: &mut Meter,
) -> Result<(), Cut> {
    let transform = page.initial_transform(true).to_kurbo();
    let cache = InterpreterCache::new();
    let mut ctx = Context::new(
        transform,
        Rect::new(0.0, 0.0, w, h),
        &cache,
        page.xref(),
        InterpreterSettings::default(),
    );
    // Unwinding leaves hayro's context half-way: it is dropped here, and
    // the page fails. hayro holds no lock while it calls a device.
    let mut charged = Charged {
        dev,
        meter: &mut *meter,
    };
    match catch_unwind(AssertUnwindSafe(|| {
        interpret_page(page, &mut ctx, &mut charged)
    })) {
        Ok(()) => Ok(()),
        Err(payload) if payload.is::<Stop>() => Err(meter.cut.take().unwrap_or(Cut::Operations)),
        Err(payload) => resume_unwind(payload),
    }
}

fn page_size(page: &Page<'_>) -> (f64, f64) {
    let (w, h) = page.render_dimensions();
    (w as f64, h as f64)
}

/// The text layer of one page (possibly empty), charged to `meter`.
pub fn page_text(pdf: &Pdf, index: usize, meter: &mut Meter) -> Result<PageText, Error> {
    let number = index as u32 + 1;
    let Some(page) = pdf.pages().get(index) else {
        return Ok(PageText::new(number, Source::TextLayer, Vec::new()));
    };
    let (w, h) = page_size(page);
    if !(w.is_finite() && h.is_finite()) || w < 1.0 || h < 1.0 {
        return Ok(PageText::new(number, Source::TextLayer, Vec::new()));
    }
    let mut dev = TextDevice::default();
    if let Err(cut) = interpret(page, w, h, &mut dev, meter) {
        return Err(meter.error(cut, number));
    }
    Ok(PageText::new(
        number,
        Source::TextLayer,
        words_from_glyphs(dev.glyphs, w, h),
    ))
}

/// Render one page in grey at `dpi`, lowered if needed to fit `max_pixels`
/// and hayro's side limit; a page painting more than `max_overdraw` times
/// its own area is refused first, measured within the limits of `meter`
/// (the renderer's own interpretation, which cannot be metered, does the
/// same work and more: Type 3 glyphs, patterns, soft masks). Returns the
/// image and the DPI used.
pub fn render(
    pdf: &Pdf,
    index: usize,
    dpi: u32,
    max_pixels: u64,
    max_overdraw: u32,
    meter: &mut Meter,
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
    let painted = overdraw(page, w, h, meter).map_err(|cut| meter.error(cut, number))?;
    if painted > f64::from(max_overdraw) {
        return Err(Error::PageTooComplex {
            page: number,
            overdraw: painted,
            max: max_overdraw,
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
    // Opaque over the white background; integer luma, written into a
    // buffer of the final size so the loop vectorises (collecting from
    // the iterator did not, and cost a fifth of a 300 DPI page's render).
    let mut gray = vec![0u8; rgba.len() / 4];
    for (g, px) in gray.iter_mut().zip(rgba.chunks_exact(4)) {
        *g = ((px[0] as u32 * 77 + px[1] as u32 * 150 + px[2] as u32 * 29) >> 8) as u8;
    }
    let img = GrayImage::from_raw(pw, ph, gray).ok_or_else(|| Error::Corrupt {
        kind: "PDF",
        detail: format!("page {number} rendered to no pixels"),
    })?;
    Ok((img, scale as f64 * 72.0))
}

/// `bytes` as a message says it: whole megabytes as MB.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The decoded page content one parsed document may keep (see [`Pages`]).
const HELD_CONTENT_BYTES: u64 = 64 << 20;

/// One stage of a stream's filter chain, decoding chunk by chunk into its
/// own small buffer and handing each piece to the next stage: a chain is
/// measured in constant memory whatever it expands to.
enum Stage {
    /// Deflate with a zlib header or without one, read by the same flate2
    /// backend as hayro's; `finished` once its data ended as it should.
    Flate {
        state: Box<flate2::Decompress>,
        finished: bool,
    },
    /// Deflate as hayro reads it when both of those fail.
    Lenient(Box<lenient::Lenient>),
    Lzw(Box<weezl::decode::Decoder>),
    RunLength(RunLength),
    /// ASCII filters never expand much, but a chain can hide a bomb
    /// behind them (`[/ASCIIHexDecode /FlateDecode]`).
    Ascii(Ascii),
}

/// Where an ASCIIHex or ASCII85 decoder is between chunks: the digits of
/// the byte or group begun.
#[derive(Clone, Copy)]
struct Ascii {
    base85: bool,
    digits: [u8; 5],
    held: usize,
    ended: bool,
}

/// Where a RunLength decoder is between chunks.
#[derive(Clone, Copy)]
enum RunLength {
    Header,
    Literal(usize),
    Repeat(usize),
    End,
}

/// What a stage tells the one feeding it.
#[derive(PartialEq)]
enum Flow {
    More,
    /// This stage's data ended (or is corrupt): the rest is never decoded.
    Ended,
    /// The chain's output passed the cap.
    Beyond,
}

impl Stage {
    /// The stage for `filter` (`early_change`: LZW's code size rule;
    /// `reading`: which of hayro's ways to read deflate), or None for the
    /// filters that cannot expand without bound (the image codecs, bounded
    /// by the image's declared size) and unknown ones.
    fn new(filter: &Filter, early_change: bool, reading: Inflate) -> Option<Stage> {
        use weezl::{BitOrder, decode::Decoder};
        Some(match (filter, reading) {
            (Filter::FlateDecode, Inflate::Lenient) => {
                Stage::Lenient(Box::new(lenient::Lenient::new()))
            }
            (Filter::FlateDecode, _) => Stage::Flate {
                state: Box::new(flate2::Decompress::new(reading == Inflate::Zlib)),
                finished: false,
            },
            (Filter::LzwDecode, _) => Stage::Lzw(Box::new(if early_change {
                Decoder::with_tiff_size_switch(BitOrder::Msb, 8)
            } else {
                Decoder::new(BitOrder::Msb, 8)
            })),
            (Filter::RunLengthDecode, _) => Stage::RunLength(RunLength::Header),
            (Filter::AsciiHexDecode | Filter::Ascii85Decode, _) => Stage::Ascii(Ascii {
                base85: matches!(filter, Filter::Ascii85Decode),
                digits: [0; 5],
                held: 0,
                ended: false,
            }),
            _ => return None,
        })
    }
}

/// One stage of a chain being measured: its decoder, its output buffer,
/// how much it has made in all, and whether the stages after it are done.
struct Step {
    stage: Stage,
    out: Vec<u8>,
    made: u64,
    rest_done: bool,
}

impl Step {
    fn new(stage: Stage) -> Step {
        Step {
            stage,
            out: vec![0u8; 64 * 1024],
            made: 0,
            rest_done: false,
        }
    }
}

/// Decodes `input` through `steps`, adding the last stage's output to
/// `total`; stops once any stage's output passes `cap`. `last` when no
/// input follows `input` (the stages after a stage that has ended are told
/// so too: hayro's lenient deflate reading decodes differently at the end
/// of its data). hayro decodes each stage whole into memory before the
/// next, so every stage counts, and a stage goes on after the ones after
/// it have ended (`[/FlateDecode /RunLengthDecode]` whose run-length data
/// ends at once still inflates the deflate data whole).
fn feed(steps: &mut [Step], input: &[u8], last: bool, total: &mut u64, cap: u64) -> Flow {
    let Some((step, rest)) = steps.split_first_mut() else {
        *total += input.len() as u64;
        return if *total > cap {
            Flow::Beyond
        } else {
            Flow::More
        };
    };
    let mut input = input;
    loop {
        let starved = input.is_empty();
        // Decode a piece of `input` into `out`: (bytes used, bytes made,
        // whether the stage's data ended or is corrupt).
        let out = &mut step.out;
        let (used, made, ended) = match &mut step.stage {
            Stage::Flate { state, finished } => {
                use flate2::{FlushDecompress, Status};
                let (before_in, before_out) = (state.total_in(), state.total_out());
                let r = state.decompress(input, out, FlushDecompress::None);
                *finished |= matches!(r, Ok(Status::StreamEnd));
                (
                    (state.total_in() - before_in) as usize,
                    (state.total_out() - before_out) as usize,
                    !matches!(r, Ok(Status::Ok | Status::BufError)),
                )
            }
            Stage::Lenient(decoder) => decoder.decode(input, last, out),
            Stage::Lzw(decoder) => {
                use weezl::LzwStatus;
                let r = decoder.decode_bytes(input, out);
                (
                    r.consumed_in,
                    r.consumed_out,
                    !matches!(r.status, Ok(LzwStatus::Ok)),
                )
            }
            Stage::RunLength(state) => run_length(state, input, out),
            Stage::Ascii(state) => ascii(state, input, out),
        };
        input = &input[used.min(input.len())..];
        step.made += made as u64;
        if step.made > cap {
            return Flow::Beyond;
        }
        if made > 0 && !step.rest_done {
            match feed(rest, &step.out[..made], false, total, cap) {
                Flow::More => {}
                Flow::Ended => step.rest_done = true,
                Flow::Beyond => return Flow::Beyond,
            }
        }
        // No progress: waiting for input (a later stage's chunk is used
        // up), or done (its data is stuck, or no more is coming).
        let stalled = used == 0 && made == 0;
        if stalled && starved && !last {
            return Flow::More;
        }
        if ended || stalled {
            // What this stage made is all the next ones get.
            if !step.rest_done && feed(rest, &[], true, total, cap) == Flow::Beyond {
                return Flow::Beyond;
            }
            return Flow::Ended;
        }
        if input.is_empty() && made < step.out.len() && !last {
            return Flow::More;
        }
    }
}

/// RunLength-decodes from `input` into `out`: (bytes used, bytes made,
/// ended). A run is emitted as far as `out` holds, the rest next call.
fn run_length(state: &mut RunLength, input: &[u8], out: &mut [u8]) -> (usize, usize, bool) {
    let (mut used, mut made) = (0, 0);
    while made < out.len() {
        match *state {
            RunLength::End => return (used, made, true),
            RunLength::Header => {
                let Some(&n) = input.get(used) else { break };
                used += 1;
                *state = match n {
                    128 => RunLength::End,
                    0..=127 => RunLength::Literal(usize::from(n) + 1),
                    _ => RunLength::Repeat(257 - usize::from(n)),
                };
            }
            RunLength::Literal(left) => {
                let n = left.min(input.len() - used).min(out.len() - made);
                if n == 0 {
                    break;
                }
                out[made..made + n].copy_from_slice(&input[used..used + n]);
                (used, made) = (used + n, made + n);
                *state = if n == left {
                    RunLength::Header
                } else {
                    RunLength::Literal(left - n)
                };
            }
            RunLength::Repeat(count) => {
                let Some(&byte) = input.get(used) else { break };
                let n = count.min(out.len() - made);
                out[made..made + n].fill(byte);
                made += n;
                if n == count {
                    used += 1;
                    *state = RunLength::Header;
                } else {
                    *state = RunLength::Repeat(count - n);
                }
            }
        }
    }
    (used, made, false)
}

/// ASCIIHex- or ASCII85-decodes from `input` into `out`: (bytes used,
/// bytes made, ended). White space is skipped; the end marker (`>`, `~`)
/// or a character outside the alphabet ends the data. A last partial
/// group is dropped (a few bytes: nothing to count).
fn ascii(state: &mut Ascii, input: &[u8], out: &mut [u8]) -> (usize, usize, bool) {
    let (mut used, mut made) = (0, 0);
    // Room for the largest piece one character can complete (4 bytes).
    while !state.ended && made + 4 <= out.len() {
        let Some(&c) = input.get(used) else { break };
        used += 1;
        if c.is_ascii_whitespace() || c == 0 {
            continue;
        }
        if !state.base85 {
            let Some(v) = (c as char).to_digit(16) else {
                state.ended = true;
                break;
            };
            state.digits[state.held] = v as u8;
            state.held += 1;
            if state.held == 2 {
                out[made] = state.digits[0] << 4 | state.digits[1];
                (made, state.held) = (made + 1, 0);
            }
        } else if c == b'z' && state.held == 0 {
            out[made..made + 4].fill(0);
            made += 4;
        } else if (b'!'..=b'u').contains(&c) {
            state.digits[state.held] = c - b'!';
            state.held += 1;
            if state.held == 5 {
                let v = state
                    .digits
                    .iter()
                    .fold(0u64, |v, &d| v * 85 + u64::from(d)) as u32;
                out[made..made + 4].copy_from_slice(&v.to_be_bytes());
                (made, state.held) = (made + 4, 0);
            }
        } else {
            state.ended = true;
        }
    }
    (used, made, state.ended)
}

/// Whether [`expanded_len`] passes `cap`.
#[cfg(test)]
fn expands_beyond(filters: &[Filter], raw: &[u8], cap: u64) -> bool {
    expanded_len(filters, raw, cap).is_some_and(|n| n > cap)
}

/// What a stream's filters make of `raw`, counted up to a little past `cap`
/// by decoding the filters that can expand (deflate, LZW, RunLength, in any
/// chain: `[/FlateDecode /FlateDecode]` multiplies one bomb by another; the
/// ASCII filters too, which a bomb can hide behind) into small reused
/// buffers, up to the first filter that cannot (the image codecs); None
/// when the first cannot.
///
/// Where a decoder could read the data more than one way, each way is
/// counted and the largest wins: LZW with both code size rules
/// (`EarlyChange` 1, the default, and 0), and deflate as hayro reads it,
/// with a zlib header and, where that fails (no header, or corrupt data
/// after one), again without (raw deflate from the first byte), and where
/// that fails too, leniently (see [`lenient`]). A chain that needs more
/// than [`MAX_READINGS`] readings counts as beyond `cap`.
fn expanded_len(filters: &[Filter], raw: &[u8], cap: u64) -> Option<u64> {
    // hayro skips a leading /Crypt (the document's own encryption).
    let filters = match filters {
        [Filter::Crypt, rest @ ..] => rest,
        all => all,
    };
    let chain: Vec<&Filter> = filters
        .iter()
        .take_while(|f| Stage::new(f, true, Inflate::Zlib).is_some())
        .collect();
    if chain.is_empty() {
        return None;
    }
    let has_lzw = chain.iter().any(|f| matches!(f, Filter::LzwDecode));
    let mut most = 0;
    let mut runs = 0;
    for early_change in [true, false].into_iter().take(1 + usize::from(has_lzw)) {
        // How each deflate stage is read: hayro decodes a stage whole, the
        // first way that ends as it should, before the next stage.
        let mut readings = vec![Inflate::Zlib; chain.len()];
        loop {
            runs += 1;
            if runs > MAX_READINGS {
                return Some(cap.saturating_add(1));
            }
            let mut steps: Vec<Step> = chain
                .iter()
                .zip(&readings)
                .filter_map(|(f, &reading)| Stage::new(f, early_change, reading))
                .map(Step::new)
                .collect();
            let mut total = 0;
            if feed(&mut steps, raw, true, &mut total, cap) == Flow::Beyond {
                return Some(cap.saturating_add(1));
            }
            most = most.max(total);
            // Every stage has had all its input. The first deflate stage
            // that did not end as it should (corrupt, truncated, asking for
            // a preset dictionary) is read the next way (raw, then
            // leniently), and the stages after it, whose input changes,
            // start over; the stages before it are read as hayro reads them.
            let Some(i) = steps.iter().position(|s| {
                matches!(
                    s.stage,
                    Stage::Flate {
                        finished: false,
                        ..
                    }
                )
            }) else {
                break;
            };
            readings[i] = match readings[i] {
                Inflate::Zlib => Inflate::Raw,
                _ => Inflate::Lenient,
            };
            readings[i + 1..].fill(Inflate::Zlib);
        }
    }
    Some(most)
}

/// hayro's ways to read deflate data, tried in this order until one ends
/// as it should.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inflate {
    Zlib,
    Raw,
    Lenient,
}

/// Readings of one stream's filter chain [`expanded_len`] may try: each
/// deflate stage is read at most three ways, and LZW both ways, so 16
/// covers three deflate stages behind LZW (7 readings each way).
const MAX_READINGS: usize = 16;

/// The size of a stream's data once decoded, as far as
/// [`expanded_len`] can tell (its own size otherwise).
fn decoded_len(filters: &[Filter], raw: &[u8], cap: u64) -> u64 {
    expanded_len(filters, raw, cap).unwrap_or(raw.len() as u64)
}

/// The decoded size of each stream of a PDF, by object, as
/// [`check_streams`] measured them.
pub type StreamSizes = HashMap<ObjectIdentifier, u64>;

/// Refuse, before any page is interpreted, PDFs whose streams would make
/// hayro allocate without bound (hayro decodes streams whole; a kilobyte
/// of deflate data can claim a gigabyte): a stream or inline image whose
/// filters (alone or chained, see [`expanded_len`]) expand it beyond
/// `limits.max_decoded_bytes`, or an image declaring more than `max_pixels` (a
/// CCITT image of 100,000 x 100,000 pixels would allocate 10 GB and abort
/// the process).
///
/// Measuring takes time (each stream is inflated once, and content streams
/// again for their inline images): `deadline` is asked before each one, so
/// thousands of bombs end in the document's time limit, not past it.
/// Returns each stream's decoded size, for [`Pages`].
pub fn check_streams(
    pdf: &Pdf,
    max_pixels: u64,
    limits: &Limits,
    deadline: &dyn Fn() -> Result<(), Error>,
) -> Result<StreamSizes, Error> {
    let max_stream = max_stream(limits);
    let mut sizes = StreamSizes::new();
    for obj in pdf.objects() {
        let Object::Stream(stream) = obj else {
            continue;
        };
        deadline()?;
        sizes.insert(
            stream.obj_id(),
            check_stream(&stream, max_pixels, max_stream)?,
        );
        if may_hold_content(stream.dict()) {
            // Within the cap now: hayro decodes it whole anyway.
            if let Ok(content) = stream.decoded() {
                check_inline_images(&content, max_pixels, max_stream)?;
            }
        }
    }
    // Every object has been read: an object stream left out (beyond the
    // limit, or past it with the others) would leave objects missing.
    match pdf.limits_passed() {
        Some(what) => Err(passed(what, limits)),
        None => Ok(sizes),
    }
}

/// The bytes hayro decodes and keeps for page `index`'s content: its
/// content streams joined into one buffer, a stream listed twice counted
/// twice (`/Contents [4 0 R 4 0 R …]` repeats one stream as often as it
/// likes), measured without decoding (up to a little past `max_stream`
/// each).
fn content_bytes(pdf: &Pdf, index: usize, sizes: &StreamSizes, max_stream: u64) -> u64 {
    let Some(page) = pdf.pages().get(index) else {
        return 0;
    };
    let size = |s: &Stream<'_>| match sizes.get(&s.obj_id()) {
        Some(&n) => n,
        None => decoded_len(&s.filters(), s.raw_data().as_ref(), max_stream),
    };
    let raw = page.raw();
    if let Some(stream) = raw.get::<Stream<'_>>("Contents") {
        size(&stream)
    } else if let Some(list) = raw.get::<Array<'_>>("Contents") {
        list.raw_iter()
            .filter_map(|item| match item {
                MaybeRef::Ref(r) => page.xref().get::<Stream<'_>>(r.into()),
                MaybeRef::NotRef(Object::Stream(s)) => Some(s),
                MaybeRef::NotRef(_) => None,
            })
            // hayro puts a space between them.
            .map(|s| size(&s) + 1)
            .fold(0u64, u64::saturating_add)
    } else {
        0
    }
}

/// A parsed PDF for one pass over its pages. hayro keeps each page's
/// decoded content for as long as the parsed document lives, so a pass
/// over many pages that share one big stream would hold it once per page
/// (40 pages of one 250 MB stream of spaces: 10 GB, and nothing drawn to
/// count): the document is parsed again whenever what it holds would pass
/// [`HELD_CONTENT_BYTES`] (ordinary pages hold kilobytes, so that is rare).
/// A page whose own content passes `max_stream` bytes is refused.
pub struct Pages<'d> {
    doc: &'d [u8],
    sizes: &'d StreamSizes,
    limits: Limits,
    pdf: Pdf,
    held: u64,
}

impl<'d> Pages<'d> {
    /// `pdf`, opened from `doc` with `limits` and holding no page content
    /// yet; a page's content may decode to `limits.max_decoded_bytes`.
    pub fn new(doc: &'d [u8], sizes: &'d StreamSizes, limits: Limits, pdf: Pdf) -> Pages<'d> {
        Pages {
            doc,
            sizes,
            limits,
            pdf,
            held: 0,
        }
    }

    /// `doc` opened afresh.
    pub fn open(doc: &'d [u8], sizes: &'d StreamSizes, limits: Limits) -> Result<Pages<'d>, Error> {
        Ok(Pages::new(doc, sizes, limits, open(doc, limits)?))
    }

    /// The document, ready for page `index` (0-based) to be interpreted.
    pub fn for_page(&mut self, index: usize) -> Result<&Pdf, Error> {
        let max_stream = max_stream(&self.limits);
        let bytes = content_bytes(&self.pdf, index, self.sizes, max_stream);
        if bytes > max_stream {
            return Err(Error::StreamTooLarge {
                detail: format!(
                    "the content of page {} expands beyond {}",
                    index + 1,
                    size_text(max_stream)
                ),
                max_bytes: max_stream,
            });
        }
        if self.held > 0 && self.held + bytes > HELD_CONTENT_BYTES {
            self.pdf = open(self.doc, self.limits)?;
            self.held = 0;
        }
        self.held += bytes;
        Ok(&self.pdf)
    }
}

/// One stream's (or inline image's) declared image size and expansion;
/// its decoded size.
fn check_stream(stream: &Stream<'_>, max_pixels: u64, max_stream: u64) -> Result<u64, Error> {
    let dict = stream.dict();
    let image = dict
        .get::<Name<'_>>("Subtype")
        .is_some_and(|n| n.as_str() == "Image");
    // Inline images say /W and /H.
    let size = |long: &str, short: &str| {
        dict.get::<f64>(long)
            .or_else(|| dict.get::<f64>(short))
            .unwrap_or(0.0)
            .max(0.0)
    };
    if image || dict.contains_key("W") {
        let (w, h) = (size("Width", "W"), size("Height", "H"));
        if w * h > max_pixels as f64 {
            return Err(Error::EmbeddedImageTooLarge {
                width: w as u64,
                height: h as u64,
                max_pixels,
            });
        }
    }
    // hayro allocates a predictor's row (Columns x Colors x
    // BitsPerComponent / 8 bytes) before it reads any data: a row of
    // 10^14 bytes aborts the process.
    if let Some(row) = predictor_row_bytes(dict).filter(|&row| row > max_stream as f64) {
        return Err(Error::StreamTooLarge {
            detail: format!(
                "a stream's predictor declares rows of {row:.0} bytes, beyond {}",
                size_text(max_stream)
            ),
            max_bytes: max_stream,
        });
    }
    let size = decoded_len(&stream.filters(), stream.raw_data().as_ref(), max_stream);
    if size > max_stream {
        return Err(Error::StreamTooLarge {
            detail: format!(
                "a compressed stream expands beyond {}",
                size_text(max_stream)
            ),
            max_bytes: max_stream,
        });
    }
    Ok(size)
}

/// The longest predictor row a stream's decoding parameters declare
/// (`/DecodeParms`, or `/DP` in an inline image; one dictionary or one per
/// filter), if any.
fn predictor_row_bytes(dict: &Dict<'_>) -> Option<f64> {
    let object = dict
        .get::<Object<'_>>("DecodeParms")
        .or_else(|| dict.get::<Object<'_>>("DP"))?;
    let params: Vec<Dict<'_>> = match object {
        Object::Dict(d) => vec![d],
        Object::Array(a) => a
            .iter::<Object<'_>>()
            .filter_map(|o| match o {
                Object::Dict(d) => Some(d),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    params
        .iter()
        .filter(|p| p.get::<f64>("Predictor").unwrap_or(1.0) > 1.0)
        .map(|p| {
            let n = |key: &str, default: f64| p.get::<f64>(key).unwrap_or(default).abs();
            n("Columns", 1.0) * n("Colors", 1.0) * n("BitsPerComponent", 8.0) / 8.0
        })
        .reduce(f64::max)
}

/// Whether a stream may be a content stream (a page's, a form's, a
/// pattern's or a Type 3 glyph's), which can carry inline images: not an
/// image, font program, colour profile, metadata, embedded file or one of
/// the file's own structures.
fn may_hold_content(dict: &Dict<'_>) -> bool {
    let named = |key: &str, names: &[&str]| {
        dict.get::<Name<'_>>(key)
            .is_some_and(|n| names.contains(&n.as_str()))
    };
    !named(
        "Subtype",
        &["Image", "XML", "Type1C", "CIDFontType0C", "OpenType"],
    ) && !named("Type", &["XRef", "ObjStm", "Metadata", "EmbeddedFile"])
        && !["Length1", "Length2", "Length3", "N"]
            .iter()
            .any(|k| dict.contains_key(*k))
}

/// Inline images (`BI … ID … EI`) sit inside a content stream, which was
/// counted as a whole; their own filters are counted here. A megabyte of
/// deflate data in one would otherwise become a gigabyte when the page is
/// drawn.
fn check_inline_images(content: &[u8], max_pixels: u64, max_stream: u64) -> Result<(), Error> {
    if !content.windows(2).any(|w| w == b"ID") {
        return Ok(());
    }
    let mut ops = UntypedIter::new(content);
    while let Some(op) = ops.next() {
        if op.operator.as_ref() != b"BI" {
            continue;
        }
        for operand in op.operands() {
            if let Object::Stream(image) = operand {
                check_stream(image, max_pixels, max_stream)?;
            }
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
            assert!(expands_beyond(&[Filter::LzwDecode], &bomb, 11_000_000));
            assert!(!expands_beyond(&[Filter::LzwDecode], &bomb, 12_000_000));
        }
        assert!(!expands_beyond(&[Filter::LzwDecode], b"not lzw", 10));
        // Runs: 3 literal bytes, then 0x81 = 128 copies of one byte, then EOD.
        let rle = [2, b'a', b'b', b'c', 0x81, b'z', 128, 5, 5];
        assert!(expands_beyond(&[Filter::RunLengthDecode], &rle, 130));
        assert!(!expands_beyond(&[Filter::RunLengthDecode], &rle, 131));
        let bomb: Vec<u8> = std::iter::repeat_n([0x81u8, 0], 10_000).flatten().collect();
        let rl = [Filter::RunLengthDecode];
        assert!(expands_beyond(&rl, &bomb, 1_279_999));
        assert!(!expands_beyond(&rl, &bomb, 1_280_000));
        assert!(!expands_beyond(&[Filter::DctDecode], &bomb, 1));
        assert!(
            !expands_beyond(&rl, &[127, b'x'], 1),
            "a truncated run counts the bytes it has"
        );
    }

    /// ASCIIHex of `data`, a space after each byte, with its end mark.
    fn ascii_hex(data: &[u8]) -> Vec<u8> {
        data.iter()
            .flat_map(|b| format!("{b:02X} ").into_bytes())
            .chain(*b">")
            .collect()
    }

    /// ASCII85 of `data` (whole groups; 'z' for zeros), with its end mark.
    fn base85(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for group in data.chunks(4) {
            let mut word = [0u8; 4];
            word[..group.len()].copy_from_slice(group);
            let mut v = u32::from_be_bytes(word);
            if v == 0 && group.len() == 4 {
                out.push(b'z');
                continue;
            }
            let mut digits = [0u8; 5];
            for d in digits.iter_mut().rev() {
                *d = (v % 85) as u8 + b'!';
                v /= 85;
            }
            out.extend(&digits[..group.len() + 1]);
        }
        out.extend(b"~>");
        out
    }

    #[test]
    fn deflate_is_counted_however_hayro_would_read_it() {
        let zeros = vec![0u8; 16 << 20];
        let flate = [Filter::FlateDecode];
        // Raw deflate, no zlib header: hayro reads it when zlib fails.
        let raw = miniz_oxide::deflate::compress_to_vec(&zeros, 9);
        assert!(expands_beyond(&flate, &raw, 15 << 20));
        assert!(!expands_beyond(&flate, &raw, 16 << 20));
        // A valid zlib header whose zlib reading fails at once (block type
        // 3), while its raw reading from the first byte is a stored block
        // of 0x0601 bytes (LEN from the header's second byte on), then the
        // bomb.
        let mut two_ways = vec![0x78, 0x01, 0x06, 0xFE, 0xF9];
        two_ways.resize(5 + 0x0601, 0);
        two_ways.extend(&raw);
        assert!(expands_beyond(&flate, &two_ways, 15 << 20));
        // Both readings, one after the other, in a chain.
        let raw_then_zlib = miniz_oxide::deflate::compress_to_vec(
            &miniz_oxide::deflate::compress_to_vec_zlib(&zeros, 9),
            9,
        );
        let flate2 = [Filter::FlateDecode, Filter::FlateDecode];
        assert!(expands_beyond(&flate2, &raw_then_zlib, 15 << 20));
        assert!(!expands_beyond(&flate2, &raw_then_zlib, 16 << 20));
        // A header asking for a preset dictionary (FDICT) stops the zlib
        // reading at once; the raw one goes on.
        // (FLG 0x3F: FDICT and a valid check; raw: a stored block of 0x063F.)
        let mut dict = vec![0x78, 0x3F, 0x06, 0xC0, 0xF9];
        assert_eq!((0x78u32 * 256 + 0x3F) % 31, 0);
        dict.resize(5 + 0x063F, 0);
        dict.extend(&raw);
        assert!(expands_beyond(&flate, &dict, 15 << 20));
        // A zlib reading cut short (a stored block longer than the data)
        // never ends as it should, which fails hayro's zlib reading; the
        // raw one is two small stored blocks, then the bomb.
        let mut cut = vec![
            0x78, 0x01, 0x00, 0xFE, 0xFF, 0x01, 0x00, 0x00, 0x00, 0xFF, 0xFF,
        ];
        cut.extend(&raw);
        assert!(cut.len() < 0xFFFE);
        assert!(expands_beyond(&flate, &cut, 15 << 20));
        // hayro skips a leading /Crypt.
        assert!(expands_beyond(
            &[Filter::Crypt, Filter::FlateDecode],
            &raw,
            15 << 20
        ));
        // Every stage of a chain counts: hayro inflates the deflate data
        // whole although the run-length data in it ends at its first byte.
        let mut ends_at_once = vec![128u8];
        ends_at_once.resize(16 << 20, 0);
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&ends_at_once, 9);
        let flate_rl = [Filter::FlateDecode, Filter::RunLengthDecode];
        assert!(expands_beyond(&flate_rl, &packed, 15 << 20));
        assert!(!expands_beyond(&flate_rl, &packed, 17 << 20));
        // Data neither reading accepts expands to nothing.
        assert_eq!(expanded_len(&flate, b"\xff\xff\xff\xff", 100), Some(0));
    }

    /// A PDF whose one object is a stream of `data` with `filter`.
    fn one_stream_pdf(filter: &str, data: &[u8]) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = vec![];
        for body in [
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [] /Count 0 >>".to_vec(),
            [
                format!("<< /Length {} /Filter {filter} >>\nstream\n", data.len()).as_bytes(),
                data,
                b"\nendstream",
            ]
            .concat(),
        ] {
            offsets.push(pdf.len());
            pdf.extend(format!("{} 0 obj\n", offsets.len()).as_bytes());
            pdf.extend(body);
            pdf.extend(b"\nendobj\n");
        }
        let xref = pdf.len();
        pdf.extend(b"xref\n0 4\n0000000000 65535 f \n");
        for offset in offsets {
            pdf.extend(format!("{offset:010} 00000 n \n").as_bytes());
        }
        pdf.extend(
            format!("trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF").as_bytes(),
        );
        pdf
    }

    /// What hayro decodes from a `/FlateDecode` stream of `data`.
    fn hayro_inflates(data: &[u8]) -> Vec<u8> {
        let pdf = open(&one_stream_pdf("/FlateDecode", data), Limits::default()).unwrap();
        let stream = pdf
            .objects()
            .into_iter()
            .find_map(|o| match o {
                Object::Stream(s) => Some(s),
                _ => None,
            })
            .unwrap();
        stream.decoded().unwrap().into_owned()
    }

    /// Whether both of hayro's strict readings of deflate `data` fail (so
    /// it reads the data leniently).
    fn strict_readings_fail(data: &[u8]) -> bool {
        use std::io::Read;
        let mut sink = Vec::new();
        flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut sink)
            .is_err()
            && flate2::read::DeflateDecoder::new(data)
                .read_to_end(&mut sink)
                .is_err()
    }

    /// The lenient reading of `data`, fed `chunk` bytes at a time.
    fn lenient_reading(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut decoder = lenient::Lenient::new();
        let mut out = vec![0u8; 1000];
        let mut all = Vec::new();
        let mut rest = data;
        loop {
            let piece = &rest[..chunk.min(rest.len())];
            let (used, made, ended) = decoder.decode(piece, piece.len() == rest.len(), &mut out);
            all.extend(&out[..made]);
            rest = &rest[used..];
            if ended {
                return all;
            }
            assert!(used > 0 || made > 0, "no progress");
        }
    }

    #[test]
    fn deflate_both_strict_readings_refuse_is_read_leniently_as_hayro_does() {
        // Varied text: dynamic, fixed and stored blocks.
        let text: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("Invoice {i} total {} due\n", i * 7919 % 1000).into_bytes())
            .collect();
        let bases = [
            miniz_oxide::deflate::compress_to_vec_zlib(&text, 6),
            miniz_oxide::deflate::compress_to_vec_zlib(&text[..200], 1),
            miniz_oxide::deflate::compress_to_vec(&text, 9),
            miniz_oxide::deflate::compress_to_vec_zlib(&text[..5000], 0),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut compared = 0;
        for case in 0..600 {
            let mut data = bases[case % bases.len()].clone();
            for _ in 0..1 + next(3) {
                let at = next(data.len());
                match next(3) {
                    0 => data[at] ^= 1 << next(8),
                    1 => data[at] = next(256) as u8,
                    _ => data.truncate(at.max(1)),
                }
            }
            if !strict_readings_fail(&data) {
                continue;
            }
            let hayro = hayro_inflates(&data);
            for chunk in [1, 7, 1500, usize::MAX] {
                assert!(
                    lenient_reading(&data, chunk) == hayro,
                    "case {case}, chunks of {chunk}: {} bytes against hayro's {}",
                    lenient_reading(&data, chunk).len(),
                    hayro.len()
                );
            }
            assert!(
                expanded_len(&[Filter::FlateDecode], &data, 1 << 30) >= Some(hayro.len() as u64)
            );
            compared += 1;
        }
        assert!(
            compared > 200,
            "only {compared} cases both strict readings refuse"
        );
    }

    #[test]
    fn deflate_bombs_only_the_lenient_reading_inflates_are_counted() {
        // A zlib header, then a stored block whose NLEN is wrong (both
        // strict readings stop there; the lenient one ignores it), then a
        // raw deflate bomb.
        let bomb = |inner: &[u8]| {
            let mut data = vec![0x78, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];
            data.extend(miniz_oxide::deflate::compress_to_vec(inner, 9));
            data
        };
        let zeros = vec![0u8; 16 << 20];
        let lenient = bomb(&zeros);
        assert!(strict_readings_fail(&lenient));
        assert_eq!(hayro_inflates(&lenient).len(), 16 << 20, "hayro reads it");
        let flate = [Filter::FlateDecode];
        assert_eq!(expanded_len(&flate, &lenient, 1 << 30), Some(16 << 20));
        assert!(expands_beyond(&flate, &lenient, 15 << 20));
        // Behind another filter, fed in pieces.
        let hex_flate = [Filter::AsciiHexDecode, Filter::FlateDecode];
        assert_eq!(
            expanded_len(&hex_flate, &ascii_hex(&lenient), 1 << 30),
            Some(16 << 20)
        );
        // In front of another deflate stage: the lenient reading's last
        // bytes reach it too (a zlib bomb of 16 MiB).
        let inner = miniz_oxide::deflate::compress_to_vec_zlib(&zeros, 9);
        let flate2 = [Filter::FlateDecode, Filter::FlateDecode];
        assert_eq!(
            expanded_len(&flate2, &bomb(&inner), 1 << 30),
            Some(16 << 20)
        );
        // A chain cut short (a truncated download) takes one reading per
        // way hayro reads each stage, not one per combination of ways
        // (3 x 3 x 3, past MAX_READINGS: refused as a bomb).
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut thrice = text;
        for _ in 0..3 {
            thrice = miniz_oxide::deflate::compress_to_vec_zlib(&thrice, 6);
        }
        thrice.truncate(thrice.len() / 2);
        let flate3 = [
            Filter::FlateDecode,
            Filter::FlateDecode,
            Filter::FlateDecode,
        ];
        assert!(!expands_beyond(&flate3, &thrice, 1 << 20));
    }

    #[test]
    fn filter_chains_are_counted_through_every_stage() {
        let zeros = vec![0u8; 16 << 20];
        let once = miniz_oxide::deflate::compress_to_vec_zlib(&zeros, 9);
        let twice = miniz_oxide::deflate::compress_to_vec_zlib(&once, 9);
        assert!(once.len() < 100_000 && twice.len() < 2_000);
        let flate2 = [Filter::FlateDecode, Filter::FlateDecode];
        assert!(expands_beyond(&flate2, &twice, 15 << 20));
        assert!(!expands_beyond(&flate2, &twice, 16 << 20));
        // The first stage alone is small: only the chain finds the bomb.
        assert!(!expands_beyond(&[Filter::FlateDecode], &twice, 1 << 20));
        // RunLength literal runs carrying the deflate bomb, then deflate.
        let rle: Vec<u8> = once
            .chunks(128)
            .flat_map(|c| std::iter::once(c.len() as u8 - 1).chain(c.iter().copied()))
            .chain([128])
            .collect();
        let rl_flate = [Filter::RunLengthDecode, Filter::FlateDecode];
        assert!(expands_beyond(&rl_flate, &rle, 15 << 20));
        assert!(!expands_beyond(&rl_flate, &rle, 16 << 20));
        // Counting stops at a filter that cannot expand without bound.
        let flate_dct = [Filter::FlateDecode, Filter::DctDecode];
        assert!(!expands_beyond(&flate_dct, &twice, 1 << 20));
        // Behind the ASCII filters.
        let hex = ascii_hex(&once);
        let hex_flate = [Filter::AsciiHexDecode, Filter::FlateDecode];
        assert!(expands_beyond(&hex_flate, &hex, 15 << 20));
        assert!(!expands_beyond(&hex_flate, &hex, 16 << 20));
        let a85_flate = [Filter::Ascii85Decode, Filter::FlateDecode];
        let a85 = base85(&once);
        assert!(expands_beyond(&a85_flate, &a85, 15 << 20));
        assert!(!expands_beyond(&a85_flate, &a85, 16 << 20));
        // ASCII85 decodes exactly: 'z' is four zero bytes.
        let zeros = b"z z\nzz~>";
        assert!(expands_beyond(&[Filter::Ascii85Decode], zeros, 15));
        assert!(!expands_beyond(&[Filter::Ascii85Decode], zeros, 16));
        // LZW after deflate, either code size rule.
        for tiff_switch in [true, false] {
            let lzw = miniz_oxide::deflate::compress_to_vec_zlib(&lzw_zeros(4, tiff_switch), 9);
            let flate_lzw = [Filter::FlateDecode, Filter::LzwDecode];
            assert!(expands_beyond(&flate_lzw, &lzw, 11_000_000));
            assert!(!expands_beyond(&flate_lzw, &lzw, 12_000_000));
        }
    }
}
