//! Post-processing: raw located text to a typed JSON value.
//!
//! Steps, in order, for each candidate text of a field:
//! 1. `replace` rules, in the order written (on the trimmed text unless
//!    `whitespace` is `keep`), within the extraction's [`ReplaceBudget`];
//! 2. for `money`, currency symbols, ISO codes and `currency_strip` removed;
//! 3. the `whitespace` rule;
//! 4. the `validate` regex (a candidate that does not match is rejected);
//! 5. conversion to the field's type (a candidate that does not convert is
//!    rejected, so a locator can move on to its next candidate).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde_json::{Number, Value};

use crate::template::{Field, FieldType, Replace, Whitespace, compile_regex};

/// One token of a date layout such as `DD.MM.YYYY` or `MMMM D, YYYY`.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Year4,
    Year2,
    MonthName,
    Month,
    Day,
    Space,
    Lit(char),
}

/// A parsed date layout. Tokens: `YYYY`, `YY`, `MMMM`/`MMM` (month name or
/// abbreviation in the template's languages), `MM`/`M`, `DD`/`D`; other
/// non-letters are literals; spaces match any whitespace, or none.
#[derive(Debug, Clone)]
pub struct DateFormat {
    tokens: Vec<Tok>,
    re: Regex,
}

impl DateFormat {
    /// Parse a layout; the error says which part is not understood.
    pub fn parse(layout: &str) -> Result<DateFormat, String> {
        let tokens = Self::tokens(layout)?;
        let mut pat = String::from(r"(?i)(?:^|[^\p{L}\p{N}])");
        for t in &tokens {
            let piece = match t {
                Tok::Year4 => r"(\d{4})".to_owned(),
                Tok::Year2 => r"(\d{2})".to_owned(),
                Tok::MonthName => r"(\p{L}{3,}\.?)".to_owned(),
                Tok::Month | Tok::Day => r"(\d{1,2})".to_owned(),
                Tok::Space => r"\s*".to_owned(),
                Tok::Lit(c) => format!(r"\s*{}\s*", regex::escape(&c.to_string())),
            };
            pat.push_str(&piece);
        }
        pat.push_str(r"(?:$|[^\p{L}\p{N}])");
        let re = Regex::new(&pat).map_err(|e| e.to_string())?;
        Ok(DateFormat { tokens, re })
    }

    /// Check a layout without compiling its regex (about 1 ms), for
    /// template validation: every layout that checks also compiles.
    pub fn check(layout: &str) -> Result<(), String> {
        Self::tokens(layout).map(drop)
    }

    fn tokens(layout: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = layout.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let run = chars[i..].iter().take_while(|&&d| d == c).count();
            let tok = match (c, run) {
                ('Y', 4) => Tok::Year4,
                ('Y', 2) => Tok::Year2,
                ('M', 3 | 4) => Tok::MonthName,
                ('M', 1 | 2) => Tok::Month,
                ('D', 1 | 2) => Tok::Day,
                (c, _) if c.is_alphabetic() => {
                    return Err(format!(
                        "{:?} is not a date token (use YYYY, YY, MMMM, MMM, MM, M, DD, D)",
                        chars[i..i + run].iter().collect::<String>()
                    ));
                }
                (c, _) if c.is_whitespace() => Tok::Space,
                (c, _) => {
                    i += 1;
                    tokens.push(Tok::Lit(c));
                    continue;
                }
            };
            tokens.push(tok);
            i += run;
        }
        let (mut y, mut m, mut d) = (0, 0, 0);
        for t in &tokens {
            match t {
                Tok::Year4 | Tok::Year2 => y += 1,
                Tok::MonthName | Tok::Month => m += 1,
                Tok::Day => d += 1,
                _ => {}
            }
        }
        if (y, m, d) != (1, 1, 1) {
            return Err("a layout needs exactly one year, one month and one day".to_owned());
        }
        Ok(tokens)
    }

    /// The first date in `text` in this layout, as (year, month, day).
    fn find(&self, text: &str, languages: &[String]) -> Option<(i32, u32, u32)> {
        for caps in self.re.captures_iter(text) {
            let mut groups = caps.iter().skip(1).flatten();
            let (mut y, mut m, mut d) = (None, None, None);
            for t in &self.tokens {
                let g = match t {
                    Tok::Year4 | Tok::Year2 | Tok::MonthName | Tok::Month | Tok::Day => {
                        groups.next()
                    }
                    _ => continue,
                };
                let s = g?.as_str();
                match t {
                    Tok::Year4 => y = s.parse::<i32>().ok(),
                    Tok::Year2 => {
                        y = s
                            .parse::<i32>()
                            .ok()
                            .map(|v| if v < 70 { 2000 + v } else { 1900 + v })
                    }
                    Tok::MonthName => m = month_from_name(s, languages),
                    Tok::Month => m = s.parse().ok(),
                    Tok::Day => d = s.parse().ok(),
                    _ => {}
                }
            }
            if let (Some(y), Some(m), Some(d)) = (y, m, d)
                && valid_date(y, m, d)
            {
                return Some((y, m, d));
            }
        }
        None
    }
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    d <= days[m as usize - 1]
}

