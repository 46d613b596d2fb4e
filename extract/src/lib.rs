//! paperhook-extract: one document and one template in, typed fields out.
//!
//! Owns type detection ([`sniff`], which the API and the ZIP reader share),
//! decoding (PDF, PNG, JPEG, TIFF), the per-page text model (PDF text
//! layer or Tesseract OCR), the four locators and post-processing. Leaves
//! storage, queues, billing and delivery to `core` and `worker`: no I/O
//! besides Tesseract reading its language data, no async.
//!
//! Entry points: [`extract`], [`page_count`], [`read_pages`]. Run the
//! process with `OMP_THREAD_LIMIT=1` (see [`ocr`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat};
use rayon::prelude::*;
use serde::Serialize;

pub mod error;
pub mod layout;
mod locate;
pub mod ocr;
mod pdf;
pub mod post;
pub mod raster;
pub mod sniff;
pub mod template;

pub use error::Error;
pub use layout::{BBox, PageText, Source, Word};
pub use template::{Template, TemplateError, with_regex_cache};

use crate::locate::{select, words_in_box};
use crate::ocr::Psm;
use crate::template::Locator;

/// Limits and settings for one extraction. `Default` is what the worker uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most pages a document may have (`page_limit_exceeded`).
    pub max_pages: u32,
    /// Most pixels of one decoded image page or rendered PDF page. Images
    /// above it fail (`image_too_large`); PDF pages are rendered at a lower
    /// DPI to fit, and fail (`page_too_large`) below 100 DPI.
    pub max_pixels_per_page: u64,
    /// Longest side of a decoded image, in pixels.
    pub max_side: u32,
    /// Most times a PDF page to be rendered may paint its own area (shapes
    /// by their bounding boxes, clips and glyphs): the renderer's memory
    /// grows with it, about 100 KB per page area at 300 DPI
    /// (`page_too_complex`).
    pub max_page_overdraw: u32,
    /// Most glyphs the text layers of a PDF's pages may draw in all
    /// (`text_too_large`): every glyph read is kept, and a small content
    /// stream shared by every page can draw millions on each.
    pub max_text_glyphs: u64,
    /// Most bytes of text the text layers of a PDF's pages may keep in all
    /// (`text_too_large`): a font's ToUnicode map can give one glyph a
    /// long text (each glyph keeps at most 32 characters of it).
    pub max_text_bytes: u64,
    /// Most bytes one PDF stream (or a page's content streams together)
    /// may decode to (`stream_too_large`): hayro decodes streams whole.
    pub max_pdf_stream_bytes: u64,
    /// Most objects a PDF's cross-reference data may list, and its object
    /// streams hold together (`document_too_complex`, when it is opened):
    /// each takes some tens of bytes.
    pub max_pdf_objects: u64,
    /// Most bytes the extracted values (and their field names) may take as
    /// JSON (`result_too_large`): 200 region fields over a page of text
    /// each copy the page.
    pub max_result_bytes: u64,
    /// Most values one regex field with `occurrence: "all"` may collect in
    /// a document (`match_limit_exceeded`).
    pub max_field_matches: usize,
    /// Most bytes `replace` rules may add to the values of one extraction
    /// (`replace_limit_exceeded`).
    pub max_replace_growth_bytes: usize,
    /// Highest rendering resolution for OCR, whatever `dpi` or a
    /// template's `dpi` (72-600) asks.
    pub max_render_dpi: u32,
    /// Most drawing operations (shapes, clips, text runs, images, forms,
    /// marked content) the pages of a PDF may make in all when their text
    /// is read (`document_too_complex`), and one page before it is
    /// rendered: the time a few kilobytes of forms drawing each other can
    /// take grows exponentially with their depth.
    pub max_drawing_operations: u64,
    /// Rendering resolution for OCR (a template's `dpi` overrides it).
    pub dpi: u32,
    /// Wall time one page may take (text layer, or render + OCR); checked
    /// between stages and at every drawing operation while a PDF page is
    /// read or measured (`timeout`).
    pub page_time_limit: Duration,
    /// Wall time the whole document may take; checked before and between
    /// the stages of every page, and like the page's inside PDF pages
    /// (`document_timeout`, not worth retrying).
    pub document_time_limit: Duration,
    /// Tesseract data directory; `None` uses the system default.
    pub tessdata: Option<String>,
    /// Languages to use instead of the template's.
    pub languages: Option<Vec<String>>,
    /// Detect 90/180/270° rotation of scans.
    pub detect_orientation: bool,
    /// Straighten scans skewed by up to 5°.
    pub deskew: bool,
    /// OCR only the boxes of region fields when no field needs the whole
    /// page; `false` always OCRs whole pages.
    pub zonal: bool,
}

impl Options {
    /// How long a caller should wait for an extraction before giving it up:
    /// the document's limit plus one page's, since the limits are checked
    /// between the stages of a page and a render cannot be interrupted.
    pub fn give_up_after(&self) -> Duration {
        self.document_time_limit + self.page_time_limit
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_pages: 500,
            max_pixels_per_page: 60_000_000,
            max_side: 30_000,
            max_page_overdraw: 1000,
            max_text_glyphs: 2_000_000,
            max_text_bytes: 64 << 20,
            max_pdf_stream_bytes: 256 << 20,
            max_pdf_objects: 1_000_000,
            max_result_bytes: 16 << 20,
            max_field_matches: template::MAX_MATCHES,
            max_replace_growth_bytes: post::MAX_REPLACE_GROWTH_BYTES,
            max_render_dpi: 600,
            max_drawing_operations: 10_000_000,
            dpi: 300,
            page_time_limit: Duration::from_secs(60),
            document_time_limit: Duration::from_secs(1800),
            tessdata: None,
            languages: None,
            detect_orientation: true,
            deskew: true,
            zonal: true,
        }
    }
}

