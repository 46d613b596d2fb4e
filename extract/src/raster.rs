//! Image inputs (PNG, JPEG, multi-page TIFF) and scan clean-up: decoding
//! within pixel limits, small-angle deskew.

use std::io::Cursor;
use std::time::Instant;

use image::{GrayImage, ImageDecoder, ImageFormat, ImageReader, Luma};

use crate::error::decoder_text;
use crate::{Error, Options};

/// Bytes an image decoder may allocate beyond the final grey image (RGBA
/// decoding of a page at the pixel limit).
fn alloc_limit(opts: &Options) -> u64 {
    opts.max_pixels_per_page
        .saturating_mul(4)
        .saturating_add(16 << 20)
}

fn check_size(page: u32, w: u64, h: u64, opts: &Options) -> Result<(), Error> {
    if w == 0 || h == 0 {
        return Err(Error::Corrupt {
            kind: "image",
            detail: format!("page {page} is {w}x{h} pixels"),
        });
    }
    if w.saturating_mul(h) > opts.max_pixels_per_page
        || w > opts.max_side as u64
        || h > opts.max_side as u64
    {
        return Err(Error::ImageTooLarge {
            page,
            width: w,
            height: h,
            max_pixels: opts.max_pixels_per_page,
            max_side: opts.max_side,
        });
    }
    Ok(())
}

/// Decode a PNG or JPEG to grey, rejecting oversized images from their
/// header before any pixel is allocated.
pub fn decode_single(doc: &[u8], format: ImageFormat, opts: &Options) -> Result<GrayImage, Error> {
    let kind = if format == ImageFormat::Png {
        "PNG"
    } else {
        "JPEG"
    };
    let corrupt = |e: image::ImageError| Error::Corrupt {
        kind,
        detail: decoder_text(e),
    };
    let ((w, h), color) = ImageReader::with_format(Cursor::new(doc), format)
        .into_decoder()
        .map(|d| (d.dimensions(), d.color_type()))
        .map_err(corrupt)?;
    check_size(1, w as u64, h as u64, opts)?;
    let mut reader = ImageReader::with_format(Cursor::new(doc), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(opts.max_side);
    limits.max_image_height = Some(opts.max_side);
    limits.max_alloc = Some(alloc_limit(opts));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        // Within the pixel limits (checked above), but too many bytes a
        // pixel (16-bit RGBA: 8) for what the decoder may allocate.
        image::ImageError::Limits(_) => {
            let bytes = u64::from(color.bytes_per_pixel());
            Error::ImageDecodeLimit {
                page: 1,
                detail: format!(
                    "it is {w}x{h} pixels of {bytes} bytes each ({:.0} MB decoded); the decoder may use {:.0} MB (4 bytes a pixel of max_pixels_per_page {}): send it with 8 bits a sample, or fewer pixels",
                    (w as u64 * h as u64 * bytes) as f64 / 1e6,
                    alloc_limit(opts) as f64 / 1e6,
                    opts.max_pixels_per_page
                ),
            }
        }
        e => corrupt(e),
    })?;
    if !img.color().has_alpha() {
        return Ok(img.to_luma8());
    }
    // Transparent pixels are laid over white paper, as a viewer shows
    // them: their colour (often black) is not what the reader sees.
    let la = img.to_luma_alpha8();
    drop(img);
    let (w, h) = la.dimensions();
    let gray = la.pixels().map(|p| over_white(p[0], p[1])).collect();
    GrayImage::from_raw(w, h, gray).ok_or_else(|| Error::Corrupt {
        kind,
        detail: "it has fewer pixels than it declares".into(),
    })
}

/// A grey value `v` with opacity `alpha`, laid over white.
fn over_white(v: u8, alpha: u8) -> u8 {
    let (v, a) = (u32::from(v), u32::from(alpha));
    ((v * a + 255 * (255 - a) + 127) / 255) as u8
}

fn tiff_limits(opts: &Options) -> tiff::decoder::Limits {
    let mut l = tiff::decoder::Limits::default();
    l.decoding_buffer_size = alloc_limit(opts) as usize;
    l.intermediate_buffer_size = alloc_limit(opts) as usize;
    l
}

/// A TIFF page as its directory declares it: width, height, colour type.
type TiffShape = (u32, u32, tiff::ColorType);

fn tiff_err(e: tiff::TiffError, page: u32, opts: &Options) -> Error {
    tiff_page_err(e, page, opts, None)
}

