//! The template field model: what to extract, where it is, and how to clean it.
//!
//! These serde types are the public contract: the API deserialises and
//! validates user templates with [`Template::from_json`], the worker hands the
//! result to [`crate::extract`]. The JSON shape is documented with examples in
//! `extract/README.md`; every struct denies unknown keys so that a typo in a
//! template is an error at upload time rather than a silently ignored setting.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most fields one template may declare unless the caller sets its own
/// limit ([`Template::from_json_limited`]; Paperhook's `template_max_fields`).
pub const MAX_FIELDS: usize = 200;
/// Longest field (and table column) name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most table columns.
pub const MAX_COLUMNS: usize = 50;
/// Compiled size limit for every regex in a template, in bytes.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Most languages per template (each one costs OCR time).
pub const MAX_LANGUAGES: usize = 5;
/// Longest short text of a template, in characters: a keyword, a label,
/// an enum value, a boolean word, a `currency_strip` string, a replace
/// `find`.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest regex (`pattern`, `label_regex`, `validate`, a table's `end`, a
/// replace `pattern`), in characters.
pub const MAX_PATTERN_CHARS: usize = 2000;
/// Longest date layout, in characters.
pub const MAX_DATE_FORMAT_CHARS: usize = 40;
/// Longest `separator` of `combine: join`, in characters: it is repeated
/// between every match.
pub const MAX_SEPARATOR_CHARS: usize = 16;
/// Largest `default`, as JSON, in bytes.
pub const MAX_DEFAULT_BYTES: usize = 8192;
/// Most `keywords` per template.
pub const MAX_KEYWORDS: usize = 50;
/// Most enum `values` per field.
pub const MAX_ENUM_VALUES: usize = 500;
/// Most `date_formats` per field (each compiles to a regex).
pub const MAX_DATE_FORMATS: usize = 20;
/// Most `currency_strip` strings per field.
pub const MAX_CURRENCY_STRIP: usize = 20;
/// Most `true_values`, and most `false_values`, per field.
pub const MAX_BOOLEAN_WORDS: usize = 50;
/// Most regexes and date formats in one template, counted over its fields
/// (locator patterns and labels, `validate`, replace patterns, date
/// formats): each one is compiled, a few milliseconds apiece.
pub const MAX_TEMPLATE_PATTERNS: usize = 1000;
/// Most values one regex field with `occurrence: "all"` may collect in a
/// document (matches whose text `validate` or the type rejects do not
/// count); past it the extraction fails with `match_limit_exceeded`.
pub const MAX_MATCHES: usize = 10_000;
/// Most `replace` rules per field.
pub const MAX_REPLACE_RULES: usize = 20;
/// Longest `with` of a replace rule, in characters.
pub const MAX_REPLACE_WITH_CHARS: usize = 200;
/// Most group references (`$1`, `${name}`) in one `with`: each one copies
/// the match again.
pub const MAX_REPLACE_REFS: usize = 10;

/// A document template: the fields to extract and document-level settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub fields: Vec<Field>,
    /// Words that must all appear in the document (case-insensitive) for the
    /// template to apply; otherwise extraction fails with `template_mismatch`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Tesseract language codes, e.g. `["deu", "eng"]`. Also selects the
    /// month names accepted in dates.
    #[serde(default = "default_languages")]
    pub languages: Vec<String>,
    /// Rendering resolution for OCR; overrides [`crate::Options::dpi`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpi: Option<u32>,
}

fn default_languages() -> Vec<String> {
    vec!["eng".to_owned()]
}

/// One output field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Allowed values of an `enum` field (matched case-insensitively, the
    /// output is the value as written here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A required field that is not found is reported in
    /// `missing_required`, never guessed.
    #[serde(default)]
    pub required: bool,
    pub locator: Locator,
    /// Accepted date layouts, tried in order (see README). Empty: built-in
    /// unambiguous layouts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub date_formats: Vec<String>,
    /// Decimal separator of numbers and money: `"."` or `","`. Unset: guessed
    /// per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimal_separator: Option<char>,
    /// Thousands separator: `","`, `"."`, `" "` or `"'"`. Unset: guessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thousands_separator: Option<char>,
    /// Extra strings removed from `money` values besides the built-in
    /// currency symbols and ISO codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub currency_strip: Vec<String>,
    #[serde(default)]
    pub whitespace: Whitespace,
    /// Replacements applied in order to the raw text, before typing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<Replace>,
    /// Value used when the field is not found (typed like the field). A
    /// required field with a default is never missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The cleaned text must match this regex, or the candidate is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<String>,
    /// Words meaning `true` for a `boolean` field (added to the built-ins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub true_values: Vec<String>,
    /// Words meaning `false` for a `boolean` field (added to the built-ins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub false_values: Vec<String>,
}

/// The JSON type a field's value is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Integer,
    Number,
    Money,
    Date,
    Boolean,
    Enum,
}

/// How runs of whitespace in a value are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Whitespace {
    /// Trim and turn every run of whitespace into one space.
    #[default]
    Collapse,
    /// Trim the ends only.
    Trim,
    /// Remove all whitespace (IBANs, codes).
    Remove,
    /// Keep the text as located, line breaks included.
    Keep,
}

/// One replacement: exactly one of `find` (literal) or `pattern` (regex,
/// `$1` references allowed in `with`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default)]
    pub with: String,
}

/// Where a field's value is found. JSON: `"locator": {"kind": "region", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Locator {
    Region(RegionLocator),
    Label(LabelLocator),
    Regex(RegexLocator),
    Table(TableLocator),
}

impl Locator {
    /// The locator kind as written in JSON (`region`, `label`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Locator::Region(_) => "region",
            Locator::Label(_) => "label",
            Locator::Regex(_) => "regex",
            Locator::Table(_) => "table",
        }
    }
}

/// Which page(s) a locator looks at: a 1-based number, `"first"`, `"last"`
/// or `"any"` (the first page where the value is found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageSel {
    Number(u32),
    First,
    Last,
    #[default]
    Any,
}

impl Serialize for PageSel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PageSel::Number(n) => s.serialize_u32(*n),
            PageSel::First => s.serialize_str("first"),
            PageSel::Last => s.serialize_str("last"),
            PageSel::Any => s.serialize_str("any"),
        }
    }
}