/// Where a located field was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldMeta {
    /// 1-based page.
    pub page: u32,
    /// `[left, top, right, bottom]` in 0..1 of the upright page.
    pub bbox: BBox,
    /// Mean word confidence, 0..1 (1 for the text layer).
    pub confidence: f32,
    pub source: Source,
}

/// The result of one extraction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extraction {
    /// `{field: value}`: the seed's `result` object. Every template field
    /// is present; one not found is `null` or its default.
    pub result: serde_json::Map<String, serde_json::Value>,
    /// Per located field (not for defaults or misses).
    pub fields: BTreeMap<String, FieldMeta>,
    pub pages: u32,
    /// Required fields that were not found, in template order.
    pub missing_required: Vec<String>,
    /// Time spent turning pages into pixels and reading them.
    #[serde(skip)]
    pub timings: Timings,
}

/// Time spent in the expensive stages, summed over pages. Pages run in
/// parallel, so a sum can exceed the wall time of the extraction. Zero
/// when a stage did not run (a digital PDF is neither rendered nor OCRed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Decoding images and rasterising PDF pages for OCR.
    pub render: Duration,
    /// Orientation, deskew and Tesseract.
    pub ocr: Duration,
}

/// [`Timings`] as the parallel page readers add to them.
#[derive(Default)]
struct Clock {
    render_ns: AtomicU64,
    ocr_ns: AtomicU64,
}

impl Clock {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn timings(&self) -> Timings {
        Timings {
            render: Duration::from_nanos(self.render_ns.load(Ordering::Relaxed)),
            ocr: Duration::from_nanos(self.ocr_ns.load(Ordering::Relaxed)),
        }
    }
}

/// Document kinds recognised from their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pdf,
    Png,
    Jpeg,
    Tiff,
}

fn sniff(doc: &[u8]) -> Result<Kind, Error> {
    use crate::sniff::DocType;
    if doc.is_empty() {
        return Err(Error::Empty);
    }
    match sniff::detect(doc) {
        Some(DocType::Pdf) => return Ok(Kind::Pdf),
        Some(DocType::Png) => return Ok(Kind::Png),
        Some(DocType::Jpeg) => return Ok(Kind::Jpeg),
        Some(DocType::Tiff) => return Ok(Kind::Tiff),
        Some(DocType::Zip) | None => {}
    }
    let head: String = doc.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let found = match doc {
        [b'P', b'K', ..] => "a ZIP archive".to_owned(),
        [b'G', b'I', b'F', ..] => "a GIF image".to_owned(),
        [b'R', b'I', b'F', b'F', ..] => "a RIFF/WebP file".to_owned(),
        _ if std::str::from_utf8(&doc[..doc.len().min(512)]).is_ok() => "plain text".to_owned(),
        _ => format!("unknown bytes {head}"),
    };
    Err(Error::UnsupportedType { found })
}

/// Number of pages, cheaply: the PDF page tree, TIFF directories, 1 for
/// other images (TIFF directories counted up to `opts.max_pages` + 1,
/// within `opts.document_time_limit`).
pub fn page_count(doc: &[u8], opts: &Options) -> Result<u32, Error> {
    guard(|| page_count_inner(doc, opts))
}

fn page_count_inner(doc: &[u8], opts: &Options) -> Result<u32, Error> {
    match sniff(doc)? {
        Kind::Pdf => {
            let limits = pdf::limits(opts.max_pages, opts);
            Ok(pdf::open(doc, limits)?.pages().len() as u32)
        }
        Kind::Tiff => raster::tiff_page_count(doc, opts, Instant::now()),
        Kind::Png | Kind::Jpeg => Ok(1),
    }
}

/// What OCR has to cover on one page.
#[derive(Debug, Clone)]
enum Need {
    /// The text layer is enough.
    Nothing,
    /// The whole page.
    Full,
    /// Only these boxes.
    Zones(Vec<[f64; 4]>),
}

/// A page's pixels, rendered or decoded.
enum Pixels<'a> {
    Pdf(usize),
    Image(&'a GrayImage),
}

/// Segmentation mode for whole pages.
const FULL_PSM: Psm = Psm::Auto;
/// Embedded PDF images may be larger than a rendered page (a 600 DPI scan
/// placed on a page rendered at 300 DPI), within reason.
fn embedded_image_limit(opts: &Options) -> u64 {
    opts.max_pixels_per_page.saturating_mul(4)
}

/// Fewer text-layer words than this and the page is treated as a scan.
const MIN_LAYER_WORDS: usize = 3;
/// Extra margin around OCR zones, as a fraction of the page: wide enough
/// for a skew's drift sideways, short enough vertically not to pull in
/// the neighbouring lines (which cost time and confuse segmentation).
const ZONE_MARGIN_X: f64 = 0.015;
const ZONE_MARGIN_Y: f64 = 0.006;
/// A full-page OCR below this mean confidence triggers the 180° check.
const LOW_CONFIDENCE: f32 = 0.70;
/// The same for the substantial words of OCR zones, which hold short
/// values (codes, amounts) read less surely than running text.
const LOW_ZONE_CONFIDENCE: f32 = 0.55;

