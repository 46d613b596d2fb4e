//! Tesseract OCR through its C API: one engine per thread, started once per
//! language set and reused for every page and zone that thread handles.
//!
//! Recognition stops at the page's deadline (Tesseract's own monitor, checked
//! between words), so one slow page cannot hold a thread much past its time
//! limit; the caller then reports the timeout.
//!
//! Run the process with `OMP_THREAD_LIMIT=1`: Debian's libtesseract uses
//! OpenMP and otherwise burns several times the CPU for the same page while
//! rayon already keeps every core busy.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Instant;

use image::GrayImage;
use tesseract_sys as sys;

use crate::Error;
use crate::layout::Word;

/// Page segmentation modes used here (Tesseract's numbering).
#[derive(Debug, Clone, Copy)]
pub enum Psm {
    /// Fully automatic segmentation.
    Auto = 3,
    /// One line of text (recovering missed pieces).
    SingleLine = 7,
    /// As much text as possible in no particular order: finds isolated
    /// numbers in table cells that `Auto` drops; lines are rebuilt from
    /// the word boxes anyway.
    Sparse = 11,
    /// One uniform block of text (zones).
    SingleBlock = 6,
}

/// The few calls of Tesseract's C API we make, on one handle. Not `Send`:
/// an engine stays on the thread that made it.
struct Api(NonNull<sys::TessBaseAPI>);

impl Api {
    fn create() -> Api {
        // SAFETY: no arguments; a null result (out of memory) is checked.
        let handle = unsafe { sys::TessBaseAPICreate() };
        Api(NonNull::new(handle).expect("TessBaseAPICreate returned null"))
    }

    fn init(&mut self, datapath: Option<&CStr>, language: &CStr) -> bool {
        // SAFETY: a live handle and NUL-terminated strings that outlive the call.
        let rc = unsafe {
            sys::TessBaseAPIInit3(
                self.0.as_ptr(),
                datapath.map_or(std::ptr::null(), CStr::as_ptr),
                language.as_ptr(),
            )
        };
        rc == 0
    }

    fn set_variable(&mut self, name: &CStr, value: &CStr) {
        // SAFETY: as for `init`.
        unsafe { sys::TessBaseAPISetVariable(self.0.as_ptr(), name.as_ptr(), value.as_ptr()) };
    }

    /// Recognises `img`; Tesseract's TSV output, empty once past `deadline`
    /// (Tesseract stops there).
    fn recognise(
        &mut self,
        img: &GrayImage,
        dpi: i32,
        psm: Psm,
        deadline: Instant,
    ) -> Option<String> {
        let (width, height) = (
            i32::try_from(img.width()).ok()?,
            i32::try_from(img.height()).ok()?,
        );
        let handle = self.0.as_ptr();
        // Whole milliseconds, at least one (0 would mean no deadline).
        let left_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `img` is `width` x `height` bytes of one byte per pixel,
        // rows `width` bytes apart, and Tesseract copies it in SetImage. The
        // monitor lives until after Recognize and is deleted once. The TSV
        // text is Tesseract's own NUL-terminated string, copied and then
        // freed with TessDeleteText.
        unsafe {
            sys::TessBaseAPISetImage(handle, img.as_raw().as_ptr(), width, height, 1, width);
            sys::TessBaseAPISetSourceResolution(handle, dpi);
            sys::TessBaseAPISetPageSegMode(handle, psm as sys::TessPageSegMode);
            let monitor = sys::TessMonitorCreate();
            if monitor.is_null() {
                return None;
            }
            sys::TessMonitorSetDeadlineMSecs(monitor, left_ms);
            let rc = sys::TessBaseAPIRecognize(handle, monitor);
            sys::TessMonitorDelete(monitor);
            if Instant::now() >= deadline {
                // Cut short: what it read is incomplete.
                return Some(String::new());
            }
            if rc != 0 {
                return None;
            }
            let text = sys::TessBaseAPIGetTsvText(handle, 0);
            if text.is_null() {
                return None;
            }
            let tsv = CStr::from_ptr(text).to_string_lossy().into_owned();
            sys::TessDeleteText(text);
            Some(tsv)
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        unsafe {
            sys::TessBaseAPIEnd(self.0.as_ptr());
            sys::TessBaseAPIDelete(self.0.as_ptr());
        }
    }
}

struct Engine {
    key: String,
    api: Api,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

/// A recognised word in pixel coordinates of the image given.
#[derive(Debug, Clone)]
pub struct PxWord {
    pub text: String,
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub confidence: f32,
}

fn with_engine<T>(
    languages: &str,
    tessdata: Option<&str>,
    f: impl FnOnce(&mut Api) -> Result<T, Error>,
) -> Result<T, Error> {
    let key = format!("{}|{languages}", tessdata.unwrap_or(""));
    ENGINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|e| e.key != key) {
            *slot = None;
            // Tesseract starts with whatever part of "deu+eng" it finds and
            // says nothing of the rest: check every language is installed.
            if let Some((lang, dir)) = missing_language(languages, tessdata) {
                return Err(Error::Ocr {
                    detail: format!(
                        "the Tesseract language data {lang:?} is not installed in {}; install it (Debian: tesseract-ocr-{lang}) or fix the template's languages",
                        dir.display()
                    ),
                });
            }
            let mut api = Api::create();
            let lang = CString::new(languages).map_err(|_| Error::Ocr { detail: "language list contains NUL".into() })?;
            let path = tessdata
                .map(CString::new)
                .transpose()
                .map_err(|_| Error::Ocr { detail: "tessdata path contains NUL".into() })?;
            if !api.init(path.as_deref(), &lang) {
                return Err(Error::Ocr {
                    detail: format!(
                        "Tesseract could not load the language data {languages:?}{}; install the packages (e.g. tesseract-ocr-deu) or fix the template's languages",
                        tessdata.map(|p| format!(" from {p}")).unwrap_or_default()
                    ),
                });
            }
            // Tesseract prints statistics of blank images ("Empty page!!")
            // to stderr; keep the worker's logs for the worker.
            api.set_variable(c"debug_file", c"/dev/null");
            *slot = Some(Engine { key, api });
        }
        let engine = slot.as_mut().expect("engine was just initialised");
        f(&mut engine.api)
    })
}

