//! The four locators: region, label, regex and table, over the page model.

use std::ops::Range;
use std::time::Instant;

use regex::Regex;
use serde_json::{Map, Value};

use crate::layout::{BBox, PageText, Source, union};
use crate::post::Post;
use crate::template::{
    Combine, Direction, LabelLocator, Locator, Occurrence, PageSel, RegexLocator, RegionLocator,
    TableLocator, compile_regex,
};

/// A located, typed value and where it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub value: Value,
    pub page: u32,
    pub bbox: BBox,
    pub confidence: f32,
    pub source: Source,
}

/// Page indices a selector covers, in search order.
pub fn select(sel: PageSel, n: usize) -> Vec<usize> {
    match sel {
        PageSel::Number(p) if p >= 1 && (p as usize) <= n => vec![p as usize - 1],
        PageSel::Number(_) => Vec::new(),
        PageSel::First => (0..n.min(1)).collect(),
        PageSel::Last => n.checked_sub(1).into_iter().collect(),
        PageSel::Any => (0..n).collect(),
    }
}

/// Why locating a field stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A regex field with `occurrence: all` found more than its limit of
    /// values (`max_field_matches`): the extraction fails
    /// (`match_limit_exceeded`) rather than combine some of them into a
    /// wrong value.
    TooManyMatches,
    /// The document's time limit passed while page `page` (1-based) was
    /// searched: a pattern can match at every character of a page, and
    /// each match can look at the rest of its line.
    Deadline { page: u32 },
}

/// When locating must stop: the end of the document's time limit,
/// checked on every page, match, anchor and table line.
#[derive(Debug, Clone, Copy)]
pub struct Until(pub Instant);

impl Until {
    fn check(self, page: &PageText) -> Result<(), Stop> {
        if Instant::now() > self.0 {
            return Err(Stop::Deadline { page: page.number });
        }
        Ok(())
    }
}

/// Locates one field; a regex field with `occurrence: all` may collect at
/// most `max_matches` values.
pub fn locate(
    locator: &Locator,
    pages: &[PageText],
    post: &Post,
    until: Until,
    max_matches: usize,
) -> Result<Option<Found>, Stop> {
    match locator {
        Locator::Region(r) => region(r, pages, post, until),
        Locator::Label(l) => label(l, pages, post, until),
        Locator::Regex(r) => regex(r, pages, post, until, max_matches),
        Locator::Table(t) => table(t, pages, post, until),
    }
}

fn found(page: &PageText, words: &[usize], value: Value) -> Found {
    let (bbox, confidence) = page.extent(words).unwrap_or(([0.0; 4], 0.0));
    Found {
        value,
        page: page.number,
        bbox,
        confidence,
        source: page.source,
    }
}

/// Words mostly inside a box: their centre lies within it.
pub fn words_in_box(page: &PageText, b: &[f64; 4]) -> Vec<usize> {
    (0..page.words.len())
        .filter(|&i| {
            let w = &page.words[i].bbox;
            let (cx, cy) = ((w[0] + w[2]) / 2.0, (w[1] + w[3]) / 2.0);
            cx >= b[0] && cx <= b[2] && cy >= b[1] && cy <= b[3]
        })
        .collect()
}

fn region(
    r: &RegionLocator,
    pages: &[PageText],
    post: &Post,
    until: Until,
) -> Result<Option<Found>, Stop> {
    for i in select(r.page, pages.len()) {
        let page = &pages[i];
        until.check(page)?;
        let words = words_in_box(page, &r.bbox);
        if words.is_empty() {
            continue;
        }
        if let Some(v) = post.apply(&page.join(&words)) {
            return Ok(Some(found(page, &words, v)));
        }
    }
    Ok(None)
}

/// Median character width of a page, in normalised x.
fn char_width(page: &PageText) -> f64 {
    let mut cw: Vec<f64> = page
        .words
        .iter()
        .map(|w| (w.bbox[2] - w.bbox[0]) / w.text.chars().count().max(1) as f64)
        .filter(|v| *v > 0.0)
        .collect();
    cw.sort_by(f64::total_cmp);
    cw.get(cw.len() / 2).copied().unwrap_or(0.01)
}