struct Plan<'a> {
    languages: String,
    tessdata: Option<&'a str>,
    dpi: u32,
    opts: &'a Options,
    clock: &'a Clock,
    /// When work on the document began.
    started: Instant,
}

impl Plan<'_> {
    /// A meter with the document's limits on interpreting PDF pages.
    fn meter(&self) -> pdf::Meter {
        pdf::Meter::new(self.opts, self.started)
    }

    /// OCR of an image of the page whose work began at `start`; stops at
    /// the page's time limit (the caller's next [`deadline_check`] says so).
    fn recognise(
        &self,
        img: &GrayImage,
        dpi: u32,
        psm: Psm,
        start: Instant,
    ) -> Result<Vec<ocr::PxWord>, Error> {
        let deadline =
            (start + self.opts.page_time_limit).min(self.started + self.opts.document_time_limit);
        ocr::recognise(img, dpi, psm, &self.languages, self.tessdata, deadline)
    }
}

/// Keeps page-sized buffers in the process's heap between pages, for a
/// process that renders or reads many pages (the worker calls it at start).
///
/// A 300 DPI A4 page is a 35 MB RGBA pixmap plus an 8.7 MB grey image.
/// glibc serves blocks that large with a fresh `mmap` and unmaps them on
/// free (its threshold is at most 32 MB), so every page paid some 10,000
/// page faults: more than half of a 300 DPI render. Raising the mmap
/// threshold to 256 MB and the trim threshold to 1 GB keeps freed pages
/// for the next one (rendering 2.3x faster at 300 DPI; BENCHMARKS.md).
/// The cost: the process holds on to the memory of its largest pages, per
/// thread that rendered them, instead of returning it at once. Returns
/// whether the C library took the setting (false off glibc).
pub fn keep_page_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two of glibc's malloc parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The text of every page: the PDF text layer where usable, OCR elsewhere
/// (only the zones of region fields when nothing needs the full page).
pub fn read_pages(doc: &[u8], template: &Template, opts: &Options) -> Result<Vec<PageText>, Error> {
    guard(|| read_pages_inner(doc, template, opts, &Clock::default()))
}

/// Parsers of hostile input are the likeliest place for a bug: a panic in
/// one (on any rayon thread) becomes a `corrupt_document` error instead of
/// taking the worker down. Allocation failures are prevented by the pixel
/// limits, as they abort rather than unwind.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(error::decoder_text)
            .or_else(|| panic.downcast_ref::<String>().map(error::decoder_text))
            .unwrap_or_else(|| "unknown".into());
        Err(Error::Corrupt {
            kind: "document",
            detail: format!("the decoder failed on it ({detail})"),
        })
    })
}

fn read_pages_inner(
    doc: &[u8],
    template: &Template,
    opts: &Options,
    clock: &Clock,
) -> Result<Vec<PageText>, Error> {
    let kind = sniff(doc)?;
    let languages = opts
        .languages
        .as_ref()
        .unwrap_or(&template.languages)
        .join("+");
    let plan = Plan {
        languages,
        tessdata: opts.tessdata.as_deref(),
        // An operator's max_render_dpi caps what a template asks.
        dpi: template
            .dpi
            .unwrap_or(opts.dpi)
            .clamp(72, opts.max_render_dpi.clamp(72, 600)),
        opts,
        clock,
        started: Instant::now(),
    };
    match kind {
        Kind::Pdf => {
            let limits = pdf::limits(opts.max_pages, opts);
            let pdf = pdf::open(doc, limits)?;
            // Read to max_pages + 1 at the most.
            let n = pdf.pages().len();
            if n == 0 {
                return Err(Error::Corrupt {
                    kind: "PDF",
                    detail: "the document has no pages".into(),
                });
            }
            if n > opts.max_pages as usize {
                return Err(Error::PageLimitReached {
                    max: opts.max_pages,
                });
            }
            // Within the limits (a scope of them also covers the inline
            // images of content streams, which are read apart from their
            // document and would decode without bound).
            let sizes = limits.scope(|| {
                pdf::check_streams(&pdf, embedded_image_limit(opts), &limits, &|| {
                    document_deadline(&plan, 0)
                })
            })?;
            // One meter for every page: the limits are the document's.
            let mut meter = plan.meter();
            let mut pages = pdf::Pages::new(doc, &sizes, limits, pdf);
            let layer: Vec<PageText> = (0..n)
                .map(|i| {
                    document_deadline(&plan, i)?;
                    let pdf = pages.for_page(i)?;
                    meter.start_page(Instant::now(), opts.page_time_limit);
                    limits.scope(|| pdf::page_text(pdf, i, &mut meter))
                })
                .collect::<Result<_, _>>()?;
            let needs: Vec<Need> = layer
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    if p.words.len() >= MIN_LAYER_WORDS {
                        Need::Nothing
                    } else {
                        ocr_need(template, opts, i, n)
                    }
                })
                .collect();
            let todo: Vec<usize> = (0..n)
                .filter(|&i| !matches!(needs[i], Need::Nothing))
                .collect();
            drop(pages);
            let ocred: Vec<(usize, PageText)> = todo
                .par_iter()
                .map_init(
                    || pdf::Pages::open(doc, &sizes, limits),
                    |pages, &i| {
                        let pdf = pages
                            .as_mut()
                            .map_err(|e| Error::Corrupt {
                                kind: "PDF",
                                detail: e.to_string(),
                            })?
                            .for_page(i)?;
                        limits
                            .scope(|| ocr_page(&plan, Some(pdf), Pixels::Pdf(i), i, &needs[i]))
                            .map(|p| (i, p))
                    },
                )
                .collect::<Result<_, _>>()?;
            let mut pages = layer;
            for (i, p) in ocred {
                pages[i] = p;
            }
            Ok(pages)
        }
        Kind::Png | Kind::Jpeg => {
            let format = if kind == Kind::Png {
                ImageFormat::Png
            } else {
                ImageFormat::Jpeg
            };
            let decoding = Instant::now();
            let image = raster::decode_single(doc, format, opts)?;
            Clock::add(&clock.render_ns, decoding);
            Ok(vec![ocr_page(
                &plan,
                None,
                Pixels::Image(&image),
                0,
                &ocr_need(template, opts, 0, 1),
            )?])
        }
        Kind::Tiff => {
            let n = raster::tiff_page_count(doc, opts, plan.started)? as usize;
            if n > opts.max_pages as usize {
                // Counted no further.
                return Err(Error::PageLimitReached {
                    max: opts.max_pages,
                });
            }
            // Decode a batch of one page per thread, OCR it in parallel,
            // drop it: memory stays at a few pages whatever the count.
            let mut reader = raster::TiffPages::new(doc, opts)?;
            let batch = rayon::current_num_threads().max(1);
            let mut pages = Vec::with_capacity(n);
            loop {
                let mut images = Vec::with_capacity(batch);
                let decoding = Instant::now();
                while images.len() < batch {
                    document_deadline(&plan, pages.len() + images.len())?;
                    match reader.next_page() {
                        Some(img) => images.push(img?),
                        None => break,
                    }
                }
                Clock::add(&clock.render_ns, decoding);
                if images.is_empty() {
                    break;
                }
                let first = pages.len();
                let done: Vec<PageText> = images
                    .par_iter()
                    .enumerate()
                    .map(|(k, img)| {
                        let i = first + k;
                        ocr_page(
                            &plan,
                            None,
                            Pixels::Image(img),
                            i,
                            &ocr_need(template, opts, i, n),
                        )
                    })
                    .collect::<Result<_, _>>()?;
                pages.extend(done);
            }
            Ok(pages)
        }
    }
}

