//! Reading JSON without building it: validation and field lookup over
//! `hifijson`'s lexer, allocating nothing for input without escapes.

use std::borrow::Cow;

use hifijson::num::Lex as _;
use hifijson::str::Lex as _;
use hifijson::str::LexAlloc as _;
use hifijson::token::Lex as _;
use hifijson::{Expect, SliceLexer, Token};

/// Deepest nesting of arrays and objects weir's JSON readers accept.
/// Deeper input is rejected rather than risking the stack of a shard
/// thread (parsers, jq programs and writers all recurse). Same limit as
/// serde_json.
pub const MAX_DEPTH: usize = 128;

/// Why reading JSON failed.
pub(crate) enum Problem {
    /// hifijson's own error.
    Lex(hifijson::Error),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// A reading error and, when known, where the offending token starts (as
/// the number of input bytes left from there: the lexer only knows the
/// rest of its input).
pub(crate) struct ParseError {
    /// What went wrong.
    problem: Problem,
    /// Bytes left at the offending token; `None`: where the lexer stopped.
    rest: Option<usize>,
}

impl ParseError {
    /// An error at the token that starts with `rest` bytes left.
    fn at(problem: impl Into<Problem>, rest: usize) -> Self {
        ParseError {
            problem: problem.into(),
            rest: Some(rest),
        }
    }
}

impl<T: Into<hifijson::Error>> From<T> for Problem {
    fn from(e: T) -> Self {
        Problem::Lex(e.into())
    }
}

impl<T: Into<hifijson::Error>> From<T> for ParseError {
    fn from(e: T) -> Self {
        ParseError {
            problem: Problem::Lex(e.into()),
            rest: None,
        }
    }
}

/// Words for a reading error found at byte `at` (0-based).
fn describe(problem: Problem, at: usize) -> String {
    use hifijson::Error as E;
    match problem {
        Problem::TooDeep => format!("nesting deeper than {MAX_DEPTH} levels at byte {at}"),
        Problem::Lex(E::Token(Expect::Eof)) => format!("trailing characters at byte {at}"),
        Problem::Lex(E::Token(expect)) => format!("expected {expect} at byte {at}"),
        Problem::Lex(E::Num(_)) => format!("expected digit at byte {at}"),
        Problem::Lex(E::Str(hifijson::str::Error::Utf8(_))) => {
            format!("invalid UTF-8 in string at byte {at}")
        }
        Problem::Lex(E::Str(e)) => format!("{e} at byte {at}"),
        Problem::Lex(E::Depth) => format!("nesting too deep at byte {at}"),
    }
}

/// The next token after whitespace, with the bytes left where it starts;
/// at the end of input, the error `expect`.
pub(crate) fn next_token(
    lexer: &mut SliceLexer<'_>,
    expect: Expect,
) -> Result<(Token, usize), ParseError> {
    lexer.eat_whitespace();
    let rest = lexer.as_slice().len();
    match lexer.ws_token() {
        Some(token) => Ok((token, rest)),
        None => Err(ParseError::at(expect, rest)),
    }
}

/// Reads the elements of an array or the entries of an object whose
/// opening token was read, up to `end`: `f` gets the first token of each
/// element, with the bytes left where it starts. (hifijson's `seq`, but
/// keeping where each token starts for error messages.)
pub(crate) fn seq<'a>(
    lexer: &mut SliceLexer<'a>,
    end: Token,
    mut f: impl FnMut(Token, usize, &mut SliceLexer<'a>) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    let (mut token, mut rest) = next_token(lexer, Expect::ValueOrEnd)?;
    if token == end {
        return Ok(());
    }
    loop {
        f(token, rest, lexer)?;
        let (after, at) = next_token(lexer, Expect::CommaOrEnd)?;
        if after == end {
            return Ok(());
        }
        if after != Token::Comma {
            return Err(ParseError::at(Expect::CommaOrEnd, at));
        }
        (token, rest) = next_token(lexer, Expect::Value)?;
    }
}

/// Reads an object key (`token` is its first token) and the colon after
/// it, then the first token of the value, with the bytes left there.
pub(crate) fn key_colon<'a>(
    lexer: &mut SliceLexer<'a>,
    token: Token,
    rest: usize,
) -> Result<(Cow<'a, str>, Token, usize), ParseError> {
    if token != Token::Quote {
        return Err(ParseError::at(Expect::String, rest));
    }
    let key = lexer.str_string()?;
    let (colon, at) = next_token(lexer, Expect::Colon)?;
    if colon != Token::Colon {
        return Err(ParseError::at(Expect::Colon, at));
    }
    let (token, rest) = next_token(lexer, Expect::Value)?;
    Ok((key, token, rest))
}

