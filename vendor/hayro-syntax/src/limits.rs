//! Limits on what reading a document may allocate.
//!
//! Added for Paperhook (not in hayro-syntax 0.9.0; see `vendor/README.md`).
//! Upstream reads a document's whole page tree and decodes any stream to
//! whatever size it expands to, so a 20 KB file can make it allocate
//! gigabytes before a caller sees a page count. With [`Limits`], reading
//! stops early instead: the page tree is read to one page past
//! [`Limits::max_pages`] (a caller can tell that a document has more), and
//! a stream that decodes beyond [`Limits::max_decoded_bytes`] fails to
//! decode, as does any object stream once the document's object streams
//! together pass it (they are kept for as long as the document lives).

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
            measure: None,
        }
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The limits of the document being opened on this thread (streams
    /// decoded while its cross-reference data is read are not yet tied to
    /// the document: its `XRef` does not exist yet), and whether such a
    /// stream passed them.
    static OPENING: core::cell::Cell<Option<(Limits, bool)>> = const { core::cell::Cell::new(None) };
}

/// Runs `f` with `limits` as those of the document it opens; also tells
/// whether a stream read while opening, before the document's `XRef` was
/// made, passed them.
pub(crate) fn opening<T>(limits: Limits, f: impl FnOnce() -> T) -> (T, bool) {
    #[cfg(feature = "std")]
    {
        struct Restore(Option<(Limits, bool)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                OPENING.with(|o| o.set(self.0));
            }
        }
        let _restore = Restore(OPENING.with(|o| o.replace(Some((limits, false)))));
        let out = f();
        (out, OPENING.with(|o| o.get()).is_some_and(|(_, hit)| hit))
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = limits;
        (f(), false)
    }
}

/// Notes that a stream read while opening passed the limits.
pub(crate) fn passed_while_opening() {
    #[cfg(feature = "std")]
    OPENING.with(|o| {
        if let Some((limits, _)) = o.get() {
            o.set(Some((limits, true)));
        }
    });
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