/// A decoder error of page `page`; `shape` when the page's directory was
/// read, so that a decoder limit can be explained with the page's size.
fn tiff_page_err(e: tiff::TiffError, page: u32, opts: &Options, shape: Option<TiffShape>) -> Error {
    match e {
        tiff::TiffError::LimitsExceeded => {
            let limit_mb = alloc_limit(opts) as f64 / 1e6;
            let detail = match shape {
                Some((w, h, color)) => {
                    let bits = u64::from(color.bit_depth()) * u64::from(color.num_samples());
                    let decoded = (w as u64 * h as u64).saturating_mul(bits) / 8;
                    if decoded > alloc_limit(opts) {
                        format!(
                            "it is {w}x{h} pixels of {} samples at {} bits ({:.0} MB decoded); the decoder may use {limit_mb:.0} MB (4 bytes a pixel of max_pixels_per_page {})",
                            color.num_samples(),
                            color.bit_depth(),
                            decoded as f64 / 1e6,
                            opts.max_pixels_per_page
                        )
                    } else {
                        format!(
                            "it is {w}x{h} pixels, but one of its compressed strips or tiles is larger than the decoder's limit of {limit_mb:.0} MB"
                        )
                    }
                }
                None => format!(
                    "its TIFF directory declares more data (tag values such as strip offsets) than the decoder's limit of {limit_mb:.0} MB"
                ),
            };
            Error::ImageDecodeLimit { page, detail }
        }
        tiff::TiffError::UnsupportedError(u) => Error::Corrupt {
            kind: "TIFF",
            detail: format!(
                "page {page} uses an unsupported feature: {}",
                decoder_text(u)
            ),
        },
        e => Error::Corrupt {
            kind: "TIFF",
            detail: format!("page {page}: {}", decoder_text(e)),
        },
    }
}

/// Number of pages (IFDs) of a TIFF, counted up to `opts.max_pages + 1`
/// (a chain of a million tiny directories costs nothing to send), within
/// the document's time limit from `started`, checked at every directory.
pub fn tiff_page_count(doc: &[u8], opts: &Options, started: Instant) -> Result<u32, Error> {
    tiff_pages_up_to(doc, opts.max_pages, opts, started)
}

/// Number of pages (IFDs) of a TIFF, counted up to `limit + 1`, within the
/// document's time limit from `started`.
pub fn tiff_pages_up_to(
    doc: &[u8],
    limit: u32,
    opts: &Options,
    started: Instant,
) -> Result<u32, Error> {
    let mut dec = tiff::decoder::Decoder::new(Cursor::new(doc))
        .map_err(|e| tiff_err(e, 1, opts))?
        .with_limits(tiff_limits(opts));
    let mut n = 1;
    while n <= limit && dec.more_images() {
        crate::within_time(started, opts.document_time_limit, n + 1)?;
        dec.next_image().map_err(|e| tiff_err(e, n + 1, opts))?;
        n += 1;
    }
    Ok(n)
}

/// TIFF pages decoded one at a time, so that only the pages being worked
/// on are in memory.
pub struct TiffPages<'a> {
    dec: tiff::decoder::Decoder<Cursor<&'a [u8]>>,
    next: u32,
    done: bool,
    opts: &'a Options,
}