/// One less level of nesting allowed, or the error for the container that
/// starts with `rest` bytes left.
pub(crate) fn deeper(depth: usize, rest: usize) -> Result<usize, ParseError> {
    depth
        .checked_sub(1)
        .ok_or(ParseError::at(Problem::TooDeep, rest))
}

/// The error for a token that cannot start a value.
pub(crate) fn not_a_value(rest: usize) -> ParseError {
    ParseError::at(Expect::Value, rest)
}

/// Reads `bytes` as exactly one JSON value (whitespace around it allowed)
/// with `read`, which gets the value's first token and the bytes left
/// where it starts. Errors are words with their byte offset.
pub(crate) fn read_one<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(Token, usize, &mut SliceLexer<'a>) -> Result<T, ParseError>,
) -> Result<T, String> {
    let mut lexer = SliceLexer::new(bytes);
    let result = (|| {
        let (token, rest) = next_token(&mut lexer, Expect::Value)?;
        let value = read(token, rest, &mut lexer)?;
        lexer.eat_whitespace();
        match lexer.as_slice().len() {
            0 => Ok(value),
            rest => Err(ParseError::at(Expect::Eof, rest)),
        }
    })();
    result.map_err(|e| {
        let rest = e.rest.unwrap_or(lexer.as_slice().len());
        describe(e.problem, bytes.len() - rest)
    })
}

/// Checks that `bytes` are UTF-8 (the lexer checks strings it decodes,
/// not those it skips).
pub(crate) fn check_utf8(bytes: &[u8]) -> Result<(), String> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
    }
}

/// Validates one JSON value: syntax, UTF-8 and nesting depth, allocating
/// nothing (unless a top-level key has escapes). `on_key` sees each key of
/// a top-level object, unescaped. Returns whether the value is an object.
pub(crate) fn validate(bytes: &[u8], mut on_key: impl FnMut(&str)) -> Result<bool, String> {
    check_utf8(bytes)?;
    read_one(bytes, |token, rest, lexer| match token {
        Token::LCurly => {
            let depth = deeper(MAX_DEPTH, rest)?;
            seq(lexer, Token::RCurly, |token, rest, lexer| {
                let (key, token, rest) = key_colon(lexer, token, rest)?;
                on_key(&key);
                skip(lexer, token, rest, depth)
            })?;
            Ok(true)
        }
        token => skip(lexer, token, rest, MAX_DEPTH).map(|()| false),
    })
}

/// Skips the value that starts with `token` (`rest` bytes left there),
/// allowing `depth` more levels of nesting.
pub(crate) fn skip(
    lexer: &mut SliceLexer<'_>,
    token: Token,
    rest: usize,
    depth: usize,
) -> Result<(), ParseError> {
    match token {
        Token::Null | Token::True | Token::False => Ok(()),
        Token::DigitOrMinus => Ok(lexer.num_ignore().map(|_| ())?),
        Token::Quote => Ok(lexer.str_ignore()?),
        Token::LSquare => {
            let depth = deeper(depth, rest)?;
            seq(lexer, Token::RSquare, |token, rest, lexer| {
                skip(lexer, token, rest, depth)
            })
        }
        Token::LCurly => {
            let depth = deeper(depth, rest)?;
            seq(lexer, Token::RCurly, |token, rest, lexer| {
                if token != Token::Quote {
                    return Err(ParseError::at(Expect::String, rest));
                }
                lexer.str_ignore()?;
                let (colon, at) = next_token(lexer, Expect::Colon)?;
                if colon != Token::Colon {
                    return Err(ParseError::at(Expect::Colon, at));
                }
                let (token, rest) = next_token(lexer, Expect::Value)?;
                skip(lexer, token, rest, depth)
            })
        }
        _ => Err(not_a_value(rest)),
    }
}

