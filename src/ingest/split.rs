//! Splitting a page body, a JSON array, into its elements as the bytes arrive, so that a page of
//! any size is parsed one record at a time and never held whole in memory (neither its bytes nor
//! its parsed tree).
//!
//! The scanner only finds where each top-level element starts and ends: it follows strings (with
//! their escapes) and the nesting of `[`/`{`, and hands each element's bytes to serde_json. Every
//! error carries the cause and the position (line and column in the whole body) in the words
//! serde_json uses for the same input parsed whole, so a malformed page reads the same either way.
//! A body that does not start with `[` is not a list of records: it is collected (up to the
//! caller's byte cap) and judged whole, which names what it is ("an object where an array
//! belongs").

use serde_json::Value;

/// serde_json's recursion limit: a page nested this deep (counting the page's own array) is
/// refused, as serde_json refuses it when it parses a body whole, and before it is buffered.
pub(crate) const RECURSION_LIMIT: usize = 128;

/// JSON's insignificant whitespace.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Why serde_json refused a body, in words: "recursion limit exceeded (nested more than 128
/// levels deep)", "invalid unicode code point", "EOF while parsing a string". Parsing into a
/// `Value` only fails on syntax, whose messages are fixed texts that never quote the body (so no
/// record content reaches a log); anything else is named by its category only.
pub(crate) fn json_error_cause(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {}
        Category::Io => return "I/O error".to_string(),
        Category::Data => return "unexpected data".to_string(),
    }
    let full = e.to_string();
    let cause = full.split(" at line ").next().unwrap_or(&full);
    if cause.contains("recursion limit") {
        format!("{cause} (nested more than {RECURSION_LIMIT} levels deep)")
    } else {
        cause.to_string()
    }
}

/// Where the scanner is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an element or `]`.
    First,
    /// After a `,`: an element must follow.
    Next,
    /// Inside an element.
    Element,
    /// After the closing `]`: only whitespace may follow.
    Done,
    /// The body is not an array: collect it and judge it whole at the end.
    Whole,
}

/// A line and column as serde_json counts them: lines from 1, columns in bytes from the start of
/// the line (the column of a byte is the count of bytes up to and including it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

impl Pos {
    fn advance(&mut self, b: u8) {
        if b == b'\n' {
            self.line += 1;
            self.column = 0;
        } else {
            self.column += 1;
        }
    }
}

/// Splits a JSON array fed in pieces into its elements.
#[derive(Debug)]
pub(crate) struct ArraySplitter {
    state: State,
    /// The current element's bytes (or, in `Whole`, the whole body).
    buf: Vec<u8>,
    /// The brackets open inside the current element.
    open: Vec<u8>,
    in_string: bool,
    escaped: bool,
    /// The position after the last byte consumed.
    pos: Pos,
    /// The position just before the current element's first byte.
    elem_start: Pos,
}

impl Default for ArraySplitter {
    fn default() -> Self {
        ArraySplitter::new()
    }
}

impl ArraySplitter {
    /// A splitter at the start of a body.
    pub(crate) fn new() -> ArraySplitter {
        ArraySplitter {
            state: State::Start,
            buf: Vec::new(),
            open: Vec::new(),
            in_string: false,
            escaped: false,
            pos: Pos { line: 1, column: 0 },
            elem_start: Pos { line: 1, column: 0 },
        }
    }

