//! JSON bytes in and out of jaq values: a depth-limited parser over
//! `hifijson` and a compact writer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use bytes::{BufMut, BytesMut};
use hifijson::num::LexWrite as _;
use hifijson::str::LexAlloc as _;
use hifijson::{SliceLexer, Token};
use jaq_json::Val;

use crate::scan::{
    check_utf8, deeper, key_colon, not_a_value, read_one, seq, ParseError, MAX_DEPTH,
};

/// Parses one JSON value (surrounding whitespace allowed, nothing else).
///
/// Integers that fit an `isize` become [`Val::Int`]; other numbers keep
/// their text ([`Val::Num`]), so they are written back as they came.
/// Object keys up to 64 bytes are shared between values parsed on the
/// same thread (at most 4096 distinct keys are remembered), which saves
/// two allocations per key. Nesting deeper than [`MAX_DEPTH`] is an
/// error. Errors say what was wrong and at which byte, e.g.
/// `expected colon at byte 5`.
pub fn parse_json(bytes: &[u8]) -> Result<Val, String> {
    check_utf8(bytes)?;
    read_one(bytes, |token, rest, lexer| {
        parse_value(lexer, token, rest, MAX_DEPTH)
    })
}

/// Parses the value that starts with `token` (`rest` bytes left there),
/// allowing `depth` more levels of nesting.
fn parse_value(
    lexer: &mut SliceLexer<'_>,
    token: Token,
    rest: usize,
    depth: usize,
) -> Result<Val, ParseError> {
    match token {
        Token::Null => Ok(Val::Null),
        Token::True => Ok(Val::Bool(true)),
        Token::False => Ok(Val::Bool(false)),
        Token::DigitOrMinus => {
            let (num, parts) = lexer.num_string()?;
            if parts.dot.is_none() && parts.exp.is_none() {
                if let Ok(i) = num.parse::<isize>() {
                    return Ok(Val::Int(i));
                }
            }
            Ok(Val::Num(Rc::new(num.to_string())))
        }
        Token::Quote => Ok(Val::Str(Rc::new(lexer.str_string()?.into_owned()))),
        Token::LSquare => {
            let depth = deeper(depth, rest)?;
            let mut items = Vec::new();
            seq(lexer, Token::RSquare, |token, rest, lexer| {
                items.push(parse_value(lexer, token, rest, depth)?);
                Ok(())
            })?;
            Ok(Val::Arr(Rc::new(items)))
        }
        Token::LCurly => {
            let depth = deeper(depth, rest)?;
            // `Val::obj` names the map type, which jaq-json does not export
            let Val::Obj(mut obj) = Val::obj(Default::default()) else {
                unreachable!("Val::obj makes an object")
            };
            let Some(map) = Rc::get_mut(&mut obj) else {
                unreachable!("a new Rc is unique")
            };
            seq(lexer, Token::RCurly, |token, rest, lexer| {
                let (key, token, rest) = key_colon(lexer, token, rest)?;
                map.insert(intern(&key), parse_value(lexer, token, rest, depth)?);
                Ok(())
            })?;
            Ok(Val::Obj(obj))
        }
        _ => Err(not_a_value(rest)),
    }
}

/// Most keys [`intern`] remembers per thread.
const INTERNED_KEYS: usize = 4096;
/// Longest key [`intern`] remembers, in bytes.
const INTERNED_KEY_LEN: usize = 64;

/// FNV-1a, to look up short keys fast.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

thread_local! {
    /// Object keys seen on this thread: events of a stream share their
    /// keys, so they share one allocation of each.
    static KEYS: RefCell<HashMap<Box<str>, Rc<String>, BuildHasherDefault<Fnv>>> = RefCell::default();
}

/// A shared copy of object key `key`.
fn intern(key: &str) -> Rc<String> {
    if key.len() > INTERNED_KEY_LEN {
        return Rc::new(key.to_string());
    }
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(shared) = keys.get(key) {
            return shared.clone();
        }
        let shared = Rc::new(key.to_string());
        if keys.len() < INTERNED_KEYS {
            keys.insert(key.into(), shared.clone());
        }
        shared
    })
}

/// Appends `val` to `out` as compact JSON, exactly as jq (and jaq's
/// `Display`) print it with `-c`, only faster: strings are copied in runs
/// between escapes. Non-finite floats are written as `null`.
pub fn write_json(val: &Val, out: &mut BytesMut) {
    match val {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Int(i) => write_int(*i, out),
        // `{:?}` is how jaq prints floats: `1.0`, `1e100`
        Val::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Val::Float(_) => out.extend_from_slice(b"null"),
        Val::Num(n) => out.extend_from_slice(n.as_bytes()),
        Val::Str(s) => write_str(s, out),
        Val::Arr(items) => {
            out.put_u8(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                write_json(item, out);
            }
            out.put_u8(b']');
        }
        Val::Obj(map) => {
            out.put_u8(b'{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                write_str(key, out);
                out.put_u8(b':');
                write_json(value, out);
            }
            out.put_u8(b'}');
        }
    }
}

/// Writes an integer in decimal.
fn write_int(i: isize, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    let mut n = i.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.put_u8(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes a JSON string: quotes, `\"`, `\\`, `\t`, `\n`, `\r`, and
/// `\u00XX` for other control characters.
fn write_str(s: &str, out: &mut BytesMut) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.put_u8(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.put_u8(b'"');
}