/// Full-page OCR if any field (or a keyword) needs the page's whole text,
/// else the boxes of the region fields that look at this page.
fn ocr_need(template: &Template, opts: &Options, index: usize, pages: usize) -> Need {
    let full = !opts.zonal
        || !template.keywords.is_empty()
        || template
            .fields
            .iter()
            .any(|f| !matches!(f.locator, Locator::Region(_)));
    if full {
        return Need::Full;
    }
    let zones: Vec<[f64; 4]> = template
        .fields
        .iter()
        .filter_map(|f| match &f.locator {
            Locator::Region(r) if select(r.page, pages).contains(&index) => Some(r.bbox),
            _ => None,
        })
        .collect();
    if zones.is_empty() {
        Need::Nothing
    } else {
        Need::Zones(zones)
    }
}

fn deadline_check(start: Instant, plan: &Plan<'_>, index: usize) -> Result<(), Error> {
    document_deadline(plan, index)?;
    if start.elapsed() > plan.opts.page_time_limit {
        return Err(Error::Timeout {
            page: index as u32 + 1,
            limit_ms: plan.opts.page_time_limit.as_millis() as u64,
        });
    }
    Ok(())
}

/// The whole document's time limit, checked before page `index` (0-based)
/// and between its stages.
fn document_deadline(plan: &Plan<'_>, index: usize) -> Result<(), Error> {
    within_time(
        plan.started,
        plan.opts.document_time_limit,
        index as u32 + 1,
    )
}

/// A document's time `limit` from `started`, checked at page `page`
/// (1-based).
fn within_time(started: Instant, limit: Duration, page: u32) -> Result<(), Error> {
    if started.elapsed() > limit {
        return Err(Error::DocumentTimeout {
            page,
            limit_secs: limit.as_secs_f64(),
        });
    }
    Ok(())
}