    /// Consumes the next piece of the body, pushing every element it completes onto `out`.
    /// An error is final: the body is malformed (the text says why and where).
    pub(crate) fn feed(&mut self, bytes: &[u8], out: &mut Vec<Value>) -> Result<(), String> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Whole => {
                    self.buf.extend_from_slice(&bytes[i..]);
                    return Ok(());
                }
                State::Element => {
                    // The run of bytes that cannot end the element is copied in one go.
                    let n = self.scan_element(&bytes[i..]);
                    self.take(&bytes[i..i + n]);
                    i += n;
                    if let Some(&b) = bytes.get(i) {
                        i += 1;
                        self.element_byte(b, out)?;
                    }
                }
                State::Start if !is_ws(bytes[i]) && bytes[i] != b'[' => {
                    // Not a list: judged whole at the end (the next turn copies the rest).
                    self.state = State::Whole;
                }
                _ => {
                    let b = bytes[i];
                    i += 1;
                    self.structural_byte(b, out)?;
                }
            }
        }
        Ok(())
    }

    /// Appends bytes to the current element.
    fn take(&mut self, run: &[u8]) {
        for &b in run {
            self.pos.advance(b);
        }
        self.buf.extend_from_slice(run);
    }

    /// The length of the prefix of `bytes` that neither ends the element nor changes its nesting
    /// (strings are followed here): everything before the next byte [`Self::element_byte`] must
    /// look at.
    fn scan_element(&mut self, bytes: &[u8]) -> usize {
        for (n, &b) in bytes.iter().enumerate() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' | b']' | b'}' | b',' => return n,
                _ => {}
            }
        }
        bytes.len()
    }

    /// A bracket or comma outside a string, inside an element.
    fn element_byte(&mut self, b: u8, out: &mut Vec<Value>) -> Result<(), String> {
        match b {
            b'[' | b'{' => {
                self.take(&[b]);
                self.open.push(b);
                // The page's own array counts as a level, as when serde_json parses it whole.
                if 1 + self.open.len() >= RECURSION_LIMIT {
                    return Err(self.at(
                        self.pos,
                        "recursion limit exceeded (nested more than 128 levels deep)",
                    ));
                }
            }
            b']' | b'}' if !self.open.is_empty() => {
                self.take(&[b]);
                let opener = self.open.pop().unwrap_or(b'[');
                if (opener == b'[') != (b == b']') {
                    return Err(self.element_error());
                }
            }
            b',' if !self.open.is_empty() => self.take(&[b]),
            b'}' => {
                // A `}` where the element should end belongs to a malformed element.
                self.take(&[b]);
                return Err(self.element_error());
            }
            _ => {
                // `,` or `]` at the element's top level: the element is complete.
                match serde_json::from_slice::<Value>(&self.buf) {
                    Ok(v) => {
                        out.push(v);
                        self.buf.clear();
                        self.pos.advance(b);
                        self.state = if b == b',' { State::Next } else { State::Done };
                    }
                    Err(_) => {
                        // With the byte that ended it, serde_json names the cause and the place
                        // as it would in the whole body.
                        self.take(&[b]);
                        return Err(self.element_error());
                    }
                }
            }
        }
        Ok(())
    }

    /// A byte outside any element (states `Start` with `[`, `First`, `Next` and `Done`).
    fn structural_byte(&mut self, b: u8, out: &mut Vec<Value>) -> Result<(), String> {
        if is_ws(b) {
            self.pos.advance(b);
            return Ok(());
        }
        match self.state {
            State::Start => {
                self.pos.advance(b);
                self.state = State::First;
            }
            State::First if b == b']' => {
                self.pos.advance(b);
                self.state = State::Done;
            }
            State::Next if b == b']' => {
                self.pos.advance(b);
                return Err(self.at(self.pos, "trailing comma"));
            }
            State::First | State::Next if b == b',' => {
                self.pos.advance(b);
                return Err(self.at(self.pos, "expected value"));
            }
            State::First | State::Next => {
                self.elem_start = self.pos;
                self.state = State::Element;
                self.buf.clear();
                self.open.clear();
                self.in_string = false;
                self.escaped = false;
                let n = self.scan_element(std::slice::from_ref(&b));
                if n == 1 {
                    self.take(&[b]);
                } else {
                    self.element_byte(b, out)?;
                }
            }
            State::Done => {
                self.pos.advance(b);
                return Err(self.at(self.pos, "trailing characters"));
            }
            State::Element | State::Whole => unreachable!("feed handles these states"),
        }
        Ok(())
    }

    /// The error of the buffered element, at its place in the whole body.
    fn element_error(&self) -> String {
        match serde_json::from_slice::<Value>(&self.buf) {
            // Only a stray last byte can make a complete value fail to end here.
            Ok(_) => self.at(self.pos, "expected `,` or `]`"),
            Err(e) => {
                let p = self.absolute(e.line(), e.column());
                let cause = json_error_cause(&e);
                // What follows one value is, inside a list, a missing comma.
                if cause == "trailing characters" {
                    self.at(p, "expected `,` or `]`")
                } else {
                    self.at(p, &cause)
                }
            }
        }
    }

    /// A position inside the buffered element, as a position in the whole body.
    fn absolute(&self, line: usize, column: usize) -> Pos {
        if line <= 1 {
            Pos {
                line: self.elem_start.line,
                column: self.elem_start.column + column,
            }
        } else {
            Pos {
                line: self.elem_start.line + line - 1,
                column,
            }
        }
    }

    fn at(&self, p: Pos, cause: &str) -> String {
        format!(
            "invalid JSON at line {} column {}: {cause}",
            p.line, p.column
        )
    }

    /// Ends the body. `Ok(None)` means the list was complete (or the body empty: nothing was
    /// pushed); `Ok(Some(body))` means the body is not a list and is returned whole, for the caller
    /// to say what it is.
    pub(crate) fn finish(mut self) -> Result<Option<Vec<u8>>, String> {
        match self.state {
            State::Done | State::Start => Ok(None),
            State::Whole => Ok(Some(std::mem::take(&mut self.buf))),
            State::First => Err(self.at(self.pos, "EOF while parsing a list")),
            State::Next => Err(self.at(self.pos, "EOF while parsing a value")),
            State::Element => match serde_json::from_slice::<Value>(&self.buf) {
                // The last element is whole, but the list never closed.
                Ok(_) => Err(self.at(self.pos, "EOF while parsing a list")),
                Err(_) => Err(self.element_error()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits `body` fed in the given pieces.
    fn split(pieces: &[&[u8]]) -> Result<Vec<Value>, String> {
        let mut s = ArraySplitter::new();
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, &mut out)?;
        }
        match s.finish()? {
            None => Ok(out),
            Some(_) => Err("not a list".into()),
        }
    }

    /// What serde_json says of the body parsed whole, in the splitter's words.
    fn whole(body: &[u8]) -> Result<Vec<Value>, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(vec![]);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(_) => Err("not a list".into()),
            Err(e) => Err(format!(
                "invalid JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                json_error_cause(&e)
            )),
        }
    }

    /// The body split at every byte boundary into two pieces, and byte by byte.
    fn every_split(body: &[u8]) -> Vec<Result<Vec<Value>, String>> {
        let mut all: Vec<_> = (0..=body.len())
            .map(|i| split(&[&body[..i], &body[i..]]))
            .collect();
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        all.push(split(&bytes));
        all
    }

    #[test]
    fn elements_come_out_whole_wherever_the_body_is_cut() {
        let body = br#" [ {"ID":"a","N":"x,]}[{\"\\"} , [1,[2,{"k":[]}]], "s]\"", -1.5e3, true, null, {} ] "#;
        let expected = whole(body).unwrap();
        assert_eq!(expected.len(), 7);
        for got in every_split(body) {
            assert_eq!(got.as_ref(), Ok(&expected));
        }
    }

    #[test]
    fn empty_bodies_and_lists_have_no_records() {
        for body in [&b""[..], b"  \n", b"[]", b" [ \n ] \r\n"] {
            assert_eq!(split(&[body]), Ok(vec![]), "{body:?}");
        }
    }

    #[test]
    fn a_body_that_is_not_a_list_is_returned_whole() {
        let mut s = ArraySplitter::new();
        let mut out = Vec::new();
        s.feed(b"  {\"Message\":", &mut out).unwrap();
        s.feed(b"\"An error\"}", &mut out).unwrap();
        assert_eq!(
            s.finish().unwrap().as_deref(),
            Some(&b"{\"Message\":\"An error\"}"[..])
        );
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_bodies_read_as_serde_json_reads_them_whole() {
        let cases: &[&[u8]] = &[
            b"[",
            b"[1",
            b"[1,",
            b"[1,]",
            b"[,1]",
            b"[1,,2]",
            b"[1 2]",
            b"[1}",
            b"[}",
            b"[{]",
            b"[[1}]",
            b"[{\"a\":1]",
            b"[{\"a\":",
            b"[{\"a\" 1}]",
            b"[tru,1]",
            b"[tru",
            b"[\"abc",
            b"[\"a\\qb\"]",
            b"[\"Ay\xffsha\"]",
            b"[\"a\x01b\"]",
            b"[1] x",
            b"[1]]",
            b"[01]",
            b"[\n  {\"ID\": \"a\"},\n  {\"ID\": }\n]",
            b"[\n1,\n2\n3]",
            b"[{\"a\":1,}]",
            b"[{\"a\":[1,2}]",
        ];
        for body in cases {
            let want = whole(body).expect_err("a malformed case");
            for got in every_split(body) {
                assert_eq!(
                    got.as_ref(),
                    Err(&want),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn nesting_is_refused_where_serde_json_refuses_it() {
        let nested = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
        let deepest = (100..200)
            .take_while(|d| whole(nested(*d).as_bytes()).is_ok())
            .last()
            .unwrap();
        assert!(split(&[nested(deepest).as_bytes()]).is_ok());
        let too_deep = nested(deepest + 1);
        let e = split(&[too_deep.as_bytes()]).unwrap_err();
        assert_eq!(Err(e.clone()), whole(too_deep.as_bytes()), "{e}");
        assert!(
            e.contains("recursion limit exceeded (nested more than 128"),
            "{e}"
        );
        // A million open brackets stop at the limit, not at the end of the body.
        let e = split(&["[".repeat(1_000_000).as_bytes()]).unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
    }

    /// Any JSON value, a few levels deep, with strings full of the characters the scanner watches.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[\\[\\]{},:\"\\\\a-z é\u{1F600}\n\t]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[\\[\\]{},:\"\\\\a-z]{0,6}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_arrays_split_at_any_boundaries_give_serde_json_s_records(
            items in prop::collection::vec(value(), 0..8),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let array = Value::Array(items);
            let body = if pretty {
                serde_json::to_vec_pretty(&array).unwrap()
            } else {
                serde_json::to_vec(&array).unwrap()
            };
            let expected = whole(&body).unwrap();
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for a in at {
                pieces.push(&body[from..a]);
                from = a;
            }
            pieces.push(&body[from..]);
            prop_assert_eq!(split(&pieces), Ok(expected.clone()));
            for got in every_split(&body) {
                prop_assert_eq!(got, Ok(expected.clone()));
            }
        }

        #[test]
        fn a_truncated_or_damaged_array_is_an_error_as_serde_json_says(
            items in prop::collection::vec(value(), 1..6),
            cut in any::<prop::sample::Index>(),
            junk in prop::sample::select(vec![b',', b']', b'}', b'[', b'{', b'"', b':', b'x', b'\\']),
        ) {
            let body = serde_json::to_vec(&Value::Array(items)).unwrap();
            let at = cut.index(body.len());
            // Cut short, and with a stray byte put in.
            let truncated = &body[..at];
            let mut damaged = body.clone();
            damaged.insert(at, junk);
            for b in [truncated.to_vec(), damaged] {
                let want = whole(&b);
                for got in every_split(&b) {
                    match (&got, &want) {
                        (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                        // The same error wherever the body was cut, and the same as serde's
                        // except for a body that does not start a list at all.
                        (Err(g), Err(w)) => prop_assert!(g == w || g == "not a list", "{} vs {} for {:?}", g, w, String::from_utf8_lossy(&b)),
                        _ => prop_assert!(false, "{:?} vs {:?} for {:?}", got, want, String::from_utf8_lossy(&b)),
                    }
                }
            }
        }
    }
}
