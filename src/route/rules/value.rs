//! Value semantics: how a literal written in a rule compares with a value a clinic sent.
//!
//! Everything here runs on the hot path and allocates nothing.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Number, Value};
use std::fmt::{self, Write as _};

/// A scalar written in a rule, with its canonical text precomputed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lit {
    pub(crate) kind: LitKind,
    /// Canonical text: the string itself, `true`/`false`, a number as JSON writes it, `null`.
    pub(crate) text: Box<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LitKind {
    Null,
    Bool(bool),
    /// A YAML number: its value as f64, and exactly when it is an integer.
    Num {
        f: f64,
        i: Option<i128>,
    },
    Str,
}

impl Lit {
    pub(crate) fn null() -> Self {
        Lit {
            kind: LitKind::Null,
            text: "null".into(),
        }
    }
    pub(crate) fn bool(b: bool) -> Self {
        Lit {
            kind: LitKind::Bool(b),
            text: if b { "true" } else { "false" }.into(),
        }
    }
    pub(crate) fn int(i: i128) -> Self {
        Lit {
            kind: LitKind::Num {
                f: i as f64,
                i: Some(i),
            },
            text: i.to_string().into(),
        }
    }
    pub(crate) fn float(f: f64) -> Self {
        let text = match Number::from_f64(f) {
            Some(n) => n.to_string(),
            None => f.to_string(),
        };
        Lit {
            kind: LitKind::Num { f, i: None },
            text: text.into(),
        }
    }
    pub(crate) fn str(s: &str) -> Self {
        Lit {
            kind: LitKind::Str,
            text: s.into(),
        }
    }
}

impl fmt::Display for Lit {
    /// How a literal is shown in explanations: bare, as the operator wrote it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            LitKind::Str if self.text.is_empty() => f.write_str("\"\""),
            _ => f.write_str(&self.text),
        }
    }
}

/// A small stack buffer for writing a number's text without allocating.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 48],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Calls `f` with the canonical text of a scalar (string, number, bool); `None` for null, arrays,
/// objects.
fn with_text<R>(v: &Value, f: impl FnOnce(&str) -> R) -> Option<R> {
    match v {
        Value::String(s) => Some(f(s)),
        Value::Bool(b) => Some(f(if *b { "true" } else { "false" })),
        Value::Number(n) => {
            let mut buf = StackBuf::new();
            write!(buf, "{n}").ok()?;
            Some(f(buf.as_str()))
        }
        _ => None,
    }
}

fn number_as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `equals`: numbers against numbers compare by value; when either side is a string both compare
/// as text (a number's canonical text), so leading zeros and `+` are never lost; null equals only
/// null.
pub(crate) fn equals(v: &Value, lit: &Lit) -> bool {
    match (&lit.kind, v) {
        (LitKind::Null, Value::Null) => true,
        (LitKind::Null, _) | (_, Value::Null) => false,
        (LitKind::Bool(b), Value::Bool(x)) => b == x,
        (LitKind::Bool(_), Value::Number(_)) | (LitKind::Num { .. }, Value::Bool(_)) => false,
        (LitKind::Num { f, i }, Value::Number(x)) => match (i, number_as_i128(x)) {
            (Some(a), Some(b)) => *a == b,
            _ => x.as_f64() == Some(*f),
        },
        (_, Value::String(s)) => **s == *lit.text,
        (LitKind::Str, Value::Number(_) | Value::Bool(_)) => {
            with_text(v, |t| t == &*lit.text).unwrap_or(false)
        }
        _ => false,
    }
}

/// `contains`: a substring of a string (or of a number's text), or an element of an array.
pub(crate) fn contains(v: &Value, lit: &Lit) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|item| equals(item, lit)),
        Value::String(s) => !matches!(lit.kind, LitKind::Null) && s.contains(&*lit.text),
        Value::Number(_) => {
            !matches!(lit.kind, LitKind::Null)
                && with_text(v, |t| t.contains(&*lit.text)).unwrap_or(false)
        }
        _ => false,
    }
}

/// `matches`: the regex against a string, or a number's or bool's text.
pub(crate) fn matches(v: &Value, re: &regex::Regex) -> bool {
    with_text(v, |t| re.is_match(t)).unwrap_or(false)
}

/// Whether a value counts as present for `exists`: not missing, not null, not an empty string, not
/// the unset date.
pub(crate) fn present(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty() && !is_unset_date(s),
        Some(_) => true,
    }
}