fn ocr_page(
    plan: &Plan<'_>,
    pdf: Option<&hayro::hayro_interpret::hayro_syntax::Pdf>,
    pixels: Pixels<'_>,
    index: usize,
    need: &Need,
) -> Result<PageText, Error> {
    let start = Instant::now();
    let number = index as u32 + 1;
    let (img, dpi) = match (pixels, pdf) {
        (Pixels::Pdf(i), Some(pdf)) => {
            // The page's own budget (its text layer, the same work, was
            // read within the document's) and time limits.
            let mut meter = plan.meter();
            meter.start_page(start, plan.opts.page_time_limit);
            let (img, dpi) = pdf::render(
                pdf,
                i,
                plan.dpi,
                plan.opts.max_pixels_per_page,
                plan.opts.max_page_overdraw,
                &mut meter,
            )?;
            Clock::add(&plan.clock.render_ns, start);
            (std::borrow::Cow::Owned(img), dpi.round() as u32)
        }
        (Pixels::Image(img), _) => {
            // Images carry no reliable DPI: estimate it from an A4/Letter
            // page width (8.27 in), clamped to a plausible scan range.
            let dpi = (img.width().min(img.height()) as f64 / 8.27).clamp(100.0, 600.0) as u32;
            (std::borrow::Cow::Borrowed(img), dpi)
        }
        (Pixels::Pdf(_), None) => {
            return Err(Error::Corrupt {
                kind: "PDF",
                detail: "no parser".into(),
            });
        }
    };
    deadline_check(start, plan, index)?;
    let reading = Instant::now();
    let mut img = img.into_owned();
    if plan.opts.detect_orientation && raster::lines_vertical(&img) {
        img = raster::rotate_quarter(&img, 1);
    }
    if plan.opts.deskew {
        let angle = raster::skew_angle(&img, 5.0);
        if angle.abs() >= 0.15 {
            img = raster::rotate_small(&img, -angle);
        }
    }
    deadline_check(start, plan, index)?;
    let words = match need {
        Need::Nothing => Vec::new(),
        Need::Full => {
            let (w, h) = img.dimensions();
            let words = plan.recognise(&img, dpi, FULL_PSM, start)?;
            let mut words = ocr::normalise(words, 0, 0, w, h);
            if plan.opts.detect_orientation && mean_conf(&words) < LOW_CONFIDENCE {
                deadline_check(start, plan, index)?;
                let flipped = raster::rotate_quarter(&img, 2);
                let other =
                    ocr::normalise(plan.recognise(&flipped, dpi, FULL_PSM, start)?, 0, 0, w, h);
                if score(&other) > score(&words) {
                    words = other;
                    img = flipped;
                }
            }
            deadline_check(start, plan, index)?;
            let missed = recover_missed(plan, &img, dpi, &words, start, index)?;
            words.extend(missed);
            words
        }
        Need::Zones(zones) => {
            let mut words = ocr_zones(plan, &img, dpi, zones, start)?;
            // Judge by the substantial words only (bits of neighbouring
            // lines cut by the margin are unsure even upright); none at
            // all is what an upside-down page gives.
            let solid: Vec<Word> = words
                .iter()
                .filter(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
                .cloned()
                .collect();
            if plan.opts.detect_orientation
                && (solid.is_empty() || mean_conf(&solid) < LOW_ZONE_CONFIDENCE)
            {
                deadline_check(start, plan, index)?;
                let flipped = raster::rotate_quarter(&img, 2);
                let other = ocr_zones(plan, &flipped, dpi, zones, start)?;
                if score(&other) > score(&words) {
                    words = other;
                }
            }
            words
        }
    };
    Clock::add(&plan.clock.ocr_ns, reading);
    deadline_check(start, plan, index)?;
    Ok(PageText::new(number, Source::Ocr, words))
}

/// Most ink regions re-read per page by [`recover_missed`].
const MAX_RECOVER: usize = 60;
/// Ink this close to a recognised word on its row (in word heights; a
/// word space is about a quarter of one or more) belongs to that word.
const NEAR_WORD: f64 = 0.2;

/// Full-page segmentation drops isolated short words (a lone `1` in a
/// quantity column). Find ink that no recognised word covers, in text-sized
/// clusters, and read each cluster as one line.
///
/// Steps: binarise onto a coarse grid; clear cells under recognised words;
/// connected components of the rest; keep those of text height; merge
/// neighbours on a row; OCR each merged box.
fn recover_missed(
    plan: &Plan<'_>,
    img: &GrayImage,
    dpi: u32,
    words: &[Word],
    start: Instant,
    index: usize,
) -> Result<Vec<Word>, Error> {
    let (w, h) = img.dimensions();
    let cell = (dpi / 75).max(1);
    let (gw, gh) = (w.div_ceil(cell) as usize, h.div_ceil(cell) as usize);
    let t = raster::otsu(img);
    let mut grid = vec![0u16; gw * gh];
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] <= t {
            grid[(y / cell) as usize * gw + (x / cell) as usize] += 1;
        }
    }
    // A cell is ink when a good part of it is dark (speckle stays out).
    let min_ink = ((cell * cell) / 6).max(1) as u16;
    let mut ink: Vec<bool> = grid.iter().map(|&c| c >= min_ink).collect();
    let mut heights: Vec<f64> = words
        .iter()
        .map(|wd| (wd.bbox[3] - wd.bbox[1]) * gh as f64)
        .collect();
    heights.sort_by(f64::total_cmp);
    let Some(&word_h) = heights.get(heights.len() / 2) else {
        return Ok(Vec::new());
    };
    for wd in words {
        let x0 = ((wd.bbox[0] * gw as f64) as usize).saturating_sub(1);
        let y0 = ((wd.bbox[1] * gh as f64) as usize).saturating_sub(1);
        let x1 = ((wd.bbox[2] * gw as f64).ceil() as usize + 1).min(gw);
        let y1 = ((wd.bbox[3] * gh as f64).ceil() as usize + 1).min(gh);
        for y in y0..y1 {
            ink[y * gw + x0..y * gw + x1]
                .iter_mut()
                .for_each(|c| *c = false);
        }
    }
    // Connected components (8-neighbour) of the remaining ink.
    let mut boxes: Vec<[usize; 4]> = Vec::new();
    let mut seen = vec![false; gw * gh];
    let mut stack = Vec::new();
    for start in 0..gw * gh {
        if !ink[start] || seen[start] {
            continue;
        }
        let (mut b, mut n) = ([usize::MAX, usize::MAX, 0, 0], 0usize);
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % gw, i / gw);
            b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            n += 1;
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= gw as i64 || ny >= gh as i64 {
                        continue;
                    }
                    let j = ny as usize * gw + nx as usize;
                    if ink[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let (bw, bh) = ((b[2] - b[0]) as f64, (b[3] - b[1]) as f64);
        // Glyph-sized: about a word's height, not a rule or a logo.
        if bh >= 0.45 * word_h && bh <= 2.0 * word_h && bw <= 0.3 * gw as f64 && n >= 3 {
            boxes.push(b);
        }
    }
    // Merge boxes on one row that are close together.
    boxes.sort_by_key(|b| (b[1], b[0]));
    let mut merged: Vec<[usize; 4]> = Vec::new();
    for b in boxes {
        let near = merged.iter_mut().find(|m| {
            let v_overlap = b[3].min(m[3]) as f64 - b[1].max(m[1]) as f64;
            let gap = b[0] as f64 - m[2] as f64;
            v_overlap > 0.5 * (b[3] - b[1]) as f64 && gap < 1.5 * word_h && gap > -(word_h * 4.0)
        });
        match near {
            Some(m) => {
                *m = [
                    m[0].min(b[0]),
                    m[1].min(b[1]),
                    m[2].max(b[2]),
                    m[3].max(b[3]),
                ]
            }
            None => merged.push(b),
        }
    }
    // Recognised words in grid units, to tell each cluster's neighbours.
    let known: Vec<[f64; 4]> = words
        .iter()
        .map(|wd| {
            let b = wd.bbox;
            [
                b[0] * gw as f64,
                b[1] * gh as f64,
                b[2] * gw as f64,
                b[3] * gh as f64,
            ]
        })
        .collect();
    let mut out = Vec::new();
    for b in merged.into_iter().take(MAX_RECOVER) {
        let [bx0, by0, bx1, by1] = b.map(|v| v as f64);
        let beside: Vec<&[f64; 4]> = known
            .iter()
            .filter(|k| layout::same_row(k, &[bx0, by0, bx1, by1]))
            .collect();
        // Ink closer to a word on its row than a word space is that
        // word's own, outside the box Tesseract gave it ("Gl" of
        // "Globex"): reading it again would only duplicate it.
        if beside
            .iter()
            .any(|k| (k[0] - bx1).max(bx0 - k[2]) < NEAR_WORD * word_h)
        {
            continue;
        }
        // The crop's margin stops at its neighbours: a piece of one in the
        // crop gets read into the missed word's box.
        let left = beside
            .iter()
            .map(|k| k[2])
            .filter(|&x| x <= bx0)
            .fold(0.0, f64::max);
        let right = beside
            .iter()
            .map(|k| k[0])
            .filter(|&x| x >= bx1)
            .fold(gw as f64, f64::min);
        deadline_check(start, plan, index)?;
        let pad = (word_h * 0.6).ceil();
        let x0 = (((bx0 - pad).max(left).max(0.0)) as u32 * cell).min(w - 1);
        let y0 = (b[1].saturating_sub(pad as usize) as u32 * cell).min(h - 1);
        let x1 = (((bx1 + pad).min(right).ceil()) as u32 * cell)
            .min(w)
            .max(x0 + 1);
        let y1 = (((b[3] + pad as usize) as u32) * cell).min(h);
        let crop = image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
        let found = plan.recognise(&crop, dpi, Psm::SingleLine, start)?;
        out.extend(
            ocr::normalise(found, x0, y0, w, h)
                .into_iter()
                .filter(|wd| wd.confidence >= 0.6 && wd.text.chars().any(char::is_alphanumeric))
                .filter(|wd| !repeats_neighbour(wd, words, word_h / gh as f64)),
        );
    }
    Ok(out)
}