impl<'a> TiffPages<'a> {
    pub fn new(doc: &'a [u8], opts: &'a Options) -> Result<TiffPages<'a>, Error> {
        let dec = tiff::decoder::Decoder::new(Cursor::new(doc))
            .map_err(|e| tiff_err(e, 1, opts))?
            .with_limits(tiff_limits(opts));
        Ok(TiffPages {
            dec,
            next: 1,
            done: false,
            opts,
        })
    }

    /// The next page in grey (bilevel and 16-bit pages included).
    pub fn next_page(&mut self) -> Option<Result<GrayImage, Error>> {
        if self.done {
            return None;
        }
        let n = self.next;
        if n > 1 {
            if !self.dec.more_images() {
                self.done = true;
                return None;
            }
            if let Err(e) = self.dec.next_image() {
                self.done = true;
                return Some(Err(tiff_err(e, n, self.opts)));
            }
        }
        self.next += 1;
        let page = self.decode(n);
        if page.is_err() {
            self.done = true;
        }
        Some(page)
    }

    fn decode(&mut self, n: u32) -> Result<GrayImage, Error> {
        use tiff::ColorType;
        use tiff::decoder::DecodingResult;
        let opts = self.opts;
        let dec = &mut self.dec;
        let (w, h) = dec.dimensions().map_err(|e| tiff_err(e, n, opts))?;
        check_size(n, w as u64, h as u64, opts)?;
        let color = dec.colortype().map_err(|e| tiff_err(e, n, opts))?;
        let data = dec
            .read_image()
            .map_err(|e| tiff_page_err(e, n, opts, Some((w, h, color))))?;
        let (w, h) = (w as usize, h as usize);
        let (channels, bits) = match color {
            ColorType::Gray(b) => (1, b),
            ColorType::GrayA(b) => (2, b),
            ColorType::RGB(b) => (3, b),
            ColorType::RGBA(b) => (4, b),
            ColorType::CMYK(b) => (4, b),
            other => {
                return Err(Error::Corrupt {
                    kind: "TIFF",
                    detail: format!("page {n} has an unsupported colour type {other:?}"),
                });
            }
        };
        let cmyk = matches!(color, ColorType::CMYK(_));
        let mut gray = Vec::with_capacity(w * h);
        let short = || Error::Corrupt {
            kind: "TIFF",
            detail: format!("page {n} has fewer pixels than it declares"),
        };
        match (data, bits) {
            (DecodingResult::U8(buf), 1) if channels == 1 => {
                let row = w.div_ceil(8);
                if buf.len() < row * h {
                    return Err(short());
                }
                for y in 0..h {
                    for x in 0..w {
                        let bit = (buf[y * row + x / 8] >> (7 - x % 8)) & 1;
                        gray.push(if bit == 1 { 255 } else { 0 });
                    }
                }
            }
            (DecodingResult::U8(buf), 8) => {
                if buf.len() < w * h * channels {
                    return Err(short());
                }
                for px in buf.chunks_exact(channels).take(w * h) {
                    gray.push(luma(px, cmyk));
                }
            }
            (DecodingResult::U16(buf), 16) => {
                if buf.len() < w * h * channels {
                    return Err(short());
                }
                let px8: Vec<u8> = buf.iter().map(|v| (v >> 8) as u8).collect();
                for px in px8.chunks_exact(channels).take(w * h) {
                    gray.push(luma(px, cmyk));
                }
            }
            _ => {
                return Err(Error::Corrupt {
                    kind: "TIFF",
                    detail: format!("page {n} has an unsupported sample format ({color:?})"),
                });
            }
        }
        GrayImage::from_raw(w as u32, h as u32, gray).ok_or_else(short)
    }
}

fn luma(px: &[u8], cmyk: bool) -> u8 {
    if cmyk {
        let k = px[3] as u32;
        let l = (px[0] as u32 * 299 + px[1] as u32 * 587 + px[2] as u32 * 114) / 1000;
        return (255 - (l + k).min(255)) as u8;
    }
    match px.len() {
        1 => px[0],
        2 => over_white(px[0], px[1]),
        n => {
            let l = ((px[0] as u32 * 299 + px[1] as u32 * 587 + px[2] as u32 * 114) / 1000) as u8;
            if n == 4 { over_white(l, px[3]) } else { l }
        }
    }
}

/// Otsu threshold of a grey image.
pub fn otsu(img: &GrayImage) -> u8 {
    // A sample of the pixels gives the same threshold at a fraction of
    // the cost on a 9-megapixel page.
    let mut hist = [0u64; 256];
    for p in img.as_raw().iter().step_by(5) {
        hist[*p as usize] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut sum_b, mut w_b, mut best, mut best_t) = (0.0, 0u64, 0.0, 127u8);
    for (t, &c) in hist.iter().enumerate() {
        w_b += c;
        if w_b == 0 {
            continue;
        }
        let w_f = total - w_b;
        if w_f == 0 {
            break;
        }
        sum_b += t as f64 * c as f64;
        let m_b = sum_b / w_b as f64;
        let m_f = (sum - sum_b) / w_f as f64;
        let between = w_b as f64 * w_f as f64 * (m_b - m_f).powi(2);
        if between > best {
            best = between;
            best_t = t as u8;
        }
    }
    best_t
}