impl<'de> Deserialize<'de> for PageSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("page must be a page number or \"first\", \"last\", \"any\"")
        })? {
            Raw::N(n) => Ok(PageSel::Number(n)),
            Raw::S(s) => match s.as_str() {
                "first" => Ok(PageSel::First),
                "last" => Ok(PageSel::Last),
                "any" => Ok(PageSel::Any),
                other => Err(serde::de::Error::custom(format!(
                    "page \"{other}\" is not a page number or \"first\", \"last\", \"any\""
                ))),
            },
        }
    }
}

/// A box in normalised page coordinates: `[left, top, right, bottom]`, each
/// in `0..=1`, origin at the top-left corner of the upright page.
pub type NormBox = [f64; 4];

/// The words inside a box, in reading order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLocator {
    #[serde(default = "page_first")]
    pub page: PageSel,
    #[serde(rename = "box")]
    pub bbox: NormBox,
}

fn page_first() -> PageSel {
    PageSel::First
}

/// Where the value lies relative to its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Right,
    Below,
    /// Right of the label if anything is there, else below.
    #[default]
    Auto,
}

/// A value next to an anchor text, e.g. right of `Invoice No`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelLocator {
    /// The label text, matched case-insensitively with flexible whitespace
    /// and an optional trailing colon. Exactly one of `label`, `label_regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_regex: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    /// Largest gap between label and value, as a fraction of the page width
    /// (right) or height (below).
    #[serde(default = "default_max_gap")]
    pub max_gap: f64,
    #[serde(default)]
    pub page: PageSel,
}

fn default_max_gap() -> f64 {
    0.25
}

/// Which matches of a regex are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Occurrence {
    #[default]
    First,
    Last,
    All,
}

/// How several matches (`occurrence: all`) become one value. Without it, an
/// `all` field yields an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    Sum,
    Min,
    Max,
    Join,
}

/// A pattern with exactly one capture group over the layout text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexLocator {
    pub pattern: String,
    #[serde(default)]
    pub occurrence: Occurrence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combine: Option<Combine>,
    /// Separator for `combine: join`.
    #[serde(default = "default_join")]
    pub separator: String,
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default)]
    pub page: PageSel,
}

fn default_join() -> String {
    ", ".to_owned()
}

/// Line items: a header row found by its column labels, rows until `end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableLocator {
    pub columns: Vec<Column>,
    /// Regex over a row's text that ends the table (e.g. `^(Sub)?total`).
    /// Without it the table ends at the first gap of more than two lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default)]
    pub page: PageSel,
}

/// One table column: its output key, its header text and its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// Header text as printed (case-insensitive); default: `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(rename = "type", default = "column_text")]
    pub kind: FieldType,
    /// A row missing a required cell is skipped (e.g. wrapped text lines).
    #[serde(default)]
    pub required: bool,
}

fn column_text() -> FieldType {
    FieldType::Text
}

/// A template that cannot be used; the message names the field and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    field: Option<String>,
    message: String,
}

impl TemplateError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        TemplateError {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn global(message: impl Into<String>) -> Self {
        TemplateError {
            field: None,
            message: message.into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        "invalid_template"
    }

    /// The offending field's name, when the error concerns one field.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(name) => write!(f, "field \"{name}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

thread_local! {
    /// The template regexes compiled on this thread inside
    /// [`with_regex_cache`]; None outside it.
    static REGEXES: RefCell<Option<HashMap<(String, bool), Regex>>> = const { RefCell::new(None) };
}

/// Runs `f`, keeping every template regex it compiles on this thread until
/// it returns. Checking a template and extracting with it compile the same
/// patterns (a few milliseconds for a typical template, most of the
/// extraction of a one-page digital PDF): inside, each is compiled once.
/// [`crate::extract`] runs inside one; a caller that also parses the
/// template ([`Template::from_json`]) can put both in one. Nothing is kept
/// past `f`: what one template's patterns hold in memory goes with it.
pub fn with_regex_cache<T>(f: impl FnOnce() -> T) -> T {
    /// Empties the cache when the outermost call ends, panicking or not.
    struct Outermost;
    impl Drop for Outermost {
        fn drop(&mut self) {
            REGEXES.with_borrow_mut(|cache| *cache = None);
        }
    }
    let outermost = REGEXES.with_borrow_mut(|cache| {
        cache.is_none().then(|| {
            *cache = Some(HashMap::new());
            Outermost
        })
    });
    let out = f();
    drop(outermost);
    out
}

/// Compile a template regex with the crate-wide size limit (reused inside
/// [`with_regex_cache`]).
pub(crate) fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, regex::Error> {
    let key = (pattern.to_owned(), case_insensitive);
    if let Some(re) = REGEXES.with_borrow(|cache| cache.as_ref()?.get(&key).cloned()) {
        return Ok(re);
    }
    #[cfg(test)]
    tests::COMPILED.with(|n| n.set(n.get() + 1));
    let re = RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .multi_line(true)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()?;
    REGEXES.with_borrow_mut(|cache| {
        if let Some(cache) = cache {
            cache.insert(key, re.clone());
        }
    });
    Ok(re)
}

/// A value quoted in an error, shortened: the limits are about long ones.
fn quote(s: &str) -> String {
    const SHOWN: usize = 40;
    if s.chars().count() <= SHOWN {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("{:?}...", head)
    }
}

fn template_error(field: Option<&str>, message: String) -> TemplateError {
    match field {
        Some(f) => TemplateError::field(f, message),
        None => TemplateError::global(message),
    }
}

/// A list's length against its limit.
fn check_count<T>(
    field: Option<&str>,
    what: &str,
    list: &[T],
    max: usize,
) -> Result<(), TemplateError> {
    if list.len() > max {
        return Err(template_error(
            field,
            format!("{what} has {} entries; the limit is {max}", list.len()),
        ));
    }
    Ok(())
}

/// A string's length, in characters, against its limit.
fn check_chars(field: Option<&str>, what: &str, s: &str, max: usize) -> Result<(), TemplateError> {
    // Counting stops past the limit: the string may be huge.
    if s.chars().nth(max).is_some() {
        return Err(template_error(
            field,
            format!(
                "{what} {} is {} characters long; the limit is {max}",
                quote(s),
                s.chars().count()
            ),
        ));
    }
    Ok(())
}

/// A list of words: its length, each word's length, no empty word.
fn check_words(
    field: Option<&str>,
    what: &str,
    list: &[String],
    max: usize,
) -> Result<(), TemplateError> {
    check_count(field, what, list, max)?;
    for w in list {
        if w.trim().is_empty() {
            return Err(template_error(
                field,
                format!("{what} contains an empty value"),
            ));
        }
        check_chars(field, &format!("{what} entry"), w, MAX_TEXT_CHARS)?;
    }
    Ok(())
}

/// Checks a pattern compiled as extraction compiles it (`case_insensitive`
/// included: the size limit can refuse the case-insensitive form alone).
fn check_regex(
    field: &str,
    what: &str,
    pattern: &str,
    case_insensitive: bool,
) -> Result<Regex, TemplateError> {
    check_chars(Some(field), what, pattern, MAX_PATTERN_CHARS)?;
    compile_regex(pattern, case_insensitive).map_err(|e| {
        let detail = e.to_string();
        let detail = detail.lines().last().unwrap_or("").trim().to_owned();
        TemplateError::field(
            field,
            format!("{what} {pattern:?} does not compile: {detail}"),
        )
    })
}

fn check_name(field: &str, what: &str, name: &str) -> Result<(), TemplateError> {
    if name.trim().is_empty() {
        return Err(TemplateError::field(field, format!("{what} is empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(TemplateError::field(
            field,
            format!("{what} {name:?} is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(TemplateError::field(
            field,
            format!("{what} {name:?} contains control characters"),
        ));
    }
    Ok(())
}

/// The first string in `value` (keys included) holding U+0000.
fn nul_string(value: &serde_json::Value) -> Option<&str> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(s.as_str()),
        serde_json::Value::Array(items) => items.iter().find_map(nul_string),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(k.as_str())
            } else {
                nul_string(v)
            }
        }),
        _ => None,
    }
}