/// Whether a re-read word repeats the start of the recognised word just
/// after it on its row, or the end of the one just before, with less than
/// a word space between ([`NEAR_WORD`]): the glyphs Tesseract read as part
/// of that word but left out of its box ("G" before "Globex"). A word a
/// space away is a word of its own (a missed quantity "1" before "10.00").
/// Letters OCR confuses count as equal.
fn repeats_neighbour(found: &Word, words: &[Word], word_h: f64) -> bool {
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .map(|c| match c.to_ascii_lowercase() {
                'i' | '1' | '|' => 'l',
                '0' => 'o',
                c => c,
            })
            .collect()
    };
    let text = fold(&found.text);
    let b = found.bbox;
    !text.is_empty()
        && words.iter().any(|k| {
            let o = k.bbox;
            let near = NEAR_WORD * word_h;
            let after = o[0] >= b[0] && o[0] - b[2] < near;
            let before = o[2] <= b[2] && b[0] - o[2] < near;
            layout::same_row(&b, &o)
                && ((after && fold(&k.text).starts_with(&text))
                    || (before && fold(&k.text).ends_with(&text)))
        })
}

fn mean_conf(words: &[Word]) -> f32 {
    if words.is_empty() {
        return 0.0;
    }
    words.iter().map(|w| w.confidence).sum::<f32>() / words.len() as f32
}

/// Confidence mass of plausible words: prefers the orientation that reads
/// more text, more surely.
fn score(words: &[Word]) -> f32 {
    words
        .iter()
        .filter(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count() >= 2)
        .map(|w| w.confidence)
        .sum()
}