/// Whitens the lines of text that a crop cuts at its top or bottom edge and
/// that end outside `keep` (the rows of the field's own box, in the crop's
/// coordinates): pieces of the neighbouring lines pulled in by the zone's
/// margin. Tesseract reads such half-lines as long strings of nonsense,
/// which cost it several times a clean value; words there lie outside the
/// box, so the region locator would drop them anyway. A line that reaches
/// into `keep`, or ink with no blank row to separate it, is left alone.
///
/// `threshold` is the page's ink threshold ([`otsu`]); a row with at most
/// one dark pixel in a hundred counts as blank (scanner speckle).
pub fn clear_cut_lines(img: &mut GrayImage, threshold: u8, keep: std::ops::Range<u32>) {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return;
    }
    let noise = (w / 100).max(1) as usize;
    let blank: Vec<bool> = img
        .as_raw()
        .chunks_exact(w as usize)
        .map(|row| row.iter().filter(|&&p| p <= threshold).count() <= noise)
        .collect();
    let mut whiten = |rows: std::ops::Range<u32>| {
        for y in rows {
            for x in 0..w {
                img.put_pixel(x, y, Luma([255]));
            }
        }
    };
    // A cut line at the top: ink in the first row, a blank row below it
    // before the box begins.
    if !blank[0]
        && let Some(gap) = blank.iter().position(|&b| b)
        && (gap as u32) <= keep.start
    {
        whiten(0..gap as u32);
    }
    if !blank[h as usize - 1]
        && let Some(gap) = blank.iter().rposition(|&b| b)
        && (gap as u32) + 1 >= keep.end
    {
        whiten(gap as u32 + 1..h);
    }
}

/// Dark pixels of a downscaled copy, as (x, y) in full-size pixels.
fn ink_points(img: &GrayImage, step: u32) -> Vec<(f64, f64)> {
    let t = otsu(img);
    let mut pts = Vec::new();
    for y in (0..img.height()).step_by(step as usize) {
        for x in (0..img.width()).step_by(step as usize) {
            if img.get_pixel(x, y)[0] <= t {
                pts.push((x as f64, y as f64));
            }
        }
    }
    pts
}

/// Skew angle in degrees (text lines rising to the right are positive),
/// found by maximising the variance of the row profile of ink over
/// candidate angles within ±`max_deg`.
pub fn skew_angle(img: &GrayImage, max_deg: f64) -> f64 {
    let step = (img.width().max(img.height()) / 1000).max(1);
    let pts = ink_points(img, step);
    if pts.len() < 50 || pts.len() > 4_000_000 {
        return 0.0;
    }
    let h = img.height() as f64;
    let w = img.width() as f64;
    let bins = (h / step as f64) as usize + (w / step as f64) as usize + 2;
    let score = |deg: f64| {
        let (s, c) = deg.to_radians().sin_cos();
        let mut prof = vec![0u32; bins * 2];
        for &(x, y) in &pts {
            // Row of the point once the page is rotated by -deg.
            let r = (y * c + x * s) / step as f64 + bins as f64;
            if r >= 0.0 && (r as usize) < prof.len() {
                prof[r as usize] += 1;
            }
        }
        prof.iter().map(|&v| (v as f64).powi(2)).sum::<f64>()
    };
    let mut best = (score(0.0), 0.0);
    let mut deg = -max_deg;
    while deg <= max_deg + 1e-9 {
        let s = score(deg);
        if s > best.0 {
            best = (s, deg);
        }
        deg += 0.25;
    }
    // Refine around the best coarse angle.
    let coarse = best.1;
    let mut d = coarse - 0.25;
    while d <= coarse + 0.25 + 1e-9 {
        let s = score(d);
        if s > best.0 {
            best = (s, d);
        }
        d += 0.05;
    }
    best.1
}

/// Rotate by `deg` degrees (counter-clockwise positive) about the centre,
/// bilinear, white fill, same size.
pub fn rotate_small(img: &GrayImage, deg: f64) -> GrayImage {
    let (w, h) = img.dimensions();
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = GrayImage::from_pixel(w, h, Luma([255]));
    let raw = img.as_raw();
    for y in 0..h {
        for x in 0..w {
            let dx = x as f64 - cx;
            let dy = y as f64 - cy;
            // Inverse mapping: source = R(-deg) * dest, with y down.
            let sx = c * dx - s * dy + cx;
            let sy = s * dx + c * dy + cy;
            if sx < 0.0 || sy < 0.0 || sx >= (w - 1) as f64 || sy >= (h - 1) as f64 {
                continue;
            }
            let (x0, y0) = (sx as usize, sy as usize);
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            let i = y0 * w as usize + x0;
            let p = |k: usize| raw[k] as f64;
            let v = p(i) * (1.0 - fx) * (1.0 - fy)
                + p(i + 1) * fx * (1.0 - fy)
                + p(i + w as usize) * (1.0 - fx) * fy
                + p(i + w as usize + 1) * fx * fy;
            out.put_pixel(x, y, Luma([v.round() as u8]));
        }
    }
    out
}