/// PostgreSQL cannot store U+0000 in text or jsonb, where templates and
/// results are kept; a template string can end up in a result (`with`,
/// `default`, enum `values`, `separator`).
fn nul_error(field: Option<&str>, s: &str) -> TemplateError {
    template_error(
        field,
        format!("{s:?} contains the character U+0000 (NUL), which cannot be stored"),
    )
}

/// Group references in a replacement (`$1`, `$name`, `${name}`; `$$` is a
/// literal `$`), as `regex::Captures::expand` reads them.
fn group_refs(with: &str) -> usize {
    let b = with.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(c) if *c == b'{' || *c == b'_' || c.is_ascii_alphanumeric() => {
                n += 1;
                i += 2;
            }
            _ => i += 1,
        }
    }
    n
}

fn check_page(field: &str, page: PageSel) -> Result<(), TemplateError> {
    if page == PageSel::Number(0) {
        return Err(TemplateError::field(
            field,
            "page 0 does not exist: pages are numbered from 1",
        ));
    }
    Ok(())
}

fn is_language_code(code: &str) -> bool {
    // Tesseract traineddata names: `eng`, `deu`, `chi_sim`, `deu_latf`.
    let mut parts = code.split('_');
    let base = parts.next().unwrap_or("");
    code.len() <= 32
        && base.len() == 3
        && base.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_lowercase()))
}

impl Template {
    /// Parse and validate a template from JSON, with at most [`MAX_FIELDS`] fields.
    pub fn from_json(value: serde_json::Value) -> Result<Template, TemplateError> {
        Self::from_json_limited(value, MAX_FIELDS, None)
    }

    /// Parse and validate a template from JSON with at most `max_fields`
    /// fields; `setting`, where the limit is configured, is named in the
    /// error.
    pub fn from_json_limited(
        value: serde_json::Value,
        max_fields: usize,
        setting: Option<&str>,
    ) -> Result<Template, TemplateError> {
        // Count before deserialising: a template far over the limit costs
        // nothing more to refuse.
        let count = value
            .get("fields")
            .and_then(|f| f.as_array())
            .map_or(0, Vec::len);
        if count > max_fields {
            let setting = setting.map(|s| format!(" ({s})")).unwrap_or_default();
            return Err(TemplateError::global(format!(
                "template has {count} fields; the limit is {max_fields}{setting}"
            )));
        }
        let template: Template = serde_json::from_value(value).map_err(|e| {
            TemplateError::global(format!("template JSON does not match the model: {e}"))
        })?;
        template.validate()?;
        Ok(template)
    }

    /// The rules a template being saved (created, updated, previewed) is
    /// held to beyond [`Template::validate`]: rules added since templates
    /// were first stored, which the worker's check of a stored template
    /// leaves out so that none stored before them stops extracting. Now:
    /// integer defaults within what an integer field holds (below 9×10^15)
    /// and date defaults of digits.
    pub fn check_new(&self) -> Result<(), TemplateError> {
        self.fields.iter().try_for_each(|f| f.default_fits(true))
    }

    /// Check everything that serde cannot: names, regexes, boxes, per-field
    /// limits. Not the number of fields: that limit is the caller's
    /// ([`Template::from_json_limited`]), so a template stored under a
    /// higher limit still extracts after it is lowered.
    pub fn validate(&self) -> Result<(), TemplateError> {
        if self.fields.is_empty() {
            return Err(TemplateError::global("template has no fields"));
        }
        if self.languages.is_empty() {
            return Err(TemplateError::global(
                "languages is empty; use e.g. [\"eng\"]",
            ));
        }
        if self.languages.len() > MAX_LANGUAGES {
            return Err(TemplateError::global(format!(
                "{} languages given; the limit is {MAX_LANGUAGES}",
                self.languages.len()
            )));
        }
        for lang in &self.languages {
            if !is_language_code(lang) {
                return Err(TemplateError::global(format!(
                    "language {lang:?} is not a Tesseract language code such as \"eng\", \"deu\" or \"chi_sim\""
                )));
            }
        }
        if let Some(dpi) = self.dpi
            && !(72..=600).contains(&dpi)
        {
            return Err(TemplateError::global(format!(
                "dpi {dpi} is outside 72..=600"
            )));
        }
        check_count(None, "keywords", &self.keywords, MAX_KEYWORDS)?;
        for kw in &self.keywords {
            if kw.trim().is_empty() {
                return Err(TemplateError::global("keywords contains an empty keyword"));
            }
            check_chars(None, "keyword", kw, MAX_TEXT_CHARS)?;
            if kw.contains('\0') {
                return Err(nul_error(None, kw));
            }
        }
        // The lists' lengths first, and what they add up to: nothing of a
        // template over a limit is compiled.
        for field in &self.fields {
            field.check_counts()?;
        }
        let patterns: usize = self.fields.iter().map(Field::pattern_count).sum();
        if patterns > MAX_TEMPLATE_PATTERNS {
            return Err(TemplateError::global(format!(
                "template has {patterns} regexes, labels and date formats; the limit is {MAX_TEMPLATE_PATTERNS}"
            )));
        }
        let mut seen = HashSet::new();
        for field in &self.fields {
            check_name(&field.name, "name", &field.name)?;
            if !seen.insert(field.name.as_str()) {
                return Err(TemplateError::field(
                    &field.name,
                    "name is used by more than one field",
                ));
            }
            field.validate()?;
        }
        Ok(())
    }
}