fn ocr_zones(
    plan: &Plan<'_>,
    img: &GrayImage,
    dpi: u32,
    zones: &[[f64; 4]],
    start: Instant,
) -> Result<Vec<Word>, Error> {
    let (w, h) = img.dimensions();
    let threshold = raster::otsu(img);
    let mut words: Vec<Word> = Vec::new();
    for z in zones {
        let px = |v: f64, max: u32| ((v.clamp(0.0, 1.0)) * max as f64).round() as u32;
        let x0 = px(z[0] - ZONE_MARGIN_X, w);
        let y0 = px(z[1] - ZONE_MARGIN_Y, h);
        let x1 = px(z[2] + ZONE_MARGIN_X, w).max(x0 + 1).min(w);
        let y1 = px(z[3] + ZONE_MARGIN_Y, h).max(y0 + 1).min(h);
        let mut crop = image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
        // The box's own rows within the crop.
        let keep = px(z[1], h).saturating_sub(y0)..px(z[3], h).saturating_sub(y0);
        raster::clear_cut_lines(&mut crop, threshold, keep);
        let found = plan.recognise(&crop, dpi, Psm::SingleBlock, start)?;
        for word in ocr::normalise(found, x0, y0, w, h) {
            // Overlapping zones see the same word twice: keep one.
            let dup = words.iter().any(|o| {
                o.text == word.text
                    && (o.bbox[0] - word.bbox[0]).abs() < 0.005
                    && (o.bbox[1] - word.bbox[1]).abs() < 0.005
            });
            if !dup {
                words.push(word);
            }
        }
    }
    Ok(words)
}

fn normalise_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Extract a template's fields from a document.
///
/// Steps: validate the template; read every page (text layer or OCR);
/// check the keywords; locate and type each field.
pub fn extract(doc: &[u8], template: &Template, opts: &Options) -> Result<Extraction, Error> {
    template::with_regex_cache(|| extract_inner(doc, template, opts))
}

fn extract_inner(doc: &[u8], template: &Template, opts: &Options) -> Result<Extraction, Error> {
    // Locating fields counts toward the document's time limit too.
    let until = locate::Until(Instant::now() + opts.document_time_limit);
    template.validate()?;
    let clock = Clock::default();
    let pages = guard(|| read_pages_inner(doc, template, opts, &clock))?;
    if !template.keywords.is_empty() {
        let all: String = pages
            .iter()
            .map(|p| normalise_ws(&p.text))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(k) = template
            .keywords
            .iter()
            .find(|k| !all.contains(&normalise_ws(k)))
        {
            return Err(Error::TemplateMismatch {
                keyword: k.clone(),
                no_text: all.trim().is_empty(),
            });
        }
    }
    let languages = opts.languages.as_ref().unwrap_or(&template.languages);
    let mut out = Extraction {
        result: serde_json::Map::new(),
        fields: BTreeMap::new(),
        pages: pages.len() as u32,
        missing_required: Vec::new(),
        timings: clock.timings(),
    };
    let budget = post::ReplaceBudget::new(opts.max_replace_growth_bytes);
    // What the values (and their names) take as JSON so far: `{` and `}`,
    // and `"name":value` and a comma for each field but the last.
    let mut result_bytes = 1u64;
    for field in &template.fields {
        let post = post::Post::new(field, languages, &budget);
        let located = locate::locate(&field.locator, &pages, &post, until, opts.max_field_matches)
            .map_err(|stop| match stop {
                locate::Stop::TooManyMatches => Error::MatchLimit {
                    field: field.name.clone(),
                    max: opts.max_field_matches,
                },
                locate::Stop::Deadline { page } => Error::DocumentTimeout {
                    page,
                    limit_secs: opts.document_time_limit.as_secs_f64(),
                },
            })?;
        if post.over_budget() {
            return Err(Error::ReplaceLimit {
                field: field.name.clone(),
                max_bytes: opts.max_replace_growth_bytes,
            });
        }
        match located {
            Some(f) => {
                out.result.insert(field.name.clone(), f.value);
                out.fields.insert(
                    field.name.clone(),
                    FieldMeta {
                        page: f.page,
                        bbox: f.bbox,
                        confidence: f.confidence,
                        source: f.source,
                    },
                );
            }
            None => {
                let default = match field.default.clone() {
                    None => serde_json::Value::Null,
                    // The field's value is an array: so is its default.
                    Some(v) if field.is_list() && !v.is_array() && !v.is_null() => {
                        serde_json::Value::Array(vec![v])
                    }
                    Some(v) => v,
                };
                if field.required && default.is_null() {
                    out.missing_required.push(field.name.clone());
                }
                out.result.insert(field.name.clone(), default);
            }
        }
        result_bytes += json_len(&field.name) + json_len(&out.result[&field.name]) + 2;
        if result_bytes > opts.max_result_bytes {
            return Err(Error::ResultTooLarge {
                field: field.name.clone(),
                max_bytes: opts.max_result_bytes,
            });
        }
    }
    Ok(out)
}

/// The length of `value` as JSON, counted without building it.
fn json_len(value: &(impl Serialize + ?Sized)) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing JSON values into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Render one page (1-based) in grey: a PDF page at `dpi`, an image's page
/// (a TIFF's, or a PNG's or JPEG's only one) as it is, within the limits of
/// `opts` (for tools, benchmarks, test scans and template previews).
pub fn render_page(doc: &[u8], page: u32, dpi: u32, opts: &Options) -> Result<GrayImage, Error> {
    let started = Instant::now();
    let kind = sniff(doc)?;
    if kind != Kind::Pdf {
        return guard(|| image_page(doc, kind, page, opts));
    }
    guard(|| render_pdf_page(doc, page, dpi, opts, started))
}