/// An anchor occurrence: its line, its words, and the unmatched rest of its
/// last word (`No:4711` matched by `No:` leaves `4711`).
struct Anchor {
    line: usize,
    words: Vec<usize>,
    /// Where `words` are in the line's words (they follow each other).
    at: Range<usize>,
    rest: String,
}

/// The regex of a label locator, and whether its matches must end at a
/// word's end (a plain `label`; a `label_regex` is the user's own).
fn label_regex(l: &LabelLocator) -> Option<(Regex, bool)> {
    match (&l.label, &l.label_regex) {
        (_, Some(p)) => compile_regex(p, true).ok().map(|re| (re, false)),
        (Some(t), None) => {
            let tokens: Vec<&str> = t
                .split_whitespace()
                .map(|w| w.trim_end_matches(':'))
                .filter(|w| !w.is_empty())
                .collect();
            // An abbreviation's full stop may follow ("No.: 4711").
            let dot = if tokens.last()?.ends_with(char::is_alphanumeric) {
                r"\.?"
            } else {
                ""
            };
            let label: Vec<String> = tokens.iter().map(|w| regex::escape(w)).collect();
            let pattern = format!(r"(?:^|\b|\s){}{dot}\s*:?", label.join(r"\s*"));
            compile_regex(&pattern, true).ok().map(|re| (re, true))
        }
        (None, None) => None,
    }
}

/// Whether a match ends inside a word: its last character and the next
/// one are both letters or both digits ("No" in "Notes", "Box 1" in
/// "Box 12"; "Ref" before "12345" ends where the number starts).
fn inside_word(line: &str, end: usize) -> bool {
    let (Some(last), Some(next)) = (line[..end].chars().next_back(), line[end..].chars().next())
    else {
        return false;
    };
    (last.is_alphabetic() && next.is_alphabetic()) || (last.is_numeric() && next.is_numeric())
}

/// Where the label `re` matches; with `whole_words`, not inside a word.
fn anchors(page: &PageText, re: &Regex, whole_words: bool) -> Vec<Anchor> {
    let mut out = Vec::new();
    for (li, line) in page.lines.iter().enumerate() {
        // The line as words joined by single spaces, with word offsets.
        let mut s = String::new();
        let mut offs = Vec::new();
        for &w in &line.words {
            if !s.is_empty() {
                s.push(' ');
            }
            offs.push((s.len(), w));
            s.push_str(&page.words[w].text);
        }
        for m in re.find_iter(&s) {
            if m.as_str().trim().is_empty() || (whole_words && inside_word(&s, m.end())) {
                continue;
            }
            // The words overlapping the match, found by binary search: the
            // offsets are in order, and a label regex can match at every
            // character of a long line.
            let end_of = |&(o, w): &(usize, usize)| o + page.words[w].text.len();
            let from = offs.partition_point(|ow| end_of(ow) <= m.start());
            let to = from + offs[from..].partition_point(|&(o, _)| o < m.end());
            let Some(&(lo, last)) = offs[from..to].last() else {
                continue;
            };
            let words: Vec<usize> = offs[from..to].iter().map(|&(_, w)| w).collect();
            let text = &page.words[last].text;
            let cut = m.end().saturating_sub(lo).min(text.len());
            let rest = text.get(cut..).unwrap_or("").trim().to_owned();
            out.push(Anchor {
                line: li,
                words,
                at: from..to,
                rest,
            });
        }
    }
    out
}