/// Clinicea's "no date": `0001-01-01T00:00:00` (with or without time, offset or fraction).
pub(crate) fn is_unset_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.starts_with(b"0001-01-01") && (b.len() == 10 || matches!(b[10], b'T' | b't' | b' '))
}

/// Parses a number the way clinics send them: a JSON number, or a string such as `"42"`, `"-3.5"`,
/// `" 7 "` (surrounding blanks ignored). `inf`, `nan`, hex and the like are not numbers.
pub(crate) fn parse_num_str(s: &str) -> Option<f64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    let first = *digits.as_bytes().first()?;
    if !(first.is_ascii_digit() || first == b'.') {
        return None;
    }
    if !digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn value_num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_num_str(s),
        _ => None,
    }
}

/// What a string is as a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    /// A time, in UTC.
    At(DateTime<Utc>),
    /// Clinicea's unset date `0001-01-01T00:00:00`.
    Unset,
    /// Not a timestamp.
    Invalid,
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

/// Reads a timestamp. With an offset (`Z`, `+05:00`) it is that instant; without one it is a wall
/// clock time in `tz` (a time skipped by a DST change moves forward by an hour, a repeated one takes
/// the earlier instant). A bare date is midnight.
pub(crate) fn parse_time(s: &str, tz: Tz) -> Time {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Time::Invalid;
    }
    if is_unset_date(s) {
        return Time::Unset;
    }
    // Fast path: exactly `YYYY-MM-DDTHH:MM:SS`, the shape the API sends.
    let naive = if b.len() == 19 && matches!(b[10], b'T' | b' ') && b[13] == b':' && b[16] == b':' {
        let date = match (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10])) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d),
            _ => None,
        };
        let time = match (digits(&b[11..13]), digits(&b[14..16]), digits(&b[17..19])) {
            (Some(h), Some(m), Some(sec)) => NaiveTime::from_hms_opt(h, m, sec),
            _ => None,
        };
        match (date, time) {
            (Some(d), Some(t)) => NaiveDateTime::new(d, t),
            _ => return Time::Invalid,
        }
    } else if b.len() == 10 {
        match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => d.and_time(NaiveTime::MIN),
            Err(_) => return Time::Invalid,
        }
    } else {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Time::At(dt.with_timezone(&Utc));
        }
        if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%#z") {
            return Time::At(dt.with_timezone(&Utc));
        }
        match NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
            .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        {
            Ok(n) => n,
            Err(_) => return Time::Invalid,
        }
    };
    local_to_utc(naive, tz).map_or(Time::Invalid, Time::At)
}

fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    if tz == Tz::UTC {
        return Some(naive.and_utc());
    }
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|dt| dt.with_timezone(&Utc))
}

/// The value a `gt`/`gte`/`lt`/`lte` compares with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bound {
    Num(f64),
    Time(DateTime<Utc>),
}

/// The four ordering operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ord4 {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Ord4 {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Ord4::Gt => "gt",
            Ord4::Gte => "gte",
            Ord4::Lt => "lt",
            Ord4::Lte => "lte",
        }
    }
    pub(crate) fn words(self) -> &'static str {
        match self {
            Ord4::Gt => "greater than",
            Ord4::Gte => "at least",
            Ord4::Lt => "less than",
            Ord4::Lte => "at most",
        }
    }
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Ord4::Gt => o == Greater,
            Ord4::Gte => o != Less,
            Ord4::Lt => o == Less,
            Ord4::Lte => o != Greater,
        }
    }
}

/// `gt`/`gte`/`lt`/`lte`: numbers (also numbers sent as strings) against a number; timestamps
/// against a timestamp. Anything else, the unset date included, is false.
pub(crate) fn compare(v: &Value, op: Ord4, bound: &Bound, tz: Tz) -> bool {
    match bound {
        Bound::Num(b) => match value_num(v).and_then(|x| x.partial_cmp(b)) {
            Some(o) => op.holds(o),
            None => false,
        },
        Bound::Time(b) => match v {
            Value::String(s) => match parse_time(s, tz) {
                Time::At(t) => op.holds(t.cmp(b)),
                _ => false,
            },
            _ => false,
        },
    }
}

/// A record value as explanations show it: strings quoted, long values cut.
pub(crate) fn show(v: Option<&Value>) -> String {
    match v {
        None => "missing".into(),
        Some(Value::String(s)) if s.is_empty() => "empty (\"\")".into(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > 80 {
                let cut: String = text.chars().take(77).collect();
                format!("{cut}...")
            } else {
                text
            }
        }
    }
}
