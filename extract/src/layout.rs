//! The per-page text model: words with normalised boxes, lines in reading
//! order, and a layout-preserving text that regexes run over.

use std::collections::BTreeSet;

use serde::Serialize;

/// A box `[left, top, right, bottom]` in 0..1 of the upright page.
pub type BBox = [f64; 4];

/// Where a page's (or a field's) text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    TextLayer,
    Ocr,
}

/// One word.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub text: String,
    pub bbox: BBox,
    /// 0..1 (1 for text-layer words).
    pub confidence: f32,
}

/// A line: indices into [`PageText::words`], left to right.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub words: Vec<usize>,
    pub bbox: BBox,
}

/// One page's text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PageText {
    /// 1-based page number.
    pub number: u32,
    pub source: Source,
    pub words: Vec<Word>,
    /// Lines top to bottom.
    pub lines: Vec<Line>,
    /// Layout text: one text line per line, words placed at their column
    /// (like `pdftotext -layout`), blank lines for large vertical gaps.
    pub text: String,
    /// Byte range of each word in `text`, parallel to `words`.
    #[serde(skip)]
    pub spans: Vec<(usize, usize)>,
    /// Byte offset in `text` where each line starts, parallel to `lines`.
    #[serde(skip)]
    pub line_starts: Vec<usize>,
    /// Word indices in the order of their spans in `text`: spans do not
    /// overlap (each word is written once, after the previous one), so
    /// their ends are in order too, for [`PageText::words_in_span`].
    #[serde(skip)]
    by_span: Vec<usize>,
}