/// Parse `YYYY-MM-DD` strictly.
pub fn parse_iso_date(s: &str) -> Option<(i32, u32, u32)> {
    let b = s.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9];
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits.iter().all(|&i| b[i].is_ascii_digit())
    {
        return None;
    }
    let y = s[0..4].parse().ok()?;
    let m = s[5..7].parse().ok()?;
    let d = s[8..10].parse().ok()?;
    valid_date(y, m, d).then_some((y, m, d))
}

/// Month names per Tesseract language code; English is always accepted.
const MONTHS: &[(&str, [&str; 12])] = &[
    (
        "eng",
        [
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ],
    ),
    (
        "deu",
        [
            "januar",
            "februar",
            "märz",
            "april",
            "mai",
            "juni",
            "juli",
            "august",
            "september",
            "oktober",
            "november",
            "dezember",
        ],
    ),
    (
        "fra",
        [
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ],
    ),
    (
        "spa",
        [
            "enero",
            "febrero",
            "marzo",
            "abril",
            "mayo",
            "junio",
            "julio",
            "agosto",
            "septiembre",
            "octubre",
            "noviembre",
            "diciembre",
        ],
    ),
    (
        "ita",
        [
            "gennaio",
            "febbraio",
            "marzo",
            "aprile",
            "maggio",
            "giugno",
            "luglio",
            "agosto",
            "settembre",
            "ottobre",
            "novembre",
            "dicembre",
        ],
    ),
    (
        "nld",
        [
            "januari",
            "februari",
            "maart",
            "april",
            "mei",
            "juni",
            "juli",
            "augustus",
            "september",
            "oktober",
            "november",
            "december",
        ],
    ),
    (
        "por",
        [
            "janeiro",
            "fevereiro",
            "março",
            "abril",
            "maio",
            "junho",
            "julho",
            "agosto",
            "setembro",
            "outubro",
            "novembro",
            "dezembro",
        ],
    ),
];

fn fold(s: &str) -> String {
    s.trim_end_matches('.')
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'ä' | 'à' | 'â' | 'á' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'ç' => 'c',
            'ö' | 'ô' | 'ó' => 'o',
            'û' | 'ü' | 'ú' => 'u',
            'î' | 'ï' | 'í' => 'i',
            c => c,
        })
        .collect()
}

/// A month name or an abbreviation of at least three letters (`Sept.`,
/// `Mrz`, `janv.`) in the English or the template's languages.
fn month_from_name(word: &str, languages: &[String]) -> Option<u32> {
    let w = fold(word);
    if w.chars().count() < 3 {
        return None;
    }
    if w == "mrz" {
        return Some(3);
    }
    for (lang, names) in MONTHS {
        if *lang != "eng" && !languages.iter().any(|l| l.split('_').next() == Some(lang)) {
            continue;
        }
        for (i, name) in names.iter().enumerate() {
            let n = fold(name);
            if n == w || (n.starts_with(&w) && w.chars().count() >= 3) {
                return Some(i as u32 + 1);
            }
        }
    }
    None
}

/// Layouts tried when a date field lists none: only unambiguous ones.
const DEFAULT_DATE_FORMATS: &[&str] = &[
    "YYYY-MM-DD",
    "DD.MM.YYYY",
    "D MMMM YYYY",
    "MMMM D, YYYY",
    "MMMM D YYYY",
    "D. MMMM YYYY",
    "YYYY/MM/DD",
];