/// Words right of the anchor on its line: the first within `max_gap`, then
/// following words until a gap wider than three characters (a new column).
/// `cw` is the page's [`char_width`].
fn right_of(page: &PageText, a: &Anchor, max_gap: f64, cw: f64) -> (Vec<usize>, String) {
    let line = &page.lines[a.line];
    let last = *a.words.last().expect("anchor has words");
    let ax1 = page.words[last].bbox[2];
    // The line's words are in order of left edge: the ones right of the
    // anchor come last, and the loop below stops at the first wide gap
    // (a scan of the whole line, for every anchor, was quadratic).
    let from = line
        .words
        .partition_point(|&w| page.words[w].bbox[0] < ax1 - 1e-6);
    let after = (from..line.words.len())
        .filter(|k| !a.at.contains(k))
        .map(|k| line.words[k]);
    let mut taken: Vec<usize> = Vec::new();
    let mut text = a.rest.clone();
    let mut edge = ax1;
    for w in after {
        let b = page.words[w].bbox;
        let gap = b[0] - edge;
        let limit = if taken.is_empty() && a.rest.is_empty() {
            max_gap
        } else {
            3.0 * cw
        };
        if gap > limit {
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&page.words[w].text);
        taken.push(w);
        edge = b[2];
    }
    if !a.rest.is_empty() {
        taken.insert(0, last);
    }
    (taken, text)
}