/// A value found by [`lookup`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A number, `true` or `false`: its text.
    Scalar(&'a [u8]),
    /// An array or object: its text as written (whitespace included).
    Composite(&'a [u8]),
}

/// Finds the value at `path` (object field names, outermost first) in one
/// JSON value, validating all of it (UTF-8 too). `None` when the path is
/// absent, runs through a non-object, or ends at `null`. Like jq, a
/// duplicate key counts with its last occurrence.
pub(crate) fn lookup<'a, S: AsRef<str>>(
    bytes: &'a [u8],
    path: &[S],
) -> Result<Option<Found<'a>>, String> {
    check_utf8(bytes)?;
    read_one(bytes, |token, rest, lexer| {
        find(bytes, lexer, token, rest, path, MAX_DEPTH)
    })
}

/// Finds `path` in the value that starts with `token` (`rest` bytes left
/// there); `bytes` is the whole input.
fn find<'a, S: AsRef<str>>(
    bytes: &'a [u8],
    lexer: &mut SliceLexer<'a>,
    token: Token,
    rest: usize,
    path: &[S],
    depth: usize,
) -> Result<Option<Found<'a>>, ParseError> {
    let Some((segment, path)) = path.split_first() else {
        // the end of the path: take the value itself
        let text = |lexer: &SliceLexer<'a>| {
            &bytes[bytes.len() - rest..bytes.len() - lexer.as_slice().len()]
        };
        return match token {
            Token::Null => Ok(None),
            Token::Quote => Ok(Some(Found::Str(lexer.str_string()?))),
            Token::LSquare | Token::LCurly => {
                skip(lexer, token, rest, depth)?;
                Ok(Some(Found::Composite(text(lexer))))
            }
            Token::DigitOrMinus => {
                skip(lexer, token, rest, depth)?;
                Ok(Some(Found::Scalar(text(lexer))))
            }
            Token::True => Ok(Some(Found::Scalar(b"true"))),
            Token::False => Ok(Some(Found::Scalar(b"false"))),
            _ => Err(not_a_value(rest)),
        };
    };
    if token != Token::LCurly {
        skip(lexer, token, rest, depth)?;
        return Ok(None);
    }
    let depth = deeper(depth, rest)?;
    let mut found = None;
    seq(lexer, Token::RCurly, |token, rest, lexer| {
        let (key, token, rest) = key_colon(lexer, token, rest)?;
        if *key == *segment.as_ref() {
            found = find(bytes, lexer, token, rest, path, depth)?;
        } else {
            skip(lexer, token, rest, depth)?;
        }
        Ok(())
    })?;
    Ok(found)
}