/// Where Debian and most distributions install Tesseract's language data.
const TESSDATA_DIRS: [&str; 4] = [
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
];

/// The first of `languages` (`deu+eng`) without a `.traineddata` file in
/// the data directory Tesseract will use, with that directory. None when
/// all are there, or when the directory is unknown (Tesseract decides).
fn missing_language(languages: &str, tessdata: Option<&str>) -> Option<(String, PathBuf)> {
    let dir = tessdata
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TESSDATA_PREFIX").map(PathBuf::from))
        .or_else(|| {
            TESSDATA_DIRS
                .iter()
                .map(Path::new)
                .find(|d| d.is_dir())
                .map(Path::to_path_buf)
        })?;
    languages
        .split('+')
        .find(|lang| !dir.join(format!("{lang}.traineddata")).is_file())
        .map(|lang| (lang.to_owned(), dir))
}

/// Recognise a grey image; `dpi` helps Tesseract size its filters. Stops
/// at `deadline` and then returns no words: the caller checks the time
/// after and reports the timeout.
pub fn recognise(
    img: &GrayImage,
    dpi: u32,
    psm: Psm,
    languages: &str,
    tessdata: Option<&str>,
    deadline: Instant,
) -> Result<Vec<PxWord>, Error> {
    if img.width() < 3 || img.height() < 3 {
        return Ok(Vec::new());
    }
    with_engine(languages, tessdata, |api| {
        let tsv = api
            .recognise(img, dpi.clamp(70, 1200) as i32, psm, deadline)
            .ok_or_else(|| Error::Ocr {
                detail: "recognition failed".into(),
            })?;
        Ok(parse_tsv(&tsv))
    })
}

/// Words (level 5) of Tesseract's TSV output.
fn parse_tsv(tsv: &str) -> Vec<PxWord> {
    let mut out = Vec::new();
    for line in tsv.lines() {
        let cols: Vec<&str> = line.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let num = |i: usize| cols[i].trim().parse::<f64>().ok();
        let (Some(l), Some(t), Some(w), Some(h), Some(conf)) =
            (num(6), num(7), num(8), num(9), num(10))
        else {
            continue;
        };
        let text = cols[11].trim();
        if text.is_empty() || conf < 0.0 {
            continue;
        }
        out.push(PxWord {
            text: text.to_owned(),
            left: l as u32,
            top: t as u32,
            right: (l + w) as u32,
            bottom: (t + h) as u32,
            confidence: (conf / 100.0).clamp(0.0, 1.0) as f32,
        });
    }
    out
}

/// Words normalised to an image of `w` x `h` pixels, offset by `(ox, oy)`.
pub fn normalise(words: Vec<PxWord>, ox: u32, oy: u32, w: u32, h: u32) -> Vec<Word> {
    let (w, h) = (w.max(1) as f64, h.max(1) as f64);
    words
        .into_iter()
        .map(|p| Word {
            text: p.text,
            bbox: [
                (p.left + ox) as f64 / w,
                (p.top + oy) as f64 / h,
                (p.right + ox) as f64 / w,
                (p.bottom + oy) as f64 / h,
            ]
            .map(|v| v.clamp(0.0, 1.0)),
            confidence: p.confidence,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_word_rows_of_tsv() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   4\t1\t1\t1\t1\t0\t10\t10\t200\t30\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t10\t12\t80\t28\t96.5\tInvoice\n\
                   5\t1\t1\t1\t1\t2\t100\t12\t40\t28\t-1\t\n";
        let words = parse_tsv(tsv);
        assert_eq!(words.len(), 1);
        assert_eq!(
            (words[0].text.as_str(), words[0].left, words[0].right),
            ("Invoice", 10, 90)
        );
        assert!((words[0].confidence - 0.965).abs() < 1e-6);
    }
}
