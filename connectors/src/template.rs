//! Payload templates for the `generator` and `cron` sources: literal text
//! with `{{...}}` placeholders, rendered straight into a batch's buffer.
//!
//! | placeholder | renders |
//! |---|---|
//! | `{{seq}}` | the event's global sequence number, from 0 |
//! | `{{partition}}` | the event's partition |
//! | `{{key}}` | the event's key (only where the source sets one) |
//! | `{{ts}}` | event time, milliseconds since the Unix epoch |
//! | `{{rand:LO:HI}}` | a pseudo-random integer in `[LO, HI]` (deterministic xorshift) |
//!
//! Any other `{{...}}` is an error; a lone `{` or `}` is literal text.
//! A template without placeholders renders to one static buffer shared by
//! every event: no allocation and no reference count per event.

use bytes::{BufMut, Bytes, BytesMut};

use crate::numbers::{i64_len, put_i64, put_u64, MAX_DIGITS};

/// The placeholders, for error messages.
const KNOWN: &str = "`{{seq}}`, `{{partition}}`, `{{key}}`, `{{ts}}`, `{{rand:LO:HI}}`";

/// One piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Literal text: a byte range of the template.
    Literal { start: usize, end: usize },
    /// `{{seq}}`.
    Seq,
    /// `{{partition}}`.
    Partition,
    /// `{{key}}`.
    Key,
    /// `{{ts}}`.
    Ts,
    /// `{{rand:LO:HI}}`.
    Rand { lo: i64, hi: i64 },
}

/// A parsed payload template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The template text.
    text: Box<str>,
    /// Literal runs and placeholders, in order.
    parts: Vec<Part>,
    /// The whole payload when there is no placeholder (leaked once).
    fixed: Option<Bytes>,
}

/// What one event fills the placeholders with.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// Global sequence number (`{{seq}}`).
    pub seq: u64,
    /// Partition (`{{partition}}`).
    pub partition: u32,
    /// Key (`{{key}}`); empty when the event has none.
    pub key: &'a [u8],
    /// Event time in ms since the epoch (`{{ts}}`).
    pub ts_ms: i64,
}

impl Template {
    /// Parses `text`. Errors say which placeholder is wrong and why.
    ///
    /// A template without placeholders is leaked once into a
    /// `Bytes::from_static`, so that handing it to every event costs
    /// nothing; build sources once per process, not in a loop.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal_start = 0;
        let mut at = 0;
        while let Some(found) = text[at..].find("{{") {
            let open = at + found;
            let Some(len) = text[open + 2..].find("}}") else {
                return Err(format!(
                    "unclosed `{{{{` at byte {open}; placeholders are {KNOWN}"
                ));
            };
            let name = &text[open + 2..open + 2 + len];
            let part = placeholder(name)?;
            if open > literal_start {
                parts.push(Part::Literal {
                    start: literal_start,
                    end: open,
                });
            }
            parts.push(part);
            at = open + 2 + len + 2;
            literal_start = at;
        }
        if text.len() > literal_start {
            parts.push(Part::Literal {
                start: literal_start,
                end: text.len(),
            });
        }
        let placeholders = parts.iter().any(|p| !matches!(p, Part::Literal { .. }));
        let fixed = if placeholders {
            None
        } else {
            let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
            Some(Bytes::from_static(leaked.as_bytes()))
        };
        Ok(Template {
            text: text.into(),
            parts,
            fixed,
        })
    }

    /// The payload of every event when the template has no placeholder.
    /// Cloning it copies a pointer and a length.
    pub fn fixed(&self) -> Option<&Bytes> {
        self.fixed.as_ref()
    }

    /// Whether the template uses `{{key}}`.
    pub fn uses_key(&self) -> bool {
        self.parts.contains(&Part::Key)
    }

    /// The template text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The most bytes one rendering can take, with keys of at most `key_len` bytes.
    pub fn max_len(&self, key_len: usize) -> usize {
        self.parts
            .iter()
            .map(|part| match *part {
                Part::Literal { start, end } => end - start,
                Part::Seq | Part::Ts => MAX_DIGITS,
                Part::Partition => 10,
                Part::Key => key_len,
                Part::Rand { lo, hi } => i64_len(lo).max(i64_len(hi)),
            })
            .sum()
    }

    /// Appends one rendering to `out`. Reserve [`Template::max_len`] bytes
    /// per event beforehand and this never allocates.
    pub fn render(&self, vars: &Vars<'_>, rng: &mut XorShift, out: &mut BytesMut) {
        let text = self.text.as_bytes();
        for part in &self.parts {
            match *part {
                Part::Literal { start, end } => out.put_slice(&text[start..end]),
                Part::Seq => put_u64(out, vars.seq),
                Part::Partition => put_u64(out, u64::from(vars.partition)),
                Part::Key => out.put_slice(vars.key),
                Part::Ts => put_i64(out, vars.ts_ms),
                Part::Rand { lo, hi } => put_i64(out, rng.between(lo, hi)),
            }
        }
    }
}

/// Parses what is between `{{` and `}}`.
fn placeholder(name: &str) -> Result<Part, String> {
    match name {
        "seq" => Ok(Part::Seq),
        "partition" => Ok(Part::Partition),
        "key" => Ok(Part::Key),
        "ts" => Ok(Part::Ts),
        _ => match name.strip_prefix("rand:") {
            Some(range) => rand(range),
            None => Err(format!(
                "unknown placeholder `{{{{{name}}}}}`; placeholders are {KNOWN}"
            )),
        },
    }
}

