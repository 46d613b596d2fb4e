//! The per-page text model: words with normalised boxes, lines in reading
//! order, and a layout-preserving text that regexes run over.

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
        words.retain(|w| !w.text.trim().is_empty() && w.bbox.iter().all(|v| v.is_finite()));
        // Reading order: by vertical centre, then grouped into lines by
        // vertical overlap, then left to right.
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by(|&a, &b| center_y(&words[a].bbox).total_cmp(&center_y(&words[b].bbox)));
        let mut lines: Vec<Line> = Vec::new();
        for i in order {
            let b = words[i].bbox;
            let h = (b[3] - b[1]).max(1e-6);
            let joined = lines.iter_mut().rev().take(3).find(|l| {
                // A word whose box overlaps one of the line's is on another
                // line that overlaps this one, unless both sit at the same
                // height (OCR boxes of neighbouring words can overlap:
                // Tesseract gave "Paper" a box reaching over "A4").
                let level =
                    |o: &BBox| (center_y(o) - center_y(&b)).abs() < 0.25 * h.min(o[3] - o[1]);
                same_row(&b, &l.bbox)
                    && !l.words.iter().any(|&j| {
                        let o = &words[j].bbox;
                        o[0] < b[2] && b[0] < o[2] && !level(o)
                    })
            });
            match joined {
                Some(l) => {
                    l.words.push(i);
                    l.bbox = union(l.bbox, b);
                }
                None => lines.push(Line {
                    words: vec![i],
                    bbox: b,
                }),
            }
        }
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
        PageText {
            number,
            source,
            words,
            lines,
            text,
            spans,
            line_starts,
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

    /// Words whose text overlaps the byte range `start..end` of `text`.
    pub fn words_in_span(&self, start: usize, end: usize) -> Vec<usize> {
        (0..self.words.len())
            .filter(|&i| self.spans[i].0 < end && start < self.spans[i].1)
            .collect()
    }

    /// Text of the given words joined in line order, lines separated by `\n`.
    pub fn join(&self, words: &[usize]) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let ws: Vec<&str> = l
                .words
                .iter()
                .filter(|i| words.contains(i))
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