fn render_pdf_page(
    doc: &[u8],
    page: u32,
    dpi: u32,
    opts: &Options,
    started: Instant,
) -> Result<GrayImage, Error> {
    // The page tree read to the page asked for (and one more).
    let limits = pdf::limits(page, opts);
    let pdf = pdf::open(doc, limits)?;
    let sizes = limits.scope(|| {
        pdf::check_streams(&pdf, embedded_image_limit(opts), &limits, &|| {
            within_time(started, opts.document_time_limit, page)
        })
    })?;
    let n = pdf.pages().len() as u32;
    if page == 0 || page > n {
        return Err(Error::Corrupt {
            kind: "PDF",
            detail: format!("page {page} does not exist; the document has {n}"),
        });
    }
    let mut pages = pdf::Pages::new(doc, &sizes, limits, pdf);
    let pdf = pages.for_page(page as usize - 1)?;
    let mut meter = pdf::Meter::new(opts, started);
    meter.start_page(started, opts.page_time_limit);
    let rendered = limits.scope(|| {
        pdf::render(
            pdf,
            page as usize - 1,
            dpi,
            opts.max_pixels_per_page,
            opts.max_page_overdraw,
            &mut meter,
        )
    })?;
    Ok(rendered.0)
}

/// Page `page` (1-based) of an image document, decoded as extraction
/// decodes it.
fn image_page(doc: &[u8], kind: Kind, page: u32, opts: &Options) -> Result<GrayImage, Error> {
    let started = Instant::now();
    let (name, n) = match kind {
        // Counted as far as the page asked for: rendering one page of a
        // long TIFF (a preview, limited to its first pages) needs no more.
        Kind::Tiff => ("TIFF", raster::tiff_pages_up_to(doc, page, opts, started)?),
        Kind::Png => ("PNG", 1),
        Kind::Jpeg | Kind::Pdf => ("JPEG", 1),
    };
    if page == 0 || page > n {
        return Err(Error::Corrupt {
            kind: name,
            detail: format!("page {page} does not exist; the document has {n}"),
        });
    }
    match kind {
        Kind::Png => raster::decode_single(doc, ImageFormat::Png, opts),
        Kind::Jpeg | Kind::Pdf => raster::decode_single(doc, ImageFormat::Jpeg, opts),
        Kind::Tiff => {
            let mut pages = raster::TiffPages::new(doc, opts)?;
            for before in 1..page {
                within_time(started, opts.document_time_limit, before)?;
                pages.next_page().transpose()?;
            }
            pages.next_page().unwrap_or_else(|| {
                Err(Error::Corrupt {
                    kind: name,
                    detail: format!("page {page} could not be read"),
                })
            })
        }
    }
}

/// Words of a page inside a normalised box, joined in reading order (for
/// tools that show what a region covers).
pub fn text_in_box(page: &PageText, bbox: &[f64; 4]) -> String {
    page.join(&words_in_box(page, bbox))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, x0: f64, x1: f64) -> Word {
        Word {
            text: text.into(),
            bbox: [x0, 0.10, x1, 0.11],
            confidence: 0.9,
        }
    }

    #[test]
    fn a_decoder_panic_is_quoted_short_and_without_control_characters() {
        let err = guard(|| -> Result<(), Error> {
            panic!("index out of bounds\n\u{1b}]0;{}", "\u{0}x".repeat(100_000))
        })
        .unwrap_err();
        assert_eq!(err.code(), "corrupt_document");
        let message = err.to_string();
        assert!(message.chars().count() < 400, "{message}");
        assert!(!message.contains(char::is_control), "{message:?}");
        assert!(
            message.contains("(index out of bounds  ]0; x x x"),
            "{message}"
        );
        assert!(message.ends_with("…)"), "{message}");
    }

    #[test]
    fn a_re_read_piece_of_a_neighbour_is_a_repeat_a_word_a_space_away_is_not() {
        // Word height 0.01: a word space is about 0.003, NEAR_WORD 0.002.
        let h = 0.01;
        let row = [
            word("Globex", 0.172, 0.214),
            word("10.00", 0.30, 0.34),
            word("Box", 0.40, 0.43),
        ];
        // "Gl" left out of Globex's box, read as "GI" or "G", touching it.
        assert!(repeats_neighbour(&word("GI", 0.156, 0.1715), &row, h));
        assert!(repeats_neighbour(&word("G", 0.160, 0.172), &row, h));
        // The end of the word before: "x" of "Box".
        assert!(repeats_neighbour(&word("x", 0.4305, 0.44), &row, h));
        // A missed quantity a word space before "10.00" is a word.
        assert!(!repeats_neighbour(&word("1", 0.290, 0.2965), &row, h));
        // Text that is not the neighbour's start, however close.
        assert!(!repeats_neighbour(&word("Acme", 0.15, 0.171), &row, h));
        // Another row.
        let mut below = word("G", 0.160, 0.172);
        below.bbox[1] = 0.2;
        below.bbox[3] = 0.21;
        assert!(!repeats_neighbour(&below, &row, h));
    }
}