/// A date as the default check took it before it required digits
/// (`"2024-+1-05"`): templates stored then still load.
fn loose_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    // Bytes 4 and 7 are ASCII: every slice below is on char boundaries.
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s[0..4].parse::<i32>().is_ok()
        && s[5..7].parse::<u32>().is_ok()
        && s[8..10].parse::<u32>().is_ok()
}

impl Field {
    /// Whether the field's value is an array of the values found (a regex
    /// field with `occurrence: "all"` and no `combine`).
    pub fn is_list(&self) -> bool {
        matches!(&self.locator, Locator::Regex(r) if r.occurrence == Occurrence::All && r.combine.is_none())
    }

    /// Whether `v` is one value of the field's type, as a default.
    /// `strict` holds integers to what an integer field holds and dates to
    /// digits, as a template being saved is; without it, what templates
    /// stored before those rules passed still does (the worker checks
    /// stored templates again, and must not refuse them).
    fn scalar_fits(&self, v: &serde_json::Value, strict: bool) -> bool {
        use serde_json::Value;
        match (self.kind, v) {
            (FieldType::Text, Value::String(_)) => true,
            (FieldType::Integer, Value::Number(n)) if strict => {
                n.as_i64().is_some_and(crate::post::integer_fits)
            }
            (FieldType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            (FieldType::Number | FieldType::Money, Value::Number(_)) => true,
            (FieldType::Boolean, Value::Bool(_)) => true,
            (FieldType::Date, Value::String(s)) => {
                crate::post::parse_iso_date(s).is_some() || (!strict && loose_iso_date(s))
            }
            (FieldType::Enum, Value::String(s)) => self.values.contains(s),
            _ => false,
        }
    }

    /// Whether the field's default (if any) is of its type ([`Field::scalar_fits`]).
    fn default_fits(&self, strict: bool) -> Result<(), TemplateError> {
        let Some(default) = &self.default else {
            return Ok(());
        };
        let ok = match default {
            serde_json::Value::Array(items) if self.is_list() => {
                items.iter().all(|v| self.scalar_fits(v, strict))
            }
            serde_json::Value::Array(_) => matches!(self.locator, Locator::Table(_)),
            v => v.is_null() || self.scalar_fits(v, strict),
        };
        if ok {
            return Ok(());
        }
        Err(TemplateError::field(
            &self.name,
            format!(
                "default {default} is not a valid {} value",
                format!("{:?}", self.kind).to_lowercase()
            ),
        ))
    }

    /// The lengths of the field's lists.
    fn check_counts(&self) -> Result<(), TemplateError> {
        let name = Some(self.name.as_str());
        check_count(name, "values", &self.values, MAX_ENUM_VALUES)?;
        check_count(name, "date_formats", &self.date_formats, MAX_DATE_FORMATS)?;
        check_count(
            name,
            "currency_strip",
            &self.currency_strip,
            MAX_CURRENCY_STRIP,
        )?;
        check_count(name, "true_values", &self.true_values, MAX_BOOLEAN_WORDS)?;
        check_count(name, "false_values", &self.false_values, MAX_BOOLEAN_WORDS)?;
        if self.replace.len() > MAX_REPLACE_RULES {
            return Err(TemplateError::field(
                &self.name,
                format!(
                    "{} replace rules; the limit is {MAX_REPLACE_RULES}",
                    self.replace.len()
                ),
            ));
        }
        Ok(())
    }

    /// Regexes the field compiles (date formats included).
    fn pattern_count(&self) -> usize {
        let locator = match &self.locator {
            Locator::Region(_) => 0,
            Locator::Label(_) | Locator::Regex(_) => 1,
            Locator::Table(t) => usize::from(t.end.is_some()),
        };
        locator
            + self.date_formats.len()
            + self.replace.iter().filter(|r| r.pattern.is_some()).count()
            + usize::from(self.validate.is_some())
    }

    fn validate(&self) -> Result<(), TemplateError> {
        let name = self.name.as_str();
        if let Some(s) = serde_json::to_value(self)
            .ok()
            .as_ref()
            .and_then(nul_string)
        {
            return Err(nul_error(Some(name), s));
        }
        match self.kind {
            FieldType::Enum if self.values.is_empty() => {
                return Err(TemplateError::field(
                    name,
                    "type enum needs a non-empty \"values\" list",
                ));
            }
            FieldType::Enum if self.values.iter().any(|v| v.trim().is_empty()) => {
                return Err(TemplateError::field(
                    name,
                    "enum values contain an empty value",
                ));
            }
            FieldType::Enum => {
                check_words(Some(name), "values", &self.values, MAX_ENUM_VALUES)?;
            }
            _ if !self.values.is_empty() => {
                return Err(TemplateError::field(
                    name,
                    "\"values\" is only allowed for type enum",
                ));
            }
            _ => {}
        }
        for sep in [self.decimal_separator, self.thousands_separator]
            .into_iter()
            .flatten()
        {
            if !matches!(sep, '.' | ',' | ' ' | '\'' | '\u{a0}' | '\u{202f}') {
                return Err(TemplateError::field(
                    name,
                    format!("separator {sep:?} is not one of . , ' or a space"),
                ));
            }
        }
        if let Some(d) = self.decimal_separator {
            if !matches!(d, '.' | ',') {
                return Err(TemplateError::field(
                    name,
                    format!("decimal_separator {d:?} must be \".\" or \",\""),
                ));
            }
            if self.thousands_separator == Some(d) {
                return Err(TemplateError::field(
                    name,
                    format!("decimal and thousands separator are both {d:?}"),
                ));
            }
        }
        check_words(
            Some(name),
            "currency_strip",
            &self.currency_strip,
            MAX_CURRENCY_STRIP,
        )?;
        check_words(
            Some(name),
            "true_values",
            &self.true_values,
            MAX_BOOLEAN_WORDS,
        )?;
        check_words(
            Some(name),
            "false_values",
            &self.false_values,
            MAX_BOOLEAN_WORDS,
        )?;
        for f in &self.date_formats {
            check_chars(Some(name), "date format", f, MAX_DATE_FORMAT_CHARS)?;
            crate::post::DateFormat::check(f)
                .map_err(|e| TemplateError::field(name, format!("date format {f:?}: {e}")))?;
        }
        for r in &self.replace {
            let chars = r.with.chars().count();
            if chars > MAX_REPLACE_WITH_CHARS {
                return Err(TemplateError::field(
                    name,
                    format!(
                        "replace \"with\" is {chars} characters long; the limit is {MAX_REPLACE_WITH_CHARS}"
                    ),
                ));
            }
            let refs = group_refs(&r.with);
            if refs > MAX_REPLACE_REFS {
                return Err(TemplateError::field(
                    name,
                    format!(
                        "replace \"with\" has {refs} group references ($1, ${{name}}); the limit is {MAX_REPLACE_REFS}"
                    ),
                ));
            }
            match (&r.find, &r.pattern) {
                (Some(f), None) if !f.is_empty() => {
                    check_chars(Some(name), "replace find", f, MAX_TEXT_CHARS)?;
                }
                (None, Some(p)) => {
                    check_regex(name, "replace pattern", p, false)?;
                }
                _ => {
                    return Err(TemplateError::field(
                        name,
                        "each replace rule needs exactly one of a non-empty \"find\" or \"pattern\"",
                    ));
                }
            }
        }
        if let Some(v) = &self.validate {
            check_regex(name, "validate regex", v, false)?;
        }
        if let Some(default) = &self.default {
            let bytes = default.to_string().len();
            if bytes > MAX_DEFAULT_BYTES {
                return Err(TemplateError::field(
                    name,
                    format!("default is {bytes} bytes of JSON; the limit is {MAX_DEFAULT_BYTES}"),
                ));
            }
            self.default_fits(false)?;
        }
        match &self.locator {
            Locator::Region(r) => {
                check_page(name, r.page)?;
                let [l, t, rr, b] = r.bbox;
                if r.bbox
                    .iter()
                    .any(|v| !v.is_finite() || !(0.0..=1.0).contains(v))
                {
                    return Err(TemplateError::field(
                        name,
                        format!("box {:?} has a coordinate outside 0..1", r.bbox),
                    ));
                }
                if rr <= l || b <= t {
                    return Err(TemplateError::field(
                        name,
                        format!(
                            "box {:?} is empty: it must be [left, top, right, bottom] with right > left and bottom > top",
                            r.bbox
                        ),
                    ));
                }
            }
            Locator::Label(l) => {
                check_page(name, l.page)?;
                match (&l.label, &l.label_regex) {
                    (Some(t), None) if !t.trim().is_empty() => {
                        check_chars(Some(name), "label", t, MAX_TEXT_CHARS)?;
                    }
                    (None, Some(p)) => {
                        check_regex(name, "label_regex", p, true)?;
                    }
                    _ => {
                        return Err(TemplateError::field(
                            name,
                            "label locator needs exactly one of a non-empty \"label\" or \"label_regex\"",
                        ));
                    }
                }
                if !l.max_gap.is_finite() || l.max_gap <= 0.0 || l.max_gap > 1.0 {
                    return Err(TemplateError::field(
                        name,
                        format!("max_gap {} must be in (0, 1]", l.max_gap),
                    ));
                }
            }
            Locator::Regex(r) => {
                check_page(name, r.page)?;
                check_chars(Some(name), "separator", &r.separator, MAX_SEPARATOR_CHARS)?;
                let re = check_regex(name, "regex", &r.pattern, r.case_insensitive)?;
                let groups = re.captures_len() - 1;
                if groups != 1 {
                    return Err(TemplateError::field(
                        name,
                        format!(
                            "regex {:?} has {groups} capture groups; it needs exactly one (use (?:...) for others)",
                            r.pattern
                        ),
                    ));
                }
                if let Some(c) = r.combine {
                    if r.occurrence != Occurrence::All {
                        return Err(TemplateError::field(
                            name,
                            "combine needs occurrence \"all\"",
                        ));
                    }
                    let numeric = matches!(
                        self.kind,
                        FieldType::Integer | FieldType::Number | FieldType::Money
                    );
                    let dated = self.kind == FieldType::Date;
                    match c {
                        Combine::Sum if !numeric => {
                            return Err(TemplateError::field(
                                name,
                                "combine \"sum\" needs a numeric type",
                            ));
                        }
                        Combine::Min | Combine::Max if !(numeric || dated) => {
                            return Err(TemplateError::field(
                                name,
                                "combine \"min\"/\"max\" needs a numeric or date type",
                            ));
                        }
                        Combine::Join if self.kind != FieldType::Text => {
                            return Err(TemplateError::field(
                                name,
                                "combine \"join\" needs type text",
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Locator::Table(t) => {
                check_page(name, t.page)?;
                if t.columns.is_empty() {
                    return Err(TemplateError::field(name, "table has no columns"));
                }
                if t.columns.len() > MAX_COLUMNS {
                    return Err(TemplateError::field(
                        name,
                        format!(
                            "table has {} columns; the limit is {MAX_COLUMNS}",
                            t.columns.len()
                        ),
                    ));
                }
                let mut seen = HashSet::new();
                for c in &t.columns {
                    check_name(name, "column name", &c.name)?;
                    if let Some(h) = &c.header {
                        check_name(name, "column header", h)?;
                    }
                    if !seen.insert(c.name.as_str()) {
                        return Err(TemplateError::field(
                            name,
                            format!("column {:?} appears twice", c.name),
                        ));
                    }
                    if matches!(c.kind, FieldType::Enum) {
                        return Err(TemplateError::field(
                            name,
                            format!("column {:?}: enum columns are not supported", c.name),
                        ));
                    }
                }
                if let Some(end) = &t.end {
                    check_regex(name, "table end pattern", end, true)?;
                }
                if self.kind != FieldType::Text {
                    return Err(TemplateError::field(
                        name,
                        "a table field has type \"text\"; give each column its type",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    thread_local! {
        /// Regexes this thread compiled (not reused from the cache).
        pub(super) static COMPILED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn one(field: serde_json::Value) -> Result<Template, TemplateError> {
        Template::from_json(json!({ "fields": [field] }))
    }

    /// Parsing a template and extracting with it inside one
    /// `with_regex_cache` compile each pattern once (labels and table ends
    /// are checked case-insensitively, as they are used); outside one, every
    /// use compiles again, and nothing is kept after it.
    #[test]
    fn patterns_are_compiled_once_inside_a_regex_cache() {
        let spec = json!({"fields": [
            {"name": "total", "type": "money",
             "locator": {"kind": "regex", "pattern": "Total\\s+(\\S+)"}},
            {"name": "number", "type": "text",
             "locator": {"kind": "label", "label_regex": "Invoice\\s+No"},
             "validate": "^\\w+$"},
            {"name": "sum", "type": "text",
             "locator": {"kind": "regex", "pattern": "(\\d+)", "occurrence": "all", "combine": "join"},
             "replace": [{"pattern": "0", "with": "o"}]}
        ]});
        let pdf = include_bytes!("../../examples/invoice.pdf");
        let compiled = |f: &dyn Fn()| {
            COMPILED.with(|n| n.set(0));
            f();
            COMPILED.with(|n| n.get())
        };
        let parse_and_extract = || {
            let template = Template::from_json(spec.clone()).unwrap();
            crate::extract(pdf, &template, &crate::Options::default()).unwrap();
        };
        let patterns = 5;
        assert_eq!(compiled(&|| with_regex_cache(parse_and_extract)), patterns);
        // extract() keeps its own: its check and its fields share them.
        let once_more = compiled(&parse_and_extract);
        assert_eq!(once_more, 2 * patterns);
        assert!(
            REGEXES.with_borrow(Option::is_none),
            "a cache outlived its call"
        );
        // Nested calls share the outermost's.
        let nested = || with_regex_cache(|| with_regex_cache(parse_and_extract));
        assert_eq!(compiled(&nested), patterns);
        assert!(REGEXES.with_borrow(Option::is_none));
    }

    #[test]
    fn parses_every_locator_kind_with_defaults() {
        let t = Template::from_json(json!({
            "keywords": ["Invoice"],
            "fields": [
                {"name": "no", "type": "text", "locator": {"kind": "label", "label": "Invoice No"}},
                {"name": "date", "type": "date", "required": true, "date_formats": ["DD.MM.YYYY"],
                 "locator": {"kind": "region", "box": [0.6, 0.1, 0.95, 0.15]}},
                {"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "Total\\s+(\\S+)", "occurrence": "last"}},
                {"name": "items", "type": "text", "locator": {"kind": "table", "end": "^Total",
                  "columns": [{"name": "qty", "type": "integer"}, {"name": "description", "header": "Item"}]}}
            ]
        }))
        .unwrap();
        assert_eq!(t.languages, vec!["eng"]);
        let Locator::Label(l) = &t.fields[0].locator else {
            panic!("label expected")
        };
        assert_eq!(
            (l.direction, l.max_gap, l.page),
            (Direction::Auto, 0.25, PageSel::Any)
        );
        let Locator::Region(r) = &t.fields[1].locator else {
            panic!("region expected")
        };
        assert_eq!(r.page, PageSel::First);
        assert!(t.fields[1].required && !t.fields[0].required);
        // Round trip keeps the shape.
        let back = Template::from_json(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn rejects_typos_and_bad_values_naming_the_field() {
        let cases = [
            (
                json!({"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "(\\d+"}}),
                "field \"total\": regex \"(\\\\d+\" does not compile",
            ),
            (
                json!({"name": "total", "type": "money", "locator": {"kind": "regex", "pattern": "\\d+"}}),
                "has 0 capture groups",
            ),
            (
                json!({"name": "t", "type": "money", "locator": {"kind": "regex", "pattern": "(a)(b)"}}),
                "has 2 capture groups",
            ),
            (
                json!({"name": "b", "type": "text", "locator": {"kind": "region", "box": [0.5, 0.1, 0.4, 0.2]}}),
                "is empty",
            ),
            (
                json!({"name": "b", "type": "text", "locator": {"kind": "region", "box": [0.1, 0.1, 1.4, 0.2]}}),
                "outside 0..1",
            ),
            (
                json!({"name": "e", "type": "enum", "locator": {"kind": "label", "label": "Status"}}),
                "non-empty \"values\"",
            ),
            (
                json!({"name": "l", "type": "text", "locator": {"kind": "label"}}),
                "exactly one of",
            ),
            (
                json!({"name": "l", "type": "text", "locator": {"kind": "label", "label": "A", "max_gap": 0}}),
                "max_gap 0",
            ),
            (
                json!({"name": "p", "type": "text", "locator": {"kind": "region", "page": 0, "box": [0, 0, 1, 1]}}),
                "page 0",
            ),
            (
                json!({"name": "s", "type": "text", "locator": {"kind": "regex", "pattern": "(a)", "combine": "sum", "occurrence": "all"}}),
                "numeric type",
            ),
            (
                json!({"name": "d", "type": "date", "date_formats": ["QQ"], "locator": {"kind": "label", "label": "A"}}),
                "date format \"QQ\"",
            ),
            (
                json!({"name": "d", "type": "integer", "default": "x", "locator": {"kind": "label", "label": "A"}}),
                "default \"x\"",
            ),
            (
                json!({"name": "d", "type": "integer", "default": 9_000_000_000_000_000i64, "locator": {"kind": "label", "label": "A"}}),
                "default 9000000000000000",
            ),
            (
                json!({"name": "d", "type": "date", "default": "2024-+1-05", "locator": {"kind": "label", "label": "A"}}),
                "default \"2024-+1-05\"",
            ),
            (
                json!({"name": "d", "type": "text", "default": ["a"], "locator": {"kind": "label", "label": "A"}}),
                "default [\"a\"]",
            ),
            (
                json!({"name": "d", "type": "integer", "default": [1, "x"], "locator": {"kind": "regex", "pattern": "(\\d+)", "occurrence": "all"}}),
                "default [1,\"x\"]",
            ),
            (
                json!({"name": "", "type": "text", "locator": {"kind": "label", "label": "A"}}),
                "name is empty",
            ),
            (
                json!({"name": "x", "type": "text", "locator": {"kind": "table", "columns": []}}),
                "no columns",
            ),
        ];
        for (field, want) in cases {
            // As a template being saved is checked.
            let err = one(field.clone()).and_then(|t| t.check_new()).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{field}: got {err}, want {want}"
            );
            assert_eq!(err.code(), "invalid_template");
        }
        // Stored before the rules of `check_new`: still loaded (the worker
        // checks stored templates with `validate` only).
        for field in [
            json!({"name": "d", "type": "integer", "default": 9_000_000_000_000_000i64, "locator": {"kind": "label", "label": "A"}}),
            json!({"name": "d", "type": "integer", "default": u64::MAX, "locator": {"kind": "label", "label": "A"}}),
            json!({"name": "d", "type": "date", "default": "2024-+1-05", "locator": {"kind": "label", "label": "A"}}),
        ] {
            let stored = one(field.clone()).unwrap();
            assert!(stored.check_new().is_err(), "{field}");
        }
    }

    #[test]
    fn limits_every_list_and_string() {
        let label = json!({"kind": "label", "label": "A"});
        let long = |n: usize| "x".repeat(n);
        let words = |n: usize| (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>();
        let dates = |n: usize| vec!["DD.MM.YYYY"; n];
        let ok = [
            json!({"name": "f", "type": "enum", "values": words(MAX_ENUM_VALUES), "locator": label}),
            json!({"name": "f", "type": "enum", "values": [long(MAX_TEXT_CHARS)], "locator": label}),
            json!({"name": "f", "type": "date", "date_formats": dates(MAX_DATE_FORMATS), "locator": label}),
            json!({"name": "f", "type": "boolean", "true_values": words(MAX_BOOLEAN_WORDS),
                   "false_values": words(MAX_BOOLEAN_WORDS), "locator": label}),
            json!({"name": "f", "type": "money", "currency_strip": words(MAX_CURRENCY_STRIP), "locator": label}),
            json!({"name": "f", "type": "text", "locator": {"kind": "label", "label": long(MAX_TEXT_CHARS)}}),
            json!({"name": "f", "type": "text", "validate": long(MAX_PATTERN_CHARS), "locator": label}),
            json!({"name": "f", "type": "text", "default": long(MAX_DEFAULT_BYTES - 2), "locator": label}),
            json!({"name": "f", "type": "text", "locator": {"kind": "regex", "pattern": "(a)",
                   "occurrence": "all", "combine": "join", "separator": long(MAX_SEPARATOR_CHARS)}}),
        ];
        for field in ok {
            one(field.clone()).unwrap_or_else(|e| panic!("{field}: {e}"));
        }
        let cases = [
            (
                json!({"name": "f", "type": "enum", "values": words(MAX_ENUM_VALUES + 1), "locator": label}),
                "field \"f\": values has 501 entries; the limit is 500",
            ),
            (
                json!({"name": "f", "type": "enum", "values": ["a", long(201)], "locator": label}),
                "values entry \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"... is 201 characters long; the limit is 200",
            ),
            (
                json!({"name": "f", "type": "date", "date_formats": dates(21), "locator": label}),
                "date_formats has 21 entries; the limit is 20",
            ),
            (
                json!({"name": "f", "type": "date", "date_formats": [format!("DD.MM.YYYY{}", "-".repeat(31))], "locator": label}),
                "is 41 characters long; the limit is 40",
            ),
            (
                json!({"name": "f", "type": "boolean", "true_values": words(51), "locator": label}),
                "true_values has 51 entries; the limit is 50",
            ),
            (
                json!({"name": "f", "type": "boolean", "false_values": [long(201)], "locator": label}),
                "false_values entry",
            ),
            (
                json!({"name": "f", "type": "money", "currency_strip": words(21), "locator": label}),
                "currency_strip has 21 entries; the limit is 20",
            ),
            (
                json!({"name": "f", "type": "money", "currency_strip": [""], "locator": label}),
                "currency_strip contains an empty value",
            ),
            (
                json!({"name": "f", "type": "text", "replace": [{"find": long(201), "with": ""}], "locator": label}),
                "replace find \"xxx",
            ),
            (
                json!({"name": "f", "type": "text", "replace": [{"pattern": long(2001), "with": ""}], "locator": label}),
                "replace pattern \"xxx",
            ),
            (
                json!({"name": "f", "type": "text", "validate": long(2001), "locator": label}),
                "validate regex \"xxx",
            ),
            (
                json!({"name": "f", "type": "text", "default": long(MAX_DEFAULT_BYTES), "locator": label}),
                "default is 8194 bytes of JSON; the limit is 8192",
            ),
            (
                json!({"name": "f", "type": "text", "locator": {"kind": "label", "label": long(201)}}),
                "label \"xxx",
            ),
            (
                json!({"name": "f", "type": "text", "locator": {"kind": "label", "label_regex": long(2001)}}),
                "is 2001 characters long; the limit is 2000",
            ),
            (
                json!({"name": "f", "type": "text", "locator": {"kind": "regex", "pattern": format!("(a){}", long(1998))}}),
                "regex \"(a)xxx",
            ),
            (
                json!({"name": "f", "type": "text", "locator": {"kind": "regex", "pattern": "(a)",
                       "occurrence": "all", "combine": "join", "separator": long(17)}}),
                "separator \"xxxxxxxxxxxxxxxxx\" is 17 characters long; the limit is 16",
            ),
            (
                json!({"name": "f", "type": "text", "locator": {"kind": "table", "end": long(2001),
                       "columns": [{"name": "a"}]}}),
                "table end pattern",
            ),
        ];
        for (field, want) in cases {
            let err = one(field.clone()).unwrap_err();
            assert!(err.to_string().contains(want), "got {err}, want {want}");
            assert_eq!(err.field_name(), Some("f"), "{err}");
            assert!(err.to_string().len() < 300, "{err}");
        }
        let template = |keywords: Vec<String>| {
            Template::from_json(json!({"keywords": keywords, "fields": [
                {"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}}]}))
        };
        assert!(template(words(MAX_KEYWORDS)).is_ok());
        let err = template(words(MAX_KEYWORDS + 1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("keywords has 51 entries; the limit is 50"),
            "{err}"
        );
        let err = template(vec![long(201)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is 201 characters long; the limit is 200"),
            "{err}"
        );
        let err = Template::from_json(
            json!({"languages": [format!("eng{}", "_abcdefgh".repeat(4))],
            "fields": [{"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}}]}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("is not a Tesseract language code"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_list_is_refused_before_any_of_it_is_compiled() {
        // Each date layout compiles to a regex of about 1 ms.
        let started = std::time::Instant::now();
        let err = one(
            json!({"name": "d", "type": "date", "date_formats": vec!["DD.MM.YYYY"; 20_000],
            "locator": {"kind": "label", "label": "A"}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("20000 entries"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Within the limits, validation only checks the layouts' tokens.
        let date_field = |i: usize| {
            json!({"name": format!("d{i}"), "type": "date",
                "date_formats": (0..MAX_DATE_FORMATS).map(|k| format!("DD.MM.YYYY{}", "-".repeat(k))).collect::<Vec<_>>(),
                "locator": {"kind": "label", "label": "A"}})
        };
        let started = std::time::Instant::now();
        let fields: Vec<_> = (0..MAX_TEMPLATE_PATTERNS / (MAX_DATE_FORMATS + 1))
            .map(date_field)
            .collect();
        Template::from_json(json!({ "fields": fields })).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Fields each within their limits add up to too many regexes to
        // compile (some 3 ms each): refused before any is.
        let started = std::time::Instant::now();
        let fields: Vec<_> = (0..MAX_FIELDS).map(date_field).collect();
        let err = Template::from_json(json!({ "fields": fields })).unwrap_err();
        assert!(
            err.to_string()
                .contains("template has 4200 regexes, labels and date formats; the limit is 1000"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn limits_replace_rules() {
        let field = |replace: serde_json::Value| json!({"name": "r", "type": "text", "replace": replace, "locator": {"kind": "label", "label": "A"}});
        let rule = json!({"find": "O", "with": "0"});
        assert!(one(field(json!(vec![rule.clone(); MAX_REPLACE_RULES]))).is_ok());
        let err = one(field(json!(vec![rule; MAX_REPLACE_RULES + 1]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("field \"r\": 21 replace rules; the limit is 20"),
            "{err}"
        );
        let err = one(field(
            json!([{"pattern": "(?s:.)", "with": "$0".repeat(100)}]),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("100 group references"), "{err}");
        let err = one(field(json!([{"pattern": "(.)", "with": "$1".repeat(11)}]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("11 group references ($1, ${name}); the limit is 10"),
            "{err}"
        );
        let err = one(field(json!([{"find": "a", "with": "x".repeat(201)}]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("201 characters long; the limit is 200"),
            "{err}"
        );
        assert!(
            one(field(
                json!([{"pattern": "(\\d+)", "with": "$$$1 ${1}x $a $_ $ $$ $1"}])
            ))
            .is_ok()
        );
        assert_eq!(group_refs("$$$1 ${1}x $a $_ $ $$"), 4);
        assert_eq!(group_refs("$"), 0);
        assert_eq!(group_refs("$0$0"), 2);
    }

    #[test]
    fn rejects_nul_in_any_string() {
        let cases = [
            json!({"name": "r", "type": "text", "replace": [{"find": "x", "with": "a\u{0}"}],
                   "locator": {"kind": "label", "label": "A"}}),
            json!({"name": "d", "type": "text", "default": "n/a\u{0}", "locator": {"kind": "label", "label": "A"}}),
            json!({"name": "e", "type": "enum", "values": ["Paid\u{0}"], "locator": {"kind": "label", "label": "A"}}),
            json!({"name": "j", "type": "text", "locator": {"kind": "regex", "pattern": "(a)",
                   "occurrence": "all", "combine": "join", "separator": "\u{0}"}}),
            json!({"name": "t", "type": "text", "default": [{"k": "\u{0}"}],
                   "locator": {"kind": "table", "columns": [{"name": "k"}]}}),
        ];
        for field in cases {
            let err = one(field.clone()).unwrap_err();
            assert!(err.to_string().contains("U+0000"), "{field}: {err}");
            assert!(err.field_name().is_some(), "{err}");
            assert!(!err.to_string().contains('\0'), "{err:?}");
        }
        let err = Template::from_json(json!({"keywords": ["In\u{0}voice"], "fields": [
            {"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}}]}))
        .unwrap_err();
        assert!(err.to_string().contains("U+0000"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_languages() {
        let err = one(json!({"name": "x", "type": "text", "requird": true, "locator": {"kind": "label", "label": "A"}})).unwrap_err();
        assert!(err.to_string().contains("requird"), "{err}");
        let err = one(json!({"name": "x", "type": "text", "locator": {"kind": "label", "label": "A", "directon": "right"}})).unwrap_err();
        assert!(err.to_string().contains("directon"), "{err}");
        let err =
            one(json!({"name": "x", "type": "txt", "locator": {"kind": "label", "label": "A"}}))
                .unwrap_err();
        assert!(err.to_string().contains("txt"), "{err}");
        let err = Template::from_json(json!({"languages": ["english"], "fields": [
            {"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}}]}))
        .unwrap_err();
        assert!(err.to_string().contains("\"english\""), "{err}");
        let dup = json!({"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}});
        let err = Template::from_json(json!({"fields": [dup.clone(), dup]})).unwrap_err();
        assert!(err.to_string().contains("more than one field"), "{err}");
        let many: Vec<_> = (0..=MAX_FIELDS)
            .map(|i| json!({"name": format!("f{i}"), "type": "text", "locator": {"kind": "label", "label": "A"}}))
            .collect();
        let err = Template::from_json(json!({ "fields": many.clone() })).unwrap_err();
        assert!(err.to_string().contains("limit is 200"), "{err}");
        let err = Template::from_json_limited(json!({ "fields": many[..3] }), 2, Some("max_f"))
            .unwrap_err();
        assert!(err.to_string().contains("limit is 2 (max_f)"), "{err}");
        let big = Template::from_json_limited(json!({ "fields": many }), 500, None).unwrap();
        assert_eq!(big.fields.len(), MAX_FIELDS + 1);
        big.validate()
            .expect("the field count is the caller's limit");
        assert!(
            Template::from_json(json!({"languages": ["chi_sim", "deu"], "fields": [
            {"name": "x", "type": "text", "locator": {"kind": "label", "label": "A"}}]}))
            .is_ok()
        );
    }
}