/// The nearest line below the anchor (within `max_gap`) holding words under
/// the anchor's span; the run of words overlapping it. `cw` is the page's
/// [`char_width`].
fn below(page: &PageText, a: &Anchor, max_gap: f64, cw: f64) -> (Vec<usize>, String) {
    let mut ab = page.words[a.words[0]].bbox;
    for &w in &a.words {
        ab = union(ab, page.words[w].bbox);
    }
    for line in page.lines.iter().skip(a.line + 1) {
        if line.bbox[1] - ab[3] > max_gap {
            break;
        }
        if line.bbox[1] < ab[3] - 0.3 * (ab[3] - ab[1]) {
            continue;
        }
        // Segments of the line separated by column gaps.
        let mut segs: Vec<Vec<usize>> = Vec::new();
        let mut edge = f64::NEG_INFINITY;
        for &w in &line.words {
            let b = page.words[w].bbox;
            if b[0] - edge > 3.0 * cw || segs.is_empty() {
                segs.push(Vec::new());
            }
            segs.last_mut().expect("pushed").push(w);
            edge = b[2];
        }
        let overlapping: Vec<usize> = segs
            .into_iter()
            .filter(|seg| {
                let x0 = page.words[seg[0]].bbox[0];
                let x1 = page.words[*seg.last().expect("non-empty")].bbox[2];
                x0 < ab[2] + cw && ab[0] - cw < x1
            })
            .flatten()
            .collect();
        if !overlapping.is_empty() {
            let text = overlapping
                .iter()
                .map(|&w| page.words[w].text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return (overlapping, text);
        }
    }
    (Vec::new(), String::new())
}

fn label(
    l: &LabelLocator,
    pages: &[PageText],
    post: &Post,
    until: Until,
) -> Result<Option<Found>, Stop> {
    let Some((re, whole_words)) = label_regex(l) else {
        return Ok(None);
    };
    for i in select(l.page, pages.len()) {
        let page = &pages[i];
        until.check(page)?;
        // Once a page, not once an anchor: it sorts the page's words.
        let cw = char_width(page);
        for a in anchors(page, &re, whole_words) {
            until.check(page)?;
            let mut tries = Vec::new();
            if matches!(l.direction, Direction::Right | Direction::Auto) {
                tries.push(right_of(page, &a, l.max_gap, cw));
            }
            if matches!(l.direction, Direction::Below | Direction::Auto) {
                tries.push(below(page, &a, l.max_gap, cw));
            }
            for (words, text) in tries {
                if words.is_empty() && text.is_empty() {
                    continue;
                }
                if let Some(v) = post.apply(&text) {
                    return Ok(Some(found(page, &words, v)));
                }
            }
        }
    }
    Ok(None)
}

fn regex(
    r: &RegexLocator,
    pages: &[PageText],
    post: &Post,
    until: Until,
    max_matches: usize,
) -> Result<Option<Found>, Stop> {
    let Ok(re) = compile_regex(&r.pattern, r.case_insensitive) else {
        return Ok(None);
    };
    // The values found, and the words of those on the first page they are
    // found on (where the field's box is reported): for `first` and `last`
    // only the one value is kept.
    let mut values: Vec<Value> = Vec::new();
    let mut at: Option<(usize, Vec<usize>)> = None;
    'pages: for i in select(r.page, pages.len()) {
        let page = &pages[i];
        until.check(page)?;
        for caps in re.captures_iter(&page.text) {
            until.check(page)?;
            let Some(g) = caps.get(1) else { continue };
            let Some(v) = post.apply(g.as_str()) else {
                continue;
            };
            let words = || page.words_in_span(g.start(), g.end());
            match r.occurrence {
                Occurrence::First | Occurrence::Last => {
                    values = vec![v];
                    at = Some((i, words()));
                    if r.occurrence == Occurrence::First {
                        break 'pages;
                    }
                }
                Occurrence::All => {
                    if values.len() >= max_matches {
                        return Err(Stop::TooManyMatches);
                    }
                    values.push(v);
                    match &mut at {
                        None => at = Some((i, words())),
                        Some((first, ws)) if *first == i => ws.extend(words()),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    let Some((i, words)) = at else {
        return Ok(None);
    };
    let value = match (r.occurrence, r.combine) {
        (Occurrence::All, None) => Value::Array(values),
        (Occurrence::All, Some(c)) => match combine(c, &values, &r.separator) {
            Some(v) => v,
            None => return Ok(None),
        },
        _ => values.pop().expect("a value for each page found"),
    };
    Ok(Some(found(&pages[i], &words, value)))
}

fn combine(c: Combine, values: &[Value], separator: &str) -> Option<Value> {
    match c {
        Combine::Join => Some(Value::String(
            values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(separator),
        )),
        Combine::Sum => {
            if values.iter().all(Value::is_i64) {
                // Checked: a total past what an integer field holds is no
                // value (the field is not found), never a wrapped number.
                return values
                    .iter()
                    .filter_map(Value::as_i64)
                    .try_fold(0i64, i64::checked_add)
                    .filter(|sum| crate::post::integer_fits(*sum))
                    .map(Value::from);
            }
            let sum: f64 = values.iter().filter_map(Value::as_f64).sum();
            // Round away binary noise (0.1 + 0.2) at the inputs' precision.
            let decimals = values
                .iter()
                .map(|v| v.to_string().split_once('.').map_or(0, |(_, f)| f.len()))
                .max()
                .unwrap_or(0)
                .min(9) as i32;
            let p = 10f64.powi(decimals);
            serde_json::Number::from_f64((sum * p).round() / p).map(Value::Number)
        }
        Combine::Min | Combine::Max => {
            let pick_max = c == Combine::Max;
            if values.iter().all(Value::is_string) {
                // ISO dates order as strings.
                let it = values.iter().filter_map(Value::as_str);
                let v = if pick_max { it.max() } else { it.min() };
                return v.map(|s| Value::String(s.to_owned()));
            }
            let best = values.iter().filter(|v| v.is_number()).max_by(|a, b| {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                if pick_max {
                    a.total_cmp(&b)
                } else {
                    b.total_cmp(&a)
                }
            });
            best.cloned()
        }
    }
}

/// Find a header's words in a line: consecutive words, none of them
/// `claimed` by another column, whose joined text equals the header
/// (case-insensitive, colons ignored). Marks the words it takes.
fn find_header(
    page: &PageText,
    line: usize,
    header: &str,
    claimed: &mut [bool],
) -> Option<(f64, f64)> {
    let want: Vec<String> = header
        .split_whitespace()
        .map(|w| w.trim_end_matches(':').to_lowercase())
        .collect();
    let words = &page.lines[line].words;
    if want.is_empty() || words.len() < want.len() {
        return None;
    }
    for start in 0..=words.len() - want.len() {
        let ok = want.iter().enumerate().all(|(k, w)| {
            !claimed[start + k]
                && page.words[words[start + k]]
                    .text
                    .trim_end_matches(':')
                    .to_lowercase()
                    == *w
        });
        if ok {
            claimed[start..start + want.len()].fill(true);
            return Some((
                page.words[words[start]].bbox[0],
                page.words[words[start + want.len() - 1]].bbox[2],
            ));
        }
    }
    None
}

/// Column bounds from a header line, if it holds every column header:
/// column k owns x from the midpoint of the gap to its left neighbour's
/// header to the midpoint of the gap to its right one. Longer headers take
/// their words first: "Price" is not found inside "Unit Price".
fn header_bounds(t: &TableLocator, page: &PageText, line: usize) -> Option<Vec<(f64, f64)>> {
    let header = |k: usize| {
        let c = &t.columns[k];
        c.header.as_deref().unwrap_or(&c.name)
    };
    let mut longest_first: Vec<usize> = (0..t.columns.len()).collect();
    longest_first.sort_by_key(|&k| std::cmp::Reverse(header(k).split_whitespace().count()));
    let mut claimed = vec![false; page.lines[line].words.len()];
    let mut spans = vec![(0.0, 0.0); t.columns.len()];
    for k in longest_first {
        spans[k] = find_header(page, line, header(k), &mut claimed)?;
    }
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| spans[a].0.total_cmp(&spans[b].0));
    let mut bounds = vec![(f64::NEG_INFINITY, f64::INFINITY); spans.len()];
    for k in 1..order.len() {
        let (p, c) = (order[k - 1], order[k]);
        let mid = (spans[p].1 + spans[c].0) / 2.0;
        bounds[p].1 = mid;
        bounds[c].0 = mid;
    }
    Some(bounds)
}

/// Why the rows under a header stopped.
#[derive(PartialEq)]
enum TableStop {
    /// The end pattern or a large gap: the table is complete.
    Ended,
    /// The page ran out: the table may go on under a repeated header.
    PageEnd,
}

/// A table locator's rows being read: its columns, its end pattern and
/// when to stop.
struct Rows<'a> {
    t: &'a TableLocator,
    end: Option<Regex>,
    until: Until,
}

impl Rows<'_> {
    /// Rows under the header at `hl`, appended to `raw_rows` (cells as text).
    fn under(
        &self,
        page: &PageText,
        hl: usize,
        bounds: &[(f64, f64)],
        raw_rows: &mut Vec<Vec<String>>,
        words_used: &mut Vec<usize>,
    ) -> Result<TableStop, Stop> {
        let Rows { t, end, until } = self;
        let header_h = page.lines[hl].bbox[3] - page.lines[hl].bbox[1];
        let mut prev_bottom = page.lines[hl].bbox[3];
        for line in page.lines.iter().skip(hl + 1) {
            until.check(page)?;
            let line_text = line
                .words
                .iter()
                .map(|&w| page.words[w].text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            if end.as_ref().is_some_and(|e| e.is_match(&line_text)) {
                return Ok(TableStop::Ended);
            }
            if line.bbox[1] - prev_bottom > 2.5 * header_h.max(line.bbox[3] - line.bbox[1]) {
                return Ok(TableStop::Ended);
            }
            prev_bottom = line.bbox[3];
            let mut cells = vec![String::new(); t.columns.len()];
            for &w in &line.words {
                let b = page.words[w].bbox;
                let cx = (b[0] + b[2]) / 2.0;
                if let Some(k) = bounds.iter().position(|(lo, hi)| cx >= *lo && cx < *hi) {
                    if !cells[k].is_empty() {
                        cells[k].push(' ');
                    }
                    cells[k].push_str(&page.words[w].text);
                }
            }
            let complete = t
                .columns
                .iter()
                .zip(&cells)
                .all(|(c, v)| !c.required || !v.is_empty());
            if !complete {
                // A wrapped line continues the previous row's text cells.
                if let Some(prev) = raw_rows.last_mut() {
                    for (k, v) in cells.iter().enumerate() {
                        if !v.is_empty() && t.columns[k].kind == crate::template::FieldType::Text {
                            // Appended in place (a new string per line
                            // was quadratic); trimmed once, when typed.
                            prev[k].push(' ');
                            prev[k].push_str(v);
                        }
                    }
                    words_used.extend(line.words.iter().copied());
                }
                continue;
            }
            words_used.extend(line.words.iter().copied());
            raw_rows.push(cells);
        }
        Ok(TableStop::PageEnd)
    }
}

/// The first table whose header holds every column; when it runs to the
/// end of its page without an end line, it continues on the following
/// pages under a repeated header.
fn table(
    t: &TableLocator,
    pages: &[PageText],
    post: &Post,
    until: Until,
) -> Result<Option<Found>, Stop> {
    let rows = Rows {
        t,
        end: t.end.as_deref().and_then(|p| compile_regex(p, true).ok()),
        until,
    };
    let cell_posts: Vec<Post> = t.columns.iter().map(|c| post.for_column(c.kind)).collect();
    let selected = select(t.page, pages.len());
    for &i in &selected {
        let page = &pages[i];
        for hl in 0..page.lines.len() {
            until.check(page)?;
            let Some(bounds) = header_bounds(t, page, hl) else {
                continue;
            };
            let mut raw_rows: Vec<Vec<String>> = Vec::new();
            let mut words_used: Vec<usize> = Vec::new();
            let mut stop = rows.under(page, hl, &bounds, &mut raw_rows, &mut words_used)?;
            if raw_rows.is_empty() {
                continue;
            }
            let mut next = i + 1;
            while stop == TableStop::PageEnd && t.page == PageSel::Any && next < pages.len() {
                let p = &pages[next];
                until.check(p)?;
                let Some((hl2, b2)) =
                    (0..p.lines.len()).find_map(|l| header_bounds(t, p, l).map(|b| (l, b)))
                else {
                    break;
                };
                // Boxes and words are reported for the first page only.
                stop = rows.under(p, hl2, &b2, &mut raw_rows, &mut Vec::new())?;
                next += 1;
            }
            let rows: Vec<Value> = raw_rows
                .iter()
                .map(|cells| {
                    let mut row = Map::new();
                    for (k, c) in t.columns.iter().enumerate() {
                        let cell = cells[k].trim();
                        let v = if cell.is_empty() {
                            None
                        } else {
                            cell_posts[k].apply(cell)
                        };
                        row.insert(c.name.clone(), v.unwrap_or(Value::Null));
                    }
                    Value::Object(row)
                })
                .collect();
            return Ok(Some(found(page, &words_used, Value::Array(rows))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Word;
    use crate::post::ReplaceBudget;
    use crate::template::{Field, MAX_MATCHES};
    use serde_json::json;

    /// A field's locator and rules, from the JSON of a field.
    fn field(json: serde_json::Value) -> (Locator, Post) {
        let field: Field = serde_json::from_value(json).unwrap();
        let post = Post::new(&field, &["eng".into()], &ReplaceBudget::default());
        (field.locator, post)
    }

    /// No time limit to speak of.
    fn never() -> Until {
        Until(Instant::now() + std::time::Duration::from_secs(3600))
    }

    /// Every kind of locator stops at the document's deadline, on the page
    /// it was searching: past it a pattern matching every character, or a
    /// table header on every line, is not searched to the end.
    #[test]
    fn every_locator_stops_at_the_deadline() {
        let page = |number: u32| {
            let mut p = line(50, "Item", 0.01, 0.02);
            p.number = number;
            p
        };
        let pages = [page(1), page(2)];
        let passed = Until(Instant::now() - std::time::Duration::from_millis(1));
        for locator in [
            json!({"kind": "region", "box": [0.0, 0.0, 1.0, 1.0], "page": "last"}),
            json!({"kind": "label", "label_regex": "Item", "page": "last"}),
            json!({"kind": "regex", "pattern": "(I)", "occurrence": "all", "page": "last"}),
            json!({"kind": "table", "page": "last", "columns": [{"name": "Item"}]}),
        ] {
            let (locator, post) = field(json!({"name": "f", "type": "text", "locator": locator}));
            assert!(locate(&locator, &pages, &post, never(), MAX_MATCHES).is_ok());
            assert_eq!(
                locate(&locator, &pages, &post, passed, MAX_MATCHES).unwrap_err(),
                Stop::Deadline { page: 2 },
                "{locator:?}"
            );
        }
    }

    /// One line of `n` words `text`, each `width` wide, `step` apart.
    fn line(n: usize, text: &str, width: f64, step: f64) -> PageText {
        let words = (0..n)
            .map(|k| Word {
                text: text.into(),
                bbox: [k as f64 * step, 0.5, k as f64 * step + width, 0.51],
                confidence: 1.0,
            })
            .collect();
        PageText::new(1, Source::TextLayer, words)
    }

    #[test]
    fn occurrence_all_collects_at_most_max_matches_values() {
        let (locator, post) = field(json!({"name": "n", "type": "integer",
            "locator": {"kind": "regex", "pattern": "(\\d)", "occurrence": "all", "combine": "sum"}}));
        let page = |n: usize| line(n, "1", 0.5 / n as f64, 1.0 / n as f64);
        let full = [page(MAX_MATCHES)];
        let found = locate(&locator, &full, &post, never(), MAX_MATCHES)
            .unwrap()
            .unwrap();
        assert_eq!(found.value, json!(MAX_MATCHES));
        // One more, on another page: no sum of the first 10,000.
        let over = [page(MAX_MATCHES), page(1)];
        assert_eq!(
            locate(&locator, &over, &post, never(), MAX_MATCHES).unwrap_err(),
            Stop::TooManyMatches
        );
        // Matches the type rejects do not count.
        let mut words = full[0].words.clone();
        words.extend((0..10).map(|k| Word {
            text: "x".into(),
            bbox: [k as f64 * 0.01, 0.8, k as f64 * 0.01 + 0.005, 0.81],
            confidence: 1.0,
        }));
        let (locator, post) = field(json!({"name": "n", "type": "integer",
            "locator": {"kind": "regex", "pattern": "(\\w)", "occurrence": "all"}}));
        let mixed = [PageText::new(1, Source::TextLayer, words)];
        let found = locate(&locator, &mixed, &post, never(), MAX_MATCHES)
            .unwrap()
            .unwrap();
        assert_eq!(found.value.as_array().map(Vec::len), Some(MAX_MATCHES));
    }

    #[test]
    fn first_last_and_all_report_their_values_and_words() {
        let second_page = || {
            let mut page = line(3, "c3", 0.1, 0.2);
            page.number = 2;
            page
        };
        let pages = [
            PageText::new(
                1,
                Source::TextLayer,
                vec![
                    Word {
                        text: "a1".into(),
                        bbox: [0.1, 0.1, 0.2, 0.12],
                        confidence: 0.5,
                    },
                    Word {
                        text: "b2".into(),
                        bbox: [0.3, 0.1, 0.4, 0.12],
                        confidence: 1.0,
                    },
                    Word {
                        text: "zz".into(),
                        bbox: [0.5, 0.1, 0.6, 0.12],
                        confidence: 1.0,
                    },
                ],
            ),
            second_page(),
        ];
        let run = |occurrence: &str| {
            let (locator, post) = field(json!({"name": "t", "type": "text",
                "locator": {"kind": "regex", "pattern": "([a-c]\\d)", "occurrence": occurrence}}));
            let f = locate(&locator, &pages, &post, never(), MAX_MATCHES)
                .unwrap()
                .unwrap();
            (f.value, f.page, f.bbox, f.confidence)
        };
        assert_eq!(run("first"), (json!("a1"), 1, [0.1, 0.1, 0.2, 0.12], 0.5));
        assert_eq!(run("last"), (json!("c3"), 2, pages[1].words[2].bbox, 1.0));
        assert_eq!(
            run("all"),
            (
                json!(["a1", "b2", "c3", "c3", "c3"]),
                1,
                [0.1, 0.1, 0.4, 0.12],
                0.75
            )
        );
    }

    #[test]
    fn a_label_matching_every_word_of_a_long_line_is_located_quickly() {
        // 20,000 anchors, each followed by a word the type rejects: every
        // anchor sorted the page's words (char_width), scanned the line for
        // the words right of it, and its own match's words, each against
        // the anchor's words (some 10^10 steps).
        let (locator, post) = field(json!({"name": "n", "type": "integer",
            "locator": {"kind": "label", "label_regex": "x", "direction": "right"}}));
        let pages = [line(20_000, "x", 1e-5, 5e-5)];
        let started = std::time::Instant::now();
        assert!(
            locate(&locator, &pages, &post, never(), MAX_MATCHES)
                .unwrap()
                .is_none()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The value right of a label, the anchor's words left out.
        let (locator, post) = field(json!({"name": "n", "type": "integer",
            "locator": {"kind": "label", "label": "No", "direction": "right"}}));
        // "x" is past a column gap.
        let words = [("Invoice", 0.1), ("No", 0.2), ("4711", 0.3), ("x", 0.9)]
            .iter()
            .map(|&(t, x)| Word {
                text: t.into(),
                bbox: [x, 0.1, x + 0.08, 0.12],
                confidence: 1.0,
            })
            .collect();
        let pages = [PageText::new(1, Source::TextLayer, words)];
        let found = locate(&locator, &pages, &post, never(), MAX_MATCHES)
            .unwrap()
            .unwrap();
        assert_eq!(found.value, json!(4711));
        assert_eq!(found.bbox, [0.3, 0.1, 0.38, 0.12]);
    }

    #[test]
    fn a_label_is_matched_as_whole_words() {
        let words = |line: &[(&str, f64)], y: f64| -> Vec<Word> {
            line.iter()
                .map(|&(t, x)| Word {
                    text: t.into(),
                    bbox: [x, y, x + 0.08, y + 0.02],
                    confidence: 1.0,
                })
                .collect()
        };
        // "Notes:" comes first and starts with "No".
        let mut all = words(&[("Notes:", 0.1), ("pay", 0.2), ("by", 0.3)], 0.1);
        all.extend(words(
            &[("Invoice", 0.1), ("No.:", 0.2), ("4711", 0.3)],
            0.2,
        ));
        let pages = [PageText::new(1, Source::TextLayer, all)];
        for label in ["No", "Invoice No"] {
            let (locator, post) = field(json!({"name": "n", "type": "text",
                "locator": {"kind": "label", "label": label, "direction": "right"}}));
            let found = locate(&locator, &pages, &post, never(), MAX_MATCHES)
                .unwrap()
                .unwrap();
            assert_eq!(found.value, json!("4711"), "{label}");
        }
        // A label glued to its number, and one ending in a character
        // that is no word character to the regex engine.
        let glued = [Word {
            text: "Ref12345".into(),
            bbox: [0.1, 0.5, 0.2, 0.52],
            confidence: 1.0,
        }];
        let area = words(&[("Fläche", 0.1), ("m²:", 0.2), ("85", 0.3)], 0.6);
        for (label, line, want) in [("Ref", glued.to_vec(), "12345"), ("Fläche m²", area, "85")] {
            let pages = [PageText::new(1, Source::Ocr, line)];
            let (locator, post) = field(json!({"name": "n", "type": "text",
                "locator": {"kind": "label", "label": label, "direction": "right"}}));
            let found = locate(&locator, &pages, &post, never(), MAX_MATCHES)
                .unwrap()
                .unwrap();
            assert_eq!(found.value, json!(want), "{label}");
        }
        // A label ending in punctuation is matched as written.
        let (locator, post) = field(json!({"name": "n", "type": "text",
            "locator": {"kind": "label", "label": "Invoice No.", "direction": "right"}}));
        let found = locate(&locator, &pages, &post, never(), MAX_MATCHES)
            .unwrap()
            .unwrap();
        assert_eq!(found.value, json!("4711"));
    }

    #[test]
    fn an_integer_sum_that_overflows_is_no_value() {
        assert_eq!(
            combine(Combine::Sum, &[json!(2), json!(-5), json!(40)], ", "),
            Some(json!(37))
        );
        // i64 would overflow (debug: a panic; release: a wrapped total).
        assert_eq!(
            combine(Combine::Sum, &[json!(i64::MAX), json!(1)], ", "),
            None
        );
        assert_eq!(
            combine(Combine::Sum, &[json!(i64::MIN), json!(-1)], ", "),
            None
        );
        // Past the largest value an integer field holds (9e15), too.
        let big = json!(8_000_000_000_000_000i64);
        assert_eq!(combine(Combine::Sum, &[big.clone(), big], ", "), None);
        let near = json!(4_000_000_000_000_000i64);
        assert_eq!(
            combine(Combine::Sum, &[near.clone(), near], ", "),
            Some(json!(8_000_000_000_000_000i64))
        );
    }
}