const CURRENCY: &[&str] = &[
    "US$", "CA$", "AU$", "R$", "€", "$", "£", "¥", "₹", "₽", "₩", "₺", "₪", "₫", "฿", "EUR", "USD",
    "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "CZK", "INR", "CNY", "Fr.",
    "kr", "zł",
];

/// Integer values stay below this magnitude: above it a JSON number loses
/// precision in most consumers (it is just under 2^53).
pub const MAX_INTEGER: i64 = 9_000_000_000_000_000;

/// Whether an integer is one an `integer` field can hold.
pub fn integer_fits(v: i64) -> bool {
    v.unsigned_abs() < MAX_INTEGER as u64
}

/// Most bytes `replace` rules may add to the values of one extraction,
/// summed over every rule applied to every candidate (`$0$0` doubles a
/// text; a few such rules would multiply it past any memory).
pub const MAX_REPLACE_GROWTH_BYTES: usize = 1 << 20;

/// What `replace` rules may still add in one extraction, shared by the
/// fields' [`Post`]s.
#[derive(Debug, Clone)]
pub struct ReplaceBudget(Rc<Cell<usize>>);

impl ReplaceBudget {
    pub fn new(bytes: usize) -> ReplaceBudget {
        ReplaceBudget(Rc::new(Cell::new(bytes)))
    }
}

impl Default for ReplaceBudget {
    fn default() -> Self {
        ReplaceBudget::new(MAX_REPLACE_GROWTH_BYTES)
    }
}

/// `re.replace_all(s, with)`, or `None` once the result passes `cap` bytes
/// (checked after each match, so at most one expansion over it is built).
fn replace_regex_capped(re: &Regex, s: &str, with: &str, cap: usize) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(s) {
        let m = caps.get(0).expect("group 0 always matches");
        out.push_str(&s[last..m.start()]);
        caps.expand(with, &mut out);
        last = m.end();
        if out.len() > cap {
            return None;
        }
    }
    out.push_str(&s[last..]);
    (out.len() <= cap).then_some(out)
}

/// `s.replace(find, with)`, or `None` once the result passes `cap` bytes.
fn replace_literal_capped(s: &str, find: &str, with: &str, cap: usize) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    for (at, _) in s.match_indices(find) {
        out.push_str(&s[last..at]);
        out.push_str(with);
        last = at + find.len();
        if out.len() > cap {
            return None;
        }
    }
    out.push_str(&s[last..]);
    (out.len() <= cap).then_some(out)
}

/// A field's post-processing rules, compiled once per extraction.
#[derive(Debug)]
pub struct Post {
    kind: FieldType,
    replace: Vec<(Option<Regex>, Replace)>,
    budget: ReplaceBudget,
    /// Set when a candidate's replace rules went past the budget.
    over_budget: Cell<bool>,
    validate: Option<Regex>,
    dates: Arc<[DateFormat]>,
    decimal: Option<char>,
    thousands: Option<char>,
    currency: Vec<String>,
    whitespace: Whitespace,
    values: Vec<String>,
    true_values: Vec<String>,
    false_values: Vec<String>,
    languages: Vec<String>,
}

impl Post {
    /// Compile a (validated) field's rules. Invalid rules were rejected by
    /// `Template::validate`; anything that still fails to compile is dropped.
    pub fn new(field: &Field, languages: &[String], budget: &ReplaceBudget) -> Post {
        // Date layouts compile to Unicode-aware regexes (about 1 ms each):
        // only for fields that type dates, and the defaults only once.
        let needs_dates = field.kind == FieldType::Date
            || matches!(&field.locator, crate::template::Locator::Table(t) if t.columns.iter().any(|c| c.kind == FieldType::Date));
        let dates: Arc<[DateFormat]> = if !needs_dates {
            Arc::from(Vec::new())
        } else if field.date_formats.is_empty() {
            static DEFAULTS: OnceLock<Arc<[DateFormat]>> = OnceLock::new();
            DEFAULTS
                .get_or_init(|| {
                    DEFAULT_DATE_FORMATS
                        .iter()
                        .filter_map(|f| DateFormat::parse(f).ok())
                        .collect()
                })
                .clone()
        } else {
            field
                .date_formats
                .iter()
                .filter_map(|f| DateFormat::parse(f).ok())
                .collect()
        };
        let mut currency: Vec<String> = field.currency_strip.clone();
        currency.extend(CURRENCY.iter().map(|s| s.to_string()));
        Post {
            kind: field.kind,
            replace: field
                .replace
                .iter()
                .map(|r| {
                    (
                        r.pattern
                            .as_deref()
                            .and_then(|p| compile_regex(p, false).ok()),
                        r.clone(),
                    )
                })
                .collect(),
            budget: budget.clone(),
            over_budget: Cell::new(false),
            validate: field
                .validate
                .as_deref()
                .and_then(|p| compile_regex(p, false).ok()),
            dates,
            decimal: field.decimal_separator,
            thousands: field.thousands_separator,
            currency,
            whitespace: field.whitespace,
            values: field.values.clone(),
            true_values: field.true_values.iter().map(|s| s.to_lowercase()).collect(),
            false_values: field
                .false_values
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            languages: languages.to_vec(),
        }
    }