pub fn union(a: BBox, b: BBox) -> BBox {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

pub fn center_y(b: &BBox) -> f64 {
    (b[1] + b[3]) / 2.0
}

/// Whether two boxes sit on one row: they overlap vertically by more than
/// half the lower one's height.
pub fn same_row(a: &BBox, b: &BBox) -> bool {
    let overlap = a[3].min(b[3]) - a[1].max(b[1]);
    let height = |r: &BBox| (r[3] - r[1]).max(1e-6);
    overlap > 0.5 * height(a).min(height(b))
}

/// A line being grouped, with what tells without a scan of all its words
/// whether a new word lies under or over one of them: a page whose glyphs
/// all sit on one line would otherwise be quadratic (100,000 words on one
/// line took 11 s, a text layer of 200,000 a minute).
struct Row {
    words: Vec<usize>,
    bbox: BBox,
    /// The words by left edge ([`order_key`], index).
    by_x: BTreeSet<(i64, usize)>,
    /// Widest word: a word overlapping `x` starts at most this far left.
    widest: f64,
    /// Lowest vertical centre of the words, and lowest centre plus a
    /// quarter of the word's height.
    min_center: f64,
    min_reach: f64,
}

/// Candidates [`Row::overlaps_off_level`] looks at before it lets the row
/// test alone decide: ordinary lines never have so many words over one
/// spot; a degenerate one (a page-wide word among thousands of glyphs)
/// stays linear.
const MAX_OVERLAP_CANDIDATES: usize = 64;

/// A key ordered like `f64::total_cmp`.
fn order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

impl Row {
    fn add(&mut self, i: usize, b: &BBox) {
        self.words.push(i);
        self.bbox = union(self.bbox, *b);
        self.by_x.insert((order_key(b[0]), i));
        self.widest = self.widest.max(b[2] - b[0]);
        let cy = center_y(b);
        self.min_center = self.min_center.min(cy);
        self.min_reach = self.min_reach.min(cy + 0.25 * (b[3] - b[1]));
    }

    /// Whether a word `b` (height `h`), coming no higher than any word of
    /// the row, overlaps one of them horizontally without sitting at the
    /// same height: then it is on another line overlapping this one (OCR
    /// boxes of neighbouring words can overlap: Tesseract gave "Paper" a
    /// box reaching over "A4").
    fn overlaps_off_level(&self, b: &BBox, h: f64, words: &[Word]) -> bool {
        let cy = center_y(b);
        // Level with a word: centres closer than a quarter of the smaller
        // height. Every word is level with `b` (the usual case, and every
        // word of one long line): no word to look for.
        const SLACK: f64 = 1e-9;
        if cy - self.min_center < 0.25 * h - SLACK && cy < self.min_reach - SLACK {
            return false;
        }
        let level = |o: &BBox| (center_y(o) - cy).abs() < 0.25 * h.min(o[3] - o[1]);
        let from = b[0] - self.widest - SLACK * (1.0 + b[0].abs() + self.widest);
        self.by_x
            .range((order_key(from), 0)..(order_key(b[2]), 0))
            // From the right: the words starting within `b` first.
            .rev()
            .take(MAX_OVERLAP_CANDIDATES)
            .any(|&(_, j)| {
                let o = &words[j].bbox;
                o[0] < b[2] && b[0] < o[2] && !level(o)
            })
    }
}

/// Columns a page's layout text is laid out on: enough that words of
/// typical size keep their order and gaps.
const MIN_COLS: f64 = 80.0;
/// Spaces the layout text of a page may add beyond one a word: this much,
/// plus [`PAD_PER_TEXT_BYTE`] for each byte of its words. Past it, words
/// are set one space apart and lines start at the left margin.
const MIN_PAD_BUDGET: usize = 64 * 1024;
const PAD_PER_TEXT_BYTE: usize = 8;

impl PageText {
    /// Build lines and layout text from words in any order.
    pub fn new(number: u32, source: Source, mut words: Vec<Word>) -> PageText {
        // Every page's text passes here, from the text layer and from OCR:
        // control characters go, U+0000 above all (a broken PDF's ToUnicode
        // maps glyphs to <0000>), which PostgreSQL cannot store in text or
        // jsonb. None of them is printed text, and a line break inside a
        // word would break the layout text's lines.
        for w in &mut words {
            if w.text.chars().any(char::is_control) {
                w.text.retain(|c| !c.is_control());
            }
        }
        words.retain(|w| !w.text.trim().is_empty() && w.bbox.iter().all(|v| v.is_finite()));
        // Reading order: by vertical centre, then grouped into lines by
        // vertical overlap, then left to right.
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by(|&a, &b| center_y(&words[a].bbox).total_cmp(&center_y(&words[b].bbox)));
        let mut rows: Vec<Row> = Vec::new();
        for i in order {
            let b = words[i].bbox;
            let h = (b[3] - b[1]).max(1e-6);
            let joined = rows
                .iter_mut()
                .rev()
                .take(3)
                .find(|r| same_row(&b, &r.bbox) && !r.overlaps_off_level(&b, h, &words));
            match joined {
                Some(r) => r.add(i, &words[i].bbox),
                None => {
                    // Only the last three rows take words: the one falling
                    // out of reach needs no index any more.
                    if let Some(old) = rows.len().checked_sub(3) {
                        rows[old].by_x = BTreeSet::new();
                    }
                    let mut r = Row {
                        words: Vec::new(),
                        bbox: b,
                        by_x: BTreeSet::new(),
                        widest: 0.0,
                        min_center: f64::INFINITY,
                        min_reach: f64::INFINITY,
                    };
                    r.add(i, &b);
                    rows.push(r);
                }
            }
        }
        let mut lines: Vec<Line> = rows
            .into_iter()
            .map(|r| Line {
                words: r.words,
                bbox: r.bbox,
            })
            .collect();
        for l in &mut lines {
            l.words
                .sort_by(|&a, &b| words[a].bbox[0].total_cmp(&words[b].bbox[0]));
        }
        lines.sort_by(|a, b| center_y(&a.bbox).total_cmp(&center_y(&b.bbox)));

        // Character width: the median width per character of the words.
        let mut cw: Vec<f64> = words
            .iter()
            .map(|w| (w.bbox[2] - w.bbox[0]) / w.text.chars().count().max(1) as f64)
            .filter(|v| *v > 0.0)
            .collect();
        cw.sort_by(f64::total_cmp);
        let char_w = cw
            .get(cw.len() / 2)
            .copied()
            .unwrap_or(1.0 / MIN_COLS)
            .min(1.0 / MIN_COLS);
        let mut heights: Vec<f64> = lines.iter().map(|l| l.bbox[3] - l.bbox[1]).collect();
        heights.sort_by(f64::total_cmp);
        let line_h = heights
            .get(heights.len() / 2)
            .copied()
            .unwrap_or(0.02)
            .max(1e-4);

        let mut text = String::new();
        // Spaces beyond one a word: a page of a million one-glyph lines,
        // each far right, would otherwise pad each with hundreds (most of
        // a gigabyte). Ordinary pages use a few kilobytes.
        let mut spare_pad =
            MIN_PAD_BUDGET + PAD_PER_TEXT_BYTE * words.iter().map(|w| w.text.len()).sum::<usize>();
        let mut spans = vec![(0, 0); words.len()];
        let mut line_starts = Vec::with_capacity(lines.len());
        let mut prev_bottom: Option<f64> = None;
        for l in &lines {
            if let Some(pb) = prev_bottom {
                let gap = l.bbox[1] - pb;
                // One blank line for a gap of more than a line height, two
                // for more than three: blocks stay apart, as pdftotext does.
                if gap > 3.0 * line_h {
                    text.push_str("\n\n");
                } else if gap > line_h {
                    text.push('\n');
                }
            }
            prev_bottom = Some(l.bbox[3]);
            line_starts.push(text.len());
            let mut col = 0usize;
            let mut prev_x1 = f64::NEG_INFINITY;
            for (k, &i) in l.words.iter().enumerate() {
                let want = (words[i].bbox[0] / char_w).round().max(0.0) as usize;
                // Cap the padding so a degenerate box cannot blow up the text.
                let want = want.min(col + 400);
                // Words of one phrase get one space; wider gaps keep columns.
                let close = words[i].bbox[0] - prev_x1 < 2.0 * char_w;
                let least = usize::from(k > 0);
                let pad = if k == 0 {
                    want
                } else if close {
                    col + 1
                } else {
                    want.max(col + 1)
                } - col;
                let extra = (pad - least).min(spare_pad);
                spare_pad -= extra;
                let pad = least + extra;
                prev_x1 = words[i].bbox[2];
                text.extend(std::iter::repeat_n(' ', pad));
                col += pad;
                let start = text.len();
                text.push_str(&words[i].text);
                spans[i] = (start, text.len());
                col += words[i].text.chars().count();
            }
            text.push('\n');
        }
        // Written line by line, word by word: the lines' words in order.
        let by_span = lines.iter().flat_map(|l| l.words.iter().copied()).collect();
        PageText {
            number,
            source,
            words,
            lines,
            text,
            spans,
            line_starts,
            by_span,
        }
    }

    /// The line index holding byte offset `pos` of `text`.
    pub fn line_at(&self, pos: usize) -> Option<usize> {
        match self.line_starts.binary_search(&pos) {
            Ok(i) => Some(i),
            Err(0) => None,
            Err(i) => Some(i - 1),
        }
    }

    /// Words whose text overlaps the byte range `start..end` of `text`, in
    /// ascending index order. A binary search: a regex locator asks for
    /// every match, and a scan of the page's words for each took matches x
    /// words (10^5 x 10^4 for `(.)` on a dense page).
    pub fn words_in_span(&self, start: usize, end: usize) -> Vec<usize> {
        let first = self.by_span.partition_point(|&i| self.spans[i].1 <= start);
        let mut out: Vec<usize> = self.by_span[first..]
            .iter()
            .copied()
            .take_while(|&i| self.spans[i].0 < end)
            .collect();
        out.sort_unstable();
        out
    }

    /// Text of the given words joined in line order, lines separated by `\n`.
    pub fn join(&self, words: &[usize]) -> String {
        // A bitmap, not `words.contains`: that was words x page words.
        let mut wanted = vec![false; self.words.len()];
        for &i in words {
            wanted[i] = true;
        }
        let mut out = String::new();
        for l in &self.lines {
            let ws: Vec<&str> = l
                .words
                .iter()
                .filter(|&&i| wanted[i])
                .map(|&i| self.words[i].text.as_str())
                .collect();
            if ws.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&ws.join(" "));
        }
        out
    }

    /// Bounding box and mean confidence of some words.
    pub fn extent(&self, words: &[usize]) -> Option<(BBox, f32)> {
        let first = *words.first()?;
        let mut b = self.words[first].bbox;
        let mut conf = 0.0;
        for &i in words {
            b = union(b, self.words[i].bbox);
            conf += self.words[i].confidence;
        }
        Some((b, conf / words.len() as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, x0: f64, y0: f64, x1: f64) -> Word {
        Word {
            text: text.into(),
            bbox: [x0, y0, x1, y0 + 0.012],
            confidence: 1.0,
        }
    }

    #[test]
    fn lines_in_reading_order_and_columns_kept_apart() {
        let page = PageText::new(
            1,
            Source::TextLayer,
            vec![
                w("Total", 0.6, 0.5, 0.66),
                w("Invoice", 0.1, 0.1, 0.18),
                w("No", 0.19, 0.101, 0.22),
                w("4711", 0.6, 0.099, 0.65),
                w("Item", 0.1, 0.5, 0.15),
            ],
        );
        assert_eq!(page.lines.len(), 2);
        let first: Vec<&str> = page.lines[0]
            .words
            .iter()
            .map(|&i| page.words[i].text.as_str())
            .collect();
        assert_eq!(first, ["Invoice", "No", "4711"]);
        let lines: Vec<&str> = page.text.lines().collect();
        assert!(
            lines[0].trim_start().starts_with("Invoice No"),
            "{:?}",
            page.text
        );
        assert!(
            lines[0].contains("No    "),
            "columns are kept apart: {:?}",
            page.text
        );
        assert!(
            lines.len() >= 3,
            "a blank line separates distant blocks: {:?}",
            page.text
        );
        let pos = page.text.find("4711").unwrap();
        assert_eq!(page.line_at(pos), Some(0));
        assert_eq!(page.words_in_span(pos, pos + 4).len(), 1);
    }

    /// A page of `n` words of `k` letters, ten to a line, in a shuffled
    /// order so that word indices are not text order.
    fn dense_page(n: usize, k: usize) -> PageText {
        let words: Vec<Word> = (0..n)
            .map(|j| {
                let j = (j * 7919) % n;
                let (row, col) = (j / 10, j % 10);
                let y = row as f64 / (n / 10 + 1) as f64;
                Word {
                    text: "x".repeat(k),
                    bbox: [
                        col as f64 * 0.09,
                        y,
                        col as f64 * 0.09 + 0.05,
                        y + 0.4 / n as f64,
                    ],
                    confidence: 1.0,
                }
            })
            .collect();
        PageText::new(1, Source::TextLayer, words)
    }

    #[test]
    fn words_in_span_finds_what_a_scan_of_every_word_finds() {
        let scan = |p: &PageText, start: usize, end: usize| -> Vec<usize> {
            (0..p.words.len())
                .filter(|&i| p.spans[i].0 < end && start < p.spans[i].1)
                .collect()
        };
        let page = dense_page(37, 3);
        let len = page.text.len();
        for start in 0..=len {
            for end in start..=(start + 12).min(len) {
                assert_eq!(
                    page.words_in_span(start, end),
                    scan(&page, start, end),
                    "{start}..{end}"
                );
            }
        }
        assert_eq!(page.words_in_span(0, len), (0..37).collect::<Vec<_>>());
    }

    #[test]
    fn a_span_per_character_of_a_dense_page_is_found_quickly() {
        // What a regex `(.)` with every occurrence asks: each of the page's
        // 200,000 characters, of 20,000 words. A scan of the words for each
        // was 4 x 10^9 comparisons.
        let page = dense_page(20_000, 10);
        let started = std::time::Instant::now();
        let mut found = 0;
        for (pos, c) in page.text.char_indices() {
            if c == 'x' {
                found += page.words_in_span(pos, pos + 1).len();
            }
        }
        assert_eq!(found, 200_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn joining_every_word_of_a_dense_page_is_quick() {
        // `words.contains` for each word of each line: 10^10 comparisons.
        let page = dense_page(100_000, 1);
        let all: Vec<usize> = (0..page.words.len()).collect();
        let started = std::time::Instant::now();
        let text = page.join(&all);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(text.lines().count(), 10_000);
        assert_eq!(text.lines().next(), Some("x x x x x x x x x x"));
        // Only the words asked for, in line order.
        assert_eq!(
            page.join(&[page.lines[1].words[3], page.lines[0].words[2]]),
            "x\nx"
        );
    }

    #[test]
    fn control_characters_never_reach_words_or_text() {
        let page = PageText::new(
            1,
            Source::Ocr,
            vec![
                w("INV-\u{0}42", 0.1, 0.1, 0.2),
                w("\u{0}\u{0}", 0.3, 0.1, 0.35),
                w("a\nb\u{7}", 0.4, 0.1, 0.45),
            ],
        );
        let texts: Vec<&str> = page.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["INV-42", "ab"]);
        assert!(!page.text.contains(['\0', '\u{7}']), "{:?}", page.text);
        assert_eq!(page.text.lines().count(), 1, "{:?}", page.text);
    }

    /// Lines as the grouping did before it was indexed: every word of each
    /// of the last three lines looked at, for each word.
    fn lines_by_scan(words: &[Word]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by(|&a, &b| center_y(&words[a].bbox).total_cmp(&center_y(&words[b].bbox)));
        let mut lines: Vec<(Vec<usize>, BBox)> = Vec::new();
        for i in order {
            let b = words[i].bbox;
            let h = (b[3] - b[1]).max(1e-6);
            let joined = lines.iter_mut().rev().take(3).find(|(ws, bbox)| {
                let level =
                    |o: &BBox| (center_y(o) - center_y(&b)).abs() < 0.25 * h.min(o[3] - o[1]);
                same_row(&b, bbox)
                    && !ws.iter().any(|&j| {
                        let o = &words[j].bbox;
                        o[0] < b[2] && b[0] < o[2] && !level(o)
                    })
            });
            match joined {
                Some((ws, bbox)) => {
                    ws.push(i);
                    *bbox = union(*bbox, b);
                }
                None => lines.push((vec![i], b)),
            }
        }
        let mut lines: Vec<(Vec<usize>, BBox)> = lines
            .into_iter()
            .map(|(mut ws, b)| {
                ws.sort_by(|&a, &c| words[a].bbox[0].total_cmp(&words[c].bbox[0]));
                (ws, b)
            })
            .collect();
        lines.sort_by(|a, b| center_y(&a.1).total_cmp(&center_y(&b.1)));
        lines.into_iter().map(|(ws, _)| ws).collect()
    }

    #[test]
    fn indexed_grouping_finds_the_lines_a_full_scan_finds() {
        // Crowded, jittered, overlapping boxes of mixed heights: words over
        // and under each other, level and not (xorshift, fixed seed).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as f64 / n as f64
        };
        let mut split = 0;
        for _ in 0..400 {
            let n = 1 + (next(60) * 60.0) as usize;
            let rows = 1.0 + (next(4) * 4.0).floor();
            let words: Vec<Word> = (0..n)
                .map(|k| {
                    let x0 = next(1000) * 0.9;
                    let y0 = (next(1000) * rows).floor() * 0.012 + next(1000) * 0.012;
                    let h = 0.004 + next(1000) * 0.014;
                    Word {
                        text: format!("w{k}"),
                        bbox: [x0, y0, x0 + 0.01 + next(1000) * 0.1, y0 + h],
                        confidence: 1.0,
                    }
                })
                .collect();
            let page = PageText::new(1, Source::Ocr, words.clone());
            let got: Vec<Vec<usize>> = page.lines.iter().map(|l| l.words.clone()).collect();
            let want = lines_by_scan(&words);
            split += usize::from(want.iter().any(|l| l.len() > 1) && want.len() > rows as usize);
            assert_eq!(got, want, "{words:?}");
        }
        assert!(
            split > 50,
            "the cases should split rows by overlap: {split}"
        );
    }

    #[test]
    fn a_line_of_a_hundred_thousand_words_is_grouped_quickly() {
        // All on one baseline, then all stacked on one spot: the grouping
        // looked at every word of the line for each word (11 s for the
        // first).
        let side_by_side: Vec<Word> = (0..100_000)
            .map(|k| w("x", k as f64 * 1e-5, 0.5, k as f64 * 1e-5 + 0.8e-5))
            .collect();
        let stacked: Vec<Word> = (0..100_000).map(|_| w("x", 0.4, 0.5, 0.41)).collect();
        for words in [side_by_side, stacked] {
            let started = std::time::Instant::now();
            let page = PageText::new(1, Source::TextLayer, words);
            assert_eq!(page.lines.len(), 1);
            assert_eq!(page.lines[0].words.len(), 100_000);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn layout_text_padding_is_bounded_by_the_words() {
        // 200,000 narrow one-glyph lines at the right edge: each was padded
        // with 400 spaces (80 MB of text).
        let n = 200_000;
        let words: Vec<Word> = (0..n)
            .map(|k| {
                let y = k as f64 / n as f64;
                Word {
                    text: "x".into(),
                    bbox: [0.99, y, 0.991, y + 0.4 / n as f64],
                    confidence: 1.0,
                }
            })
            .collect();
        let page = PageText::new(1, Source::TextLayer, words);
        assert_eq!(page.lines.len(), n);
        let budget = MIN_PAD_BUDGET + PAD_PER_TEXT_BYTE * n;
        // Each line: its glyph, its newline, at most two blank lines.
        assert!(
            page.text.len() <= budget + 4 * n,
            "{} bytes",
            page.text.len()
        );
        // The first lines still keep their column.
        assert!(
            page.text.starts_with(&" ".repeat(400)),
            "{:?}",
            &page.text[..420]
        );
    }
}
