//! Limits on what reading a document may allocate.
//!
//! Added for Paperhook (not in hayro-syntax 0.9.0; see `vendor/README.md`).
//! Upstream reads a document's whole page tree and cross-reference data and
//! decodes any stream to whatever size it expands to, so a 20 KB file can
//! make it allocate gigabytes before a caller sees a page count. With
//! [`Limits`], reading stops early instead: the page tree is read to one
//! page past [`Limits::max_pages`] (a caller can tell that a document has
//! more); a stream that decodes beyond [`Limits::max_decoded_bytes`] fails
//! to decode, as does any object stream once the document's object streams
//! together pass it (they are kept for as long as the document lives); and
//! the objects a document may have are [`Limits::max_objects`].

/// Measures what `raw` decodes to through `filters` (in order), reading a
/// little past `cap` bytes at the most and keeping none of it.
pub type Measure = fn(filters: &[crate::Filter], raw: &[u8], cap: usize) -> usize;

/// What reading one document may allocate. The default is no limit (the
/// behaviour of upstream hayro-syntax).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pages read from the page tree: reading stops at one more than this.
    pub max_pages: usize,
    /// Bytes one stream may decode to (images excepted: their decoders
    /// are given declared sizes, which callers check), and all of a
    /// document's object streams together.
    pub max_decoded_bytes: usize,
    /// Objects the document's cross-reference data may list, and its
    /// object streams hold together (each takes some tens of bytes).
    pub max_objects: usize,
    /// Measures the streams that hold the document's objects (its
    /// cross-reference and object streams, read when it is opened) before
    /// they are decoded, so that one expanding past `max_decoded_bytes` is
    /// refused without being held first (decoding stops at the limit, but
    /// only once it holds that much).
    pub measure: Option<Measure>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pages: usize::MAX,
            max_decoded_bytes: usize::MAX,
            max_objects: usize::MAX,
            measure: None,
        }
    }
}

impl Limits {
    /// Runs `f` with these limits for what is read on this thread without
    /// a document's: the inline images of content streams are parsed
    /// apart from their document, and would decode without bound. The
    /// searches for their ends share what they may read beyond their
    /// streams' own shares (16 MiB) in the scope.
    pub fn scope<T>(self, f: impl FnOnce() -> T) -> T {
        opening(self, f).0
    }
}

/// Which of the [`Limits`] a document passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// [`Limits::max_decoded_bytes`].
    DecodedBytes,
    /// [`Limits::max_objects`].
    Objects,
    /// Rebuilding the cross-reference data of a damaged document (a scan
    /// of the whole file for its objects) read more than
    /// [`REPAIR_READS_PER_BYTE`] times its size, and [`REPAIR_READS_MIN`]:
    /// an ordinary file is read about twice.
    Repair,
}

/// Bytes a scan of a damaged document for its objects may read, for each
/// of its bytes (see [`Exceeded::Repair`]).
pub const REPAIR_READS_PER_BYTE: usize = 16;
/// Bytes a scan of a damaged document may read, however small it is.
pub const REPAIR_READS_MIN: usize = 64 << 20;
/// Bytes one object may take for such a scan to find it (larger ones,
/// streams apart, are not found).
pub const REPAIR_MAX_OBJECT: usize = 4 << 20;

impl Exceeded {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::DecodedBytes => 1,
            Self::Objects => 2,
            Self::Repair => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::DecodedBytes),
            2 => Some(Self::Objects),
            3 => Some(Self::Repair),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The limits of the document being opened (or repaired) on this
    /// thread, and the first of them passed: its cross-reference data is
    /// read before the document's `XRef` exists to hold them.
    static OPENING: core::cell::Cell<Option<(Limits, Option<Exceeded>)>> =
        const { core::cell::Cell::new(None) };
}