    /// Rules for a table cell of the given type, sharing the field's number
    /// and date settings.
    pub fn for_column(&self, kind: FieldType) -> Post {
        Post {
            kind,
            replace: Vec::new(),
            budget: self.budget.clone(),
            over_budget: Cell::new(false),
            validate: None,
            dates: self.dates.clone(),
            decimal: self.decimal,
            thousands: self.thousands,
            currency: self.currency.clone(),
            whitespace: Whitespace::Collapse,
            values: Vec::new(),
            true_values: self.true_values.clone(),
            false_values: self.false_values.clone(),
            languages: self.languages.clone(),
        }
    }

    pub fn kind(&self) -> FieldType {
        self.kind
    }

    /// Whether `replace` rules went past the extraction's budget: the
    /// field's candidates were rejected from then on, and the extraction
    /// fails (`replace_limit_exceeded`).
    pub fn over_budget(&self) -> bool {
        self.over_budget.get()
    }

    /// Steps 1-4: the cleaned text, or `None` if `validate` rejects it (or
    /// the replace rules go past the budget: see [`Post::over_budget`]).
    pub fn clean(&self, raw: &str) -> Option<String> {
        if self.over_budget.get() {
            return None;
        }
        // Ends are trimmed first so that `^`/`$` in replace rules see the value.
        let mut s = if self.whitespace == Whitespace::Keep {
            raw.to_owned()
        } else {
            raw.trim().to_owned()
        };
        for (re, rule) in &self.replace {
            // What each rule adds is charged, even if a later one removes
            // it: building it costs the same.
            let left = self.budget.0.get();
            let cap = s.len().saturating_add(left);
            let out = match (re, &rule.find) {
                (Some(re), _) => replace_regex_capped(re, &s, &rule.with, cap),
                (None, Some(find)) => replace_literal_capped(&s, find, &rule.with, cap),
                (None, None) => continue,
            };
            let Some(out) = out else {
                self.over_budget.set(true);
                return None;
            };
            self.budget.0.set(left - out.len().saturating_sub(s.len()));
            s = out;
        }
        if self.kind == FieldType::Money {
            for c in &self.currency {
                s = s.replace(c.as_str(), " ");
            }
        }
        let s = match self.whitespace {
            Whitespace::Collapse => s.split_whitespace().collect::<Vec<_>>().join(" "),
            Whitespace::Trim => s.trim().to_owned(),
            Whitespace::Remove => s.chars().filter(|c| !c.is_whitespace()).collect(),
            Whitespace::Keep => s,
        };
        if let Some(v) = &self.validate
            && !v.is_match(&s)
        {
            return None;
        }
        Some(s)
    }

    /// Steps 1-5: the typed value, or `None` when the candidate is rejected.
    pub fn apply(&self, raw: &str) -> Option<Value> {
        let s = self.clean(raw)?;
        if s.trim().is_empty() {
            return None;
        }
        match self.kind {
            FieldType::Text => Some(Value::String(s)),
            FieldType::Integer => {
                let (v, _) = parse_number(&s, self.decimal, self.thousands)?;
                (v.fract() == 0.0 && v.abs() < MAX_INTEGER as f64).then(|| Value::from(v as i64))
            }
            FieldType::Number | FieldType::Money => {
                let (v, _) = parse_number(&s, self.decimal, self.thousands)?;
                Number::from_f64(v).map(Value::Number)
            }
            FieldType::Date => self
                .dates
                .iter()
                .find_map(|f| f.find(&s, &self.languages))
                .map(|(y, m, d)| Value::String(format!("{y:04}-{m:02}-{d:02}"))),
            FieldType::Boolean => self.boolean(&s).map(Value::Bool),
            FieldType::Enum => self.enumerate(&s).map(Value::String),
        }
    }