/// Appends JSON text to `out` without the whitespace outside strings.
pub(crate) fn write_compact(json: &[u8], out: &mut bytes::BytesMut) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            continue;
        }
        out.extend_from_slice(&[b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(json: &str) -> Result<(bool, Vec<String>), String> {
        let mut keys = Vec::new();
        let object = validate(json.as_bytes(), |k| keys.push(k.to_string()))?;
        Ok((object, keys))
    }

    #[test]
    fn validates_and_lists_top_level_keys() {
        assert_eq!(
            keys(r#" {"a": 1, "b\u0021": {"c": [1, 2.5e3, "x"]}} "#),
            Ok((true, vec!["a".into(), "b!".into()]))
        );
        assert_eq!(keys("[1, 2]"), Ok((false, vec![])));
        assert_eq!(keys("\"s\""), Ok((false, vec![])));
    }

    #[test]
    fn errors_name_what_and_where() {
        assert_eq!(keys(r#"{"a" 1}"#), Err("expected colon at byte 5".into()));
        assert_eq!(
            keys(r#"{"a" true}"#),
            Err("expected colon at byte 5".into())
        );
        assert_eq!(
            keys(r#"{"a": 1,}"#),
            Err("expected string at byte 8".into())
        );
        assert_eq!(
            keys(r#"{"a":1 "b":2}"#),
            Err("expected comma or end of sequence at byte 7".into())
        );
        assert_eq!(keys("{1: 2}"), Err("expected string at byte 1".into()));
        assert_eq!(
            keys("[1, 2"),
            Err("expected comma or end of sequence at byte 5".into())
        );
        assert_eq!(keys("[#]"), Err("expected value at byte 1".into()));
        assert_eq!(keys("[12] x"), Err("trailing characters at byte 5".into()));
        assert_eq!(keys("[12]]"), Err("trailing characters at byte 4".into()));
        assert_eq!(keys(""), Err("expected value at byte 0".into()));
        assert_eq!(keys("\"abc"), Err("unterminated string at byte 4".into()));
        assert_eq!(keys("-x"), Err("expected digit at byte 1".into()));
        assert_eq!(keys("nul"), Err("expected value at byte 0".into()));
        assert_eq!(keys("[1, tru]"), Err("expected value at byte 4".into()));
        let mut bad = b"\"a".to_vec();
        bad.extend_from_slice(&[0xff, b'"']);
        assert_eq!(
            validate(&bad, |_| ()),
            Err("invalid UTF-8 at byte 2".into())
        );
    }

    #[test]
    fn rejects_deep_nesting_without_overflowing() {
        let deep = "[".repeat(100_000);
        assert!(keys(&deep)
            .unwrap_err()
            .starts_with("nesting deeper than 128 levels"));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(keys(&ok).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(keys(&too_deep).is_err());
        assert!(lookup(deep.as_bytes(), &["a"]).is_err());
    }

    #[test]
    fn looks_up_paths() {
        let doc =
            br#"{"user": {"id": "u\"1", "n": 12.50, "tags": [1, 2 ], "none": null}, "x": true}"#;
        assert_eq!(
            lookup(doc, &["user", "id"]),
            Ok(Some(Found::Str("u\"1".into())))
        );
        assert_eq!(
            lookup(doc, &["user", "n"]),
            Ok(Some(Found::Scalar(b"12.50")))
        );
        assert_eq!(lookup(doc, &["x"]), Ok(Some(Found::Scalar(b"true"))));
        assert_eq!(
            lookup(doc, &["user", "tags"]),
            Ok(Some(Found::Composite(b"[1, 2 ]")))
        );
        assert_eq!(lookup(doc, &["user", "none"]), Ok(None));
        assert_eq!(lookup(doc, &["user", "missing"]), Ok(None));
        assert_eq!(lookup(doc, &["x", "deeper"]), Ok(None));
        assert_eq!(lookup(b"[1]", &["a"]), Ok(None));
        // the last duplicate wins, as in jq
        assert_eq!(
            lookup(br#"{"a": {"b": 1}, "a": {"c": 2}}"#, &["a", "b"]),
            Ok(None)
        );
        assert_eq!(
            lookup(br#"{"a": 1, "a": 2}"#, &["a"]),
            Ok(Some(Found::Scalar(b"2")))
        );
        // the whole document is validated, also after the field
        assert!(lookup(br#"{"a": 1, "b": }"#, &["a"]).is_err());
        assert!(lookup(br#"{"a": 1} x"#, &["a"]).is_err());
    }

    #[test]
    fn compacts_outside_strings() {
        let mut out = bytes::BytesMut::new();
        write_compact(br#"{ "a b" : [1, "x \" y" ] }"#, &mut out);
        assert_eq!(&out[..], br#"{"a b":[1,"x \" y"]}"#);
    }
}