/// Runs `parse` on a reader of `data` at `start` that sees `window` bytes
/// at the most: what it read, the reader after it, and the bytes it read
/// (all it saw, when it failed: a failed parse is put back, and may have
/// read to the end).
pub(crate) fn parse_within<'a, T>(
    data: &'a [u8],
    start: usize,
    window: usize,
    parse: impl FnOnce(&mut crate::reader::Reader<'a>) -> Option<T>,
) -> (Option<(T, crate::reader::Reader<'a>)>, usize) {
    let end = data.len().min(start.saturating_add(window));
    let mut r = crate::reader::Reader::new_with(&data[..end], start);
    let out = parse(&mut r);
    let read = match out {
        Some(_) => r.offset().saturating_sub(start),
        None => end.saturating_sub(start),
    };
    (out.map(|out| (out, r)), read)
}

#[cfg(feature = "std")]
std::thread_local! {
    /// What the searches for inline images' ends (see `content::Lookahead`)
    /// may read beyond their streams' own shares, in a scope of limits on
    /// this thread.
    static SHARED_LOOKAHEAD: core::cell::Cell<Option<usize>> =
        const { core::cell::Cell::new(None) };
}

/// What the searches for inline images' ends may still read beyond their
/// streams' own shares, in a scope of limits.
pub(crate) fn shared_lookahead() -> Option<usize> {
    #[cfg(feature = "std")]
    {
        SHARED_LOOKAHEAD.with(|s| s.get())
    }
    #[cfg(not(feature = "std"))]
    {
        None
    }
}

/// Spends `n` of it; false outside a scope of limits.
pub(crate) fn spend_shared_lookahead(n: usize) -> bool {
    #[cfg(feature = "std")]
    {
        SHARED_LOOKAHEAD.with(|s| match s.get() {
            Some(left) => {
                s.set(Some(left.saturating_sub(n)));
                true
            }
            None => false,
        })
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = n;
        false
    }
}

/// Runs `f` with `limits` as those of the document it opens; also tells
/// which of them was passed first meanwhile, if any.
pub(crate) fn opening<T>(limits: Limits, f: impl FnOnce() -> T) -> (T, Option<Exceeded>) {
    #[cfg(feature = "std")]
    {
        type Saved = (Option<(Limits, Option<Exceeded>)>, Option<usize>);
        struct Restore(Saved);
        impl Drop for Restore {
            fn drop(&mut self) {
                OPENING.with(|o| o.set(self.0.0));
                SHARED_LOOKAHEAD.with(|s| s.set(self.0.1));
            }
        }
        let _restore = Restore((
            OPENING.with(|o| o.replace(Some((limits, None)))),
            SHARED_LOOKAHEAD.with(|s| s.replace(Some(crate::content::LOOKAHEAD_MIN))),
        ));
        let out = f();
        (
            out,
            OPENING.with(|o| o.get()).and_then(|(_, passed)| passed),
        )
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = limits;
        (f(), None)
    }
}

/// Notes that the document being opened passed a limit.
pub(crate) fn passed_while_opening(what: Exceeded) {
    #[cfg(feature = "std")]
    OPENING.with(|o| {
        if let Some((limits, None)) = o.get() {
            o.set(Some((limits, Some(what))));
        }
    });
    #[cfg(not(feature = "std"))]
    let _ = what;
}

/// The first limit the document being opened on this thread has passed so
/// far, if any.
pub(crate) fn passed_while_opening_so_far() -> Option<Exceeded> {
    #[cfg(feature = "std")]
    {
        OPENING.with(|o| o.get()).and_then(|(_, passed)| passed)
    }
    #[cfg(not(feature = "std"))]
    {
        None
    }
}

/// The limits of the document being opened on this thread, if any.
pub(crate) fn while_opening() -> Option<Limits> {
    #[cfg(feature = "std")]
    {
        OPENING.with(|o| o.get()).map(|(limits, _)| limits)
    }
    #[cfg(not(feature = "std"))]
    {
        None
    }
}