    fn boolean(&self, s: &str) -> Option<bool> {
        const TRUE: &[&str] = &[
            "yes", "y", "true", "ja", "oui", "si", "sí", "x", "✓", "✔", "☑", "☒", "[x]", "1", "on",
        ];
        const FALSE: &[&str] = &["no", "n", "false", "nein", "non", "0", "☐", "[ ]", "off"];
        let l = s.trim().to_lowercase();
        let words: Vec<&str> = l.split_whitespace().collect();
        let is = |set: &[&str], extra: &[String]| {
            set.contains(&l.as_str())
                || extra.contains(&l)
                || words
                    .first()
                    .is_some_and(|w| set.contains(w) || extra.iter().any(|e| e == w))
        };
        if is(TRUE, &self.true_values) {
            Some(true)
        } else if is(FALSE, &self.false_values) {
            Some(false)
        } else {
            None
        }
    }

    /// Exact (case-insensitive) match, then a value contained as words, then
    /// the nearest value within one edit per five letters (OCR slips).
    fn enumerate(&self, s: &str) -> Option<String> {
        let l = s.trim().to_lowercase();
        if let Some(v) = self.values.iter().find(|v| v.to_lowercase() == l) {
            return Some(v.clone());
        }
        let padded = format!(
            " {} ",
            l.split(|c: char| !c.is_alphanumeric())
                .collect::<Vec<_>>()
                .join(" ")
        );
        // The longest value contained wins ("Partially Paid" over "Paid"),
        // the first in the template's order among equals.
        if let Some(v) = self
            .values
            .iter()
            .rev()
            .filter(|v| padded.contains(&format!(" {} ", v.to_lowercase())))
            .max_by_key(|v| v.chars().count())
        {
            return Some(v.clone());
        }
        // Only short texts are compared letter by letter: the cost grows
        // with both lengths, for every value and every candidate.
        if l.len() > 4 * (MAX_FUZZY_CHARS + MAX_FUZZY_CHARS / 5) {
            return None;
        }
        let text: Vec<char> = l.chars().collect();
        self.values
            .iter()
            .filter_map(|v| {
                let value: Vec<char> = v.to_lowercase().chars().collect();
                if value.len() > MAX_FUZZY_CHARS {
                    return None;
                }
                edit_distance_within(&value, &text, v.chars().count() / 5).map(|d| (d, v))
            })
            .min_by_key(|(d, _)| *d)
            .map(|(_, v)| v.clone())
    }
}

/// Enum values longer than this (in characters) match exactly or as words
/// only, not within edits.
pub const MAX_FUZZY_CHARS: usize = 64;

/// The edit distance of `a` and `b` if it is at most `max`. Only the band
/// of `max` cells either side of the diagonal is computed: O(len x max).
fn edit_distance_within(a: &[char], b: &[char], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let over = max + 1;
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j.min(over)).collect();
    let mut cur = vec![over; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        let row = i + 1;
        let lo = row.saturating_sub(max).max(1);
        let hi = (row + max).min(b.len());
        cur.fill(over);
        cur[0] = row.min(over);
        let mut best = cur[0];
        for j in lo..=hi {
            let d = (prev[j - 1] + usize::from(*ca != b[j - 1]))
                .min(prev[j] + 1)
                .min(cur[j - 1] + 1)
                .min(over);
            cur[j] = d;
            best = best.min(d);
        }
        if best > max {
            return None;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()]).filter(|d| *d <= max)
}