/// Rotate by a multiple of 90 degrees clockwise.
pub fn rotate_quarter(img: &GrayImage, quarters: u32) -> GrayImage {
    match quarters % 4 {
        1 => image::imageops::rotate90(img),
        2 => image::imageops::rotate180(img),
        3 => image::imageops::rotate270(img),
        _ => img.clone(),
    }
}

/// Whether text lines run vertically. Between horizontal text lines whole
/// pixel rows are blank while few columns are: compare the share of blank
/// rows and blank columns inside the ink's bounding box.
pub fn lines_vertical(img: &GrayImage) -> bool {
    let step = (img.width().max(img.height()) / 800).max(1);
    let t = otsu(img);
    let (w, h) = (
        img.width().div_ceil(step) as usize,
        img.height().div_ceil(step) as usize,
    );
    let mut rows = vec![0u32; h];
    let mut cols = vec![0u32; w];
    for (yi, y) in (0..img.height()).step_by(step as usize).enumerate() {
        for (xi, x) in (0..img.width()).step_by(step as usize).enumerate() {
            if img.get_pixel(x, y)[0] <= t {
                rows[yi] += 1;
                cols[xi] += 1;
            }
        }
    }
    let blank_share = |v: &[u32]| {
        let max = v.iter().copied().max().unwrap_or(0);
        let (Some(a), Some(b)) = (
            v.iter().position(|&c| c > 0),
            v.iter().rposition(|&c| c > 0),
        ) else {
            return 0.0;
        };
        let inner = &v[a..=b];
        let floor = (max as f64 * 0.02).max(1.0);
        inner.iter().filter(|&&c| (c as f64) < floor).count() as f64 / inner.len() as f64
    };
    blank_share(&cols) > blank_share(&rows) + 0.05
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_image() -> GrayImage {
        let mut img = GrayImage::from_pixel(600, 400, Luma([255]));
        for line in 0..8 {
            let y0 = 40 + line * 40;
            for y in y0..y0 + 12 {
                for x in (50..550).filter(|x| ((x + line * 13) / (5 + line)) % 4 != 0) {
                    img.put_pixel(x, y, Luma([0]));
                }
            }
        }
        img
    }

    #[test]
    fn finds_and_undoes_small_skew() {
        let img = lines_image();
        assert!(skew_angle(&img, 5.0).abs() < 0.1);
        let skewed = rotate_small(&img, 2.0);
        let angle = skew_angle(&skewed, 5.0);
        assert!((angle - 2.0).abs() < 0.2, "measured {angle}");
        let fixed = rotate_small(&skewed, -angle);
        assert!(skew_angle(&fixed, 5.0).abs() < 0.2);
    }

    /// Rows of `img` with any dark pixel.
    fn inked_rows(img: &GrayImage) -> Vec<u32> {
        (0..img.height())
            .filter(|&y| (0..img.width()).any(|x| img.get_pixel(x, y)[0] < 128))
            .collect()
    }

    #[test]
    fn clears_only_lines_cut_by_the_crop_outside_the_box() {
        // Lines of `lines_image` at rows 40-51, 80-91, 120-131, ...
        let page = lines_image();
        let crop =
            |y0: u32, y1: u32| image::imageops::crop_imm(&page, 0, y0, 600, y1 - y0).to_image();
        // Rows 45..100: the first line is cut at the top and ends (row 6)
        // before the box (from row 20): cleared; the line at 80-91 (rows
        // 35-46 here) stays.
        let mut img = crop(45, 100);
        clear_cut_lines(&mut img, 128, 20..50);
        assert_eq!(inked_rows(&img), (35..47).collect::<Vec<_>>());
        // Rows 85..125: both lines cut, at top (0-6) and bottom (35-39);
        // the box covers rows 3..38, reaching into both: nothing cleared.
        let mut img = crop(85, 125);
        clear_cut_lines(&mut img, 128, 3..38);
        assert_eq!(inked_rows(&img).len(), 7 + 5);
        // The same crop with the box on rows 10..30 only: both cleared.
        let mut img = crop(85, 125);
        clear_cut_lines(&mut img, 128, 10..30);
        assert!(inked_rows(&img).is_empty());
        // Ink from edge to edge with no blank row: left alone.
        let mut img = crop(42, 50);
        clear_cut_lines(&mut img, 128, 2..4);
        assert_eq!(inked_rows(&img).len(), 8);
    }

    #[test]
    fn detects_vertical_text_lines() {
        let img = lines_image();
        assert!(!lines_vertical(&img));
        assert!(lines_vertical(&rotate_quarter(&img, 1)));
    }
}