/// Parses the `LO:HI` of `{{rand:LO:HI}}`.
fn rand(range: &str) -> Result<Part, String> {
    let bad = |why: &str| format!("invalid placeholder `{{{{rand:{range}}}}}`: {why}");
    let (lo, hi) = range
        .split_once(':')
        .ok_or_else(|| bad("expected `rand:LO:HI` with two integers"))?;
    let lo: i64 = lo
        .trim()
        .parse()
        .map_err(|_| bad(&format!("`{lo}` is not an integer")))?;
    let hi: i64 = hi
        .trim()
        .parse()
        .map_err(|_| bad(&format!("`{hi}` is not an integer")))?;
    if lo > hi {
        return Err(bad("the low bound is above the high bound"));
    }
    Ok(Part::Rand { lo, hi })
}

/// A xorshift64 pseudo-random generator: fast, deterministic, not for
/// anything that needs real randomness.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// The seed every source starts from, so runs are reproducible.
    pub const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A generator seeded with `seed` (zero is replaced by [`XorShift::SEED`]).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 { Self::SEED } else { seed })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A pseudo-random integer in `[lo, hi]` (`lo <= hi`).
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (i128::from(hi) - i128::from(lo) + 1).max(1) as u128;
        let offset = u128::from(self.next_u64()) % span;
        (i128::from(lo) + offset as i128) as i64
    }
}

impl Default for XorShift {
    fn default() -> Self {
        XorShift::new(Self::SEED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &Template, vars: Vars<'_>) -> String {
        let mut out = BytesMut::new();
        template.render(&vars, &mut XorShift::default(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn vars(seq: u64) -> Vars<'static> {
        Vars {
            seq,
            partition: 3,
            key: b"key-7",
            ts_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let t = Template::parse("{{seq}}|{{partition}}|{{key}}|{{ts}}|{{rand:5:5}}|{{rand:-3:-3}}")
            .unwrap();
        assert_eq!(render(&t, vars(42)), "42|3|key-7|1700000000123|5|-3");
        assert!(t.uses_key());
        assert!(t.fixed().is_none());
    }

    #[test]
    fn default_like_template_renders_json() {
        let t = Template::parse(r#"{"id":{{seq}},"amount":{{rand:0:200}}}"#).unwrap();
        let text = render(&t, vars(9));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], 9);
        let amount = v["amount"].as_i64().unwrap();
        assert!((0..=200).contains(&amount), "{amount}");
        assert!(text.len() <= t.max_len(0));
    }

    #[test]
    fn rand_stays_in_range_and_is_deterministic() {
        let mut a = XorShift::default();
        let mut b = XorShift::default();
        for _ in 0..10_000 {
            let x = a.between(-2, 2);
            assert!((-2..=2).contains(&x));
            assert_eq!(x, b.between(-2, 2));
        }
        let mut full = XorShift::new(1);
        for _ in 0..100 {
            full.between(i64::MIN, i64::MAX);
        }
        let seen: std::collections::BTreeSet<_> = (0..1000).map(|_| a.between(0, 3)).collect();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn no_placeholder_is_one_static_buffer() {
        let t = Template::parse(r#"{"fixed":true} {not a placeholder}"#).unwrap();
        let fixed = t.fixed().unwrap().clone();
        assert_eq!(fixed.as_ref(), br#"{"fixed":true} {not a placeholder}"#);
        let again = t.fixed().unwrap().clone();
        assert_eq!(
            fixed.as_ptr(),
            again.as_ptr(),
            "clones share the leaked text"
        );
        assert_eq!(render(&t, vars(1)), r#"{"fixed":true} {not a placeholder}"#);
        assert_eq!(Template::parse("").unwrap().fixed().unwrap().len(), 0);
    }

    #[test]
    fn max_len_bounds_every_rendering() {
        let t = Template::parse("a{{seq}}b{{ts}}{{partition}}{{key}}{{rand:-100:7}}").unwrap();
        let extreme = Vars {
            seq: u64::MAX,
            partition: u32::MAX,
            key: b"12345",
            ts_ms: i64::MIN,
        };
        assert!(render(&t, extreme).len() <= t.max_len(5));
    }

    #[test]
    fn rejects_bad_placeholders() {
        let err = Template::parse("x {{sequence}}").unwrap_err();
        assert!(
            err.starts_with("unknown placeholder `{{sequence}}`; placeholders are `{{seq}}`"),
            "{err}"
        );
        let err = Template::parse("x {{seq").unwrap_err();
        assert!(err.starts_with("unclosed `{{` at byte 2"), "{err}");
        assert_eq!(
            Template::parse("{{rand:9:1}}").unwrap_err(),
            "invalid placeholder `{{rand:9:1}}`: the low bound is above the high bound"
        );
        assert_eq!(
            Template::parse("{{rand:a:1}}").unwrap_err(),
            "invalid placeholder `{{rand:a:1}}`: `a` is not an integer"
        );
        assert_eq!(
            Template::parse("{{rand:5}}").unwrap_err(),
            "invalid placeholder `{{rand:5}}`: expected `rand:LO:HI` with two integers"
        );
    }
}