/// The first number in `s`, and how many decimals it was written with.
///
/// With both separators unset: if `.` and `,` both occur the later one is the
/// decimal separator; a single separator followed by exactly three digits is
/// a thousands separator (`1,250` = 1250, `1.250` = 1250); otherwise decimal.
/// Negative: a leading `-`/`−`, a trailing `-`, or parentheses.
pub fn parse_number(s: &str, decimal: Option<char>, thousands: Option<char>) -> Option<(f64, u32)> {
    let chars: Vec<char> = s.chars().collect();
    // Text is NFKC-normalised: a no-break space declared as the separator
    // arrives as a plain space, so any space stands for a space separator.
    let space_thousands = thousands.is_some_and(char::is_whitespace);
    let thousands = if space_thousands {
        Some(' ')
    } else {
        thousands
    };
    let is_sep =
        |c: char| matches!(c, '.' | ',' | '\'' | '’') || (space_thousands && c.is_whitespace());
    let start = chars.iter().position(|c| c.is_ascii_digit())?;
    let mut end = start;
    while end < chars.len() {
        let c = chars[end];
        if c.is_ascii_digit()
            || (is_sep(c) && chars.get(end + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            end += 1;
        } else {
            break;
        }
    }
    let token: String = chars[start..end].iter().collect();
    let before: String = chars[..start].iter().collect();
    let after: String = chars[end..].iter().collect();
    let negative = before.trim_end().ends_with(['-', '−', '('])
        || (after.starts_with('-') && !after.chars().nth(1).is_some_and(|c| c.is_ascii_digit()));

    let seps: Vec<char> = token.chars().filter(|c| !c.is_ascii_digit()).collect();
    let decimal = match decimal {
        Some(d) => Some(d),
        None => {
            let last = token.rfind(['.', ',']);
            match last {
                None => None,
                Some(i) => {
                    let c = token[i..].chars().next()?;
                    let kinds_dot = seps.contains(&'.');
                    let kinds_comma = seps.contains(&',');
                    let count = seps.iter().filter(|&&s| s == c).count();
                    let digits_after = token.len() - i - 1;
                    // Thousands groups follow one to three digits, never a
                    // leading 0: `0.125` and `1234.567` are decimals.
                    let grouped_lead = (1..=3).contains(&i) && !token.starts_with('0');
                    if kinds_dot && kinds_comma {
                        Some(c)
                    } else if count > 1
                        || (digits_after == 3 && grouped_lead && thousands.is_none())
                        || thousands == Some(c)
                    {
                        None
                    } else {
                        Some(c)
                    }
                }
            }
        }
    };
    let mut out = String::new();
    let mut decimals = 0u32;
    let mut seen_decimal = false;
    for c in token.chars() {
        if c.is_ascii_digit() {
            out.push(c);
            if seen_decimal {
                decimals += 1;
            }
        } else if Some(c) == decimal {
            if seen_decimal {
                return None;
            }
            seen_decimal = true;
            out.push('.');
        }
    }
    let v: f64 = out.parse().ok()?;
    Some((if negative { -v } else { v }, decimals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn post(field: serde_json::Value) -> Post {
        let mut f = field;
        f["name"] = json!("f");
        f["locator"] = json!({"kind": "label", "label": "X"});
        let field: Field = serde_json::from_value(f).unwrap();
        Post::new(
            &field,
            &["eng".into(), "deu".into(), "fra".into()],
            &ReplaceBudget::default(),
        )
    }

    #[test]
    fn numbers_follow_separators() {
        let cases = [
            ("1,234.56", None, None, 1234.56),
            ("1.234,56", None, None, 1234.56),
            ("1,250", None, None, 1250.0),
            ("12,5", None, None, 12.5),
            ("1 234,50", Some(','), Some(' '), 1234.5),
            ("1'234.50", None, None, 1234.5),
            ("(42.00)", None, None, -42.0),
            ("- 7.5", None, None, -7.5),
            ("1.250", Some('.'), None, 1.25),
            ("1.250.000", None, None, 1_250_000.0),
            // No thousands group after a leading 0 or four digits.
            ("0.125", None, None, 0.125),
            ("0,125 kg", None, None, 0.125),
            ("1234.567", None, None, 1234.567),
            ("999.999", None, None, 999_999.0),
            // A no-break space declared as the separator matches the plain
            // space NFKC leaves of it, and the other way round.
            ("1 234,50", Some(','), Some('\u{a0}'), 1234.5),
            ("1 234 567", None, Some('\u{202f}'), 1_234_567.0),
            ("1\u{a0}234,50", Some(','), Some(' '), 1234.5),
        ];
        for (s, d, t, want) in cases {
            assert_eq!(parse_number(s, d, t).map(|x| x.0), Some(want), "{s}");
        }
        assert_eq!(parse_number("n/a", None, None), None);
    }

    #[test]
    fn money_strips_currency_and_types() {
        let p = post(json!({"type": "money"}));
        assert_eq!(p.apply("EUR 1.234,50 €"), Some(json!(1234.5)));
        assert_eq!(p.apply("$ 99.90"), Some(json!(99.9)));
        assert_eq!(p.apply("Total"), None);
        let p = post(json!({"type": "integer"}));
        assert_eq!(p.apply("Qty: 12"), Some(json!(12)));
        assert_eq!(p.apply("2.5"), None);
        let p = post(
            json!({"type": "money", "currency_strip": ["SFr"], "decimal_separator": ",", "thousands_separator": "."}),
        );
        assert_eq!(p.apply("SFr 1.250"), Some(json!(1250.0)));
    }

    #[test]
    fn dates_in_many_layouts_and_languages() {
        let p = post(json!({"type": "date"}));
        assert_eq!(p.apply("Date: 2024-03-07"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("07.03.2024"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("7 March 2024"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("March 7, 2024"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("7. März 2024"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("7 févr. 2024"), Some(json!("2024-02-07")));
        assert_eq!(p.apply("31.02.2024"), None);
        assert_eq!(
            p.apply("03/07/2024"),
            None,
            "slashes are ambiguous without a layout"
        );
        let p = post(json!({"type": "date", "date_formats": ["MM/DD/YY", "DD-MMM-YYYY"]}));
        assert_eq!(p.apply("03/07/24"), Some(json!("2024-03-07")));
        assert_eq!(p.apply("07-Sep-2023"), Some(json!("2023-09-07")));
        assert!(DateFormat::parse("DD.MM").is_err());
        assert!(DateFormat::parse("DD.QQ.YYYY").is_err());
    }

    #[test]
    fn whitespace_replace_validate_boolean_enum() {
        let p = post(
            json!({"type": "text", "whitespace": "remove", "replace": [{"find": "O", "with": "0"}], "validate": "^DE\\d+$"}),
        );
        assert_eq!(p.apply("DE 89 37O4"), Some(json!("DE893704")));
        assert_eq!(p.apply("FR 12"), None);
        let p = post(json!({"type": "text", "replace": [{"pattern": "^No\\.?\\s*", "with": ""}]}));
        assert_eq!(p.apply("  No. 4711\n  A "), Some(json!("4711 A")));
        let p = post(json!({"type": "text", "whitespace": "keep"}));
        assert_eq!(p.apply(" a\nb "), Some(json!(" a\nb ")));
        let p = post(json!({"type": "boolean", "true_values": ["paid"]}));
        assert_eq!(p.apply("Yes"), Some(json!(true)));
        assert_eq!(p.apply("PAID"), Some(json!(true)));
        assert_eq!(p.apply("nein"), Some(json!(false)));
        assert_eq!(p.apply("maybe"), None);
        let p = post(json!({"type": "enum", "values": ["Paid", "Overdue"]}));
        assert_eq!(p.apply("paid"), Some(json!("Paid")));
        assert_eq!(p.apply("Status: OVERDUE"), Some(json!("Overdue")));
        assert_eq!(p.apply("Overdve"), Some(json!("Overdue")));
        assert_eq!(p.apply("open"), None);
        let p = post(json!({"type": "enum", "values": ["Paid", "Partially Paid", "Due"]}));
        assert_eq!(
            p.apply("Status: Partially Paid"),
            Some(json!("Partially Paid"))
        );
        assert_eq!(p.apply("Status: Paid"), Some(json!("Paid")));
        // Equally long: the first in the template's order.
        let p = post(json!({"type": "enum", "values": ["Paid", "Open"]}));
        assert_eq!(p.apply("Open / Paid"), Some(json!("Paid")));
        let p = post(json!({"type": "enum", "values": ["Open", "Paid"]}));
        assert_eq!(p.apply("Paid / Open"), Some(json!("Open")));
    }

    #[test]
    fn replace_rules_stay_within_the_budget() {
        // Each rule repeats every character 100 times: three would make
        // 3 bytes into 3 MB, ten into 3e20.
        let rule = json!({"pattern": "(?s:.)", "with": "$0".repeat(100)});
        let budget = ReplaceBudget::default();
        let field: Field = serde_json::from_value(json!({"name": "f", "type": "text",
            "replace": vec![rule; 10], "locator": {"kind": "label", "label": "X"}}))
        .unwrap();
        let p = Post::new(&field, &["eng".into()], &budget);
        assert_eq!(p.clean("abc"), None);
        assert!(p.over_budget());
        // Rejected from then on, without running the rules again.
        assert_eq!(p.clean("d"), None);
        // Fields sharing the budget see what is left.
        let left = budget.0.get();
        assert!(left < MAX_REPLACE_GROWTH_BYTES, "{left}");
        let p = post(json!({"type": "text", "replace": [{"pattern": "(?s:.)", "with": "$0$0"}]}));
        assert_eq!(p.apply("ab"), Some(json!("aabb")));
        assert!(!p.over_budget());
        // What a rule adds is charged even when a later rule removes it.
        let budget = ReplaceBudget::new(10);
        let field: Field = serde_json::from_value(json!({"name": "f", "type": "text",
            "replace": [{"find": "a", "with": "aaaa"}, {"find": "aaaa", "with": "a"}],
            "locator": {"kind": "label", "label": "X"}}))
        .unwrap();
        let p = Post::new(&field, &["eng".into()], &budget);
        assert_eq!(p.clean("aa"), Some("aa".to_owned()));
        assert_eq!(budget.0.get(), 4);
        assert_eq!(p.clean("aa"), None);
        assert!(p.over_budget());
    }

    #[test]
    fn capped_replacement_is_replace_all() {
        let re = Regex::new(r"(\d)(x)?").unwrap();
        for (s, with) in [("a1b2x3", "<$1$2>"), ("", "z"), ("123", ""), ("1x", "$$1")] {
            assert_eq!(
                replace_regex_capped(&re, s, with, usize::MAX).as_deref(),
                Some(re.replace_all(s, with).as_ref())
            );
        }
        let empty = Regex::new("").unwrap();
        assert_eq!(
            replace_regex_capped(&empty, "ab", "-", 100).as_deref(),
            Some("-a-b-")
        );
        assert_eq!(replace_regex_capped(&empty, "ab", "-", 4), None);
        assert_eq!(
            replace_literal_capped("aXbX", "X", "yy", 100).as_deref(),
            Some("ayybyy")
        );
        assert_eq!(replace_literal_capped("aXbX", "X", "yy", 5), None);
    }

    #[test]
    fn bounded_edit_distance_agrees_with_the_full_one() {
        fn full(a: &[char], b: &[char]) -> usize {
            let mut prev: Vec<usize> = (0..=b.len()).collect();
            for (i, ca) in a.iter().enumerate() {
                let mut cur = vec![i + 1; b.len() + 1];
                for (j, cb) in b.iter().enumerate() {
                    cur[j + 1] = (prev[j] + usize::from(ca != cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1);
                }
                prev = cur;
            }
            prev[b.len()]
        }
        let words = [
            "",
            "a",
            "paid",
            "piad",
            "overdue",
            "overdve",
            "ovrdue",
            "open",
            "kitten",
            "sitting",
            "abcdefghij",
            "bcdefghijk",
            "xyz",
        ];
        for a in words {
            for b in words {
                let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
                let d = full(&a, &b);
                for max in 0..6 {
                    let want = (d <= max).then_some(d);
                    assert_eq!(edit_distance_within(&a, &b, max), want, "{a:?} {b:?} {max}");
                }
            }
        }
    }

    #[test]
    fn long_enum_values_match_exactly_or_as_words_not_within_edits() {
        // Letter-by-letter comparison costs value length x text length for
        // every value and candidate: long values skip it.
        let long = "x".repeat(MAX_FUZZY_CHARS - 10) + " status";
        let longer = "y".repeat(MAX_FUZZY_CHARS + 30) + " status";
        let p = post(json!({"type": "enum", "values": [long, longer]}));
        let slip = |s: &str| s.replacen("status", "statvs", 1);
        assert_eq!(p.apply(&slip(&long)), Some(json!(long)));
        assert_eq!(p.apply(&slip(&longer)), None);
        assert_eq!(p.apply(&longer.to_uppercase()), Some(json!(longer)));
        assert_eq!(p.apply(&format!("Status: {longer}")), Some(json!(longer)));
    }
}
