//! `${NAME}` / `${NAME:-default}` substitution over raw TOML text.
//!
//! Substitution is textual and happens before parsing, so a variable can
//! stand for any part of the file (`shards = ${SHARDS:-2}` works). Comments
//! are skipped: a `${NAME}` after `#` is left alone, so commented-out lines
//! never need their variables set. `$${` is a literal `${`. A variable that
//! is set but empty counts as unset when a default is given (like the shell).
//! Substituted values are inserted verbatim, without TOML escaping.

use std::ops::Range;

/// One replaced piece of text: `original` bytes of the input became `text`
/// bytes of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expansion {
    /// Byte range in the original text (the whole `${...}` or `$${`).
    pub(crate) original: Range<usize>,
    /// Byte range of the replacement in the substituted text.
    pub(crate) text: Range<usize>,
}

/// Result of [`substitute`]: the new text, where it differs from the
/// original, and errors as (byte offset in the original, message).
#[derive(Debug, Default)]
pub(crate) struct Substituted {
    /// The text after substitution.
    pub(crate) text: String,
    /// Replaced pieces, in increasing order of position.
    pub(crate) expansions: Vec<Expansion>,
    /// Problems found, with the byte offset of the offending `$`.
    pub(crate) errors: Vec<(usize, String)>,
}

/// Lexical state of the scanner, just enough of TOML to find comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Comment,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// Replaces every `${...}` outside comments using `env`.
pub(crate) fn substitute(original: &str, env: &dyn Fn(&str) -> Option<String>) -> Substituted {
    let bytes = original.as_bytes();
    let mut out = Substituted::default();
    let mut state = State::Normal;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if state != State::Comment && rest.starts_with(b"$${") {
            out.text.push_str(&original[copied..i]);
            replace(&mut out, i..i + 3, "${");
            i += 3;
            copied = i;
            continue;
        }
        if state != State::Comment && rest.starts_with(b"${") {
            out.text.push_str(&original[copied..i]);
            let end = expand(original, i, env, &mut out);
            i = end;
            copied = end;
            continue;
        }
        let (next_state, advance) = step(state, rest);
        state = next_state;
        i += advance;
    }
    out.text.push_str(original.get(copied..).unwrap_or(""));
    out
}

/// Appends `replacement` for the original bytes `range`, recording it.
fn replace(out: &mut Substituted, range: Range<usize>, replacement: &str) {
    let start = out.text.len();
    out.text.push_str(replacement);
    out.expansions.push(Expansion {
        original: range,
        text: start..out.text.len(),
    });
}

/// Handles the `${` at `start`; returns the offset just after what was
/// consumed. On error the original text is copied unchanged.
fn expand(
    original: &str,
    start: usize,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Substituted,
) -> usize {
    let body_start = start + 2;
    let body_len = original[body_start..].find(['}', '\n']);
    let close = match body_len {
        Some(len) if original.as_bytes().get(body_start + len) == Some(&b'}') => body_start + len,
        _ => {
            out.errors.push((
                start,
                "unterminated `${`, expected `${NAME}` or `${NAME:-default}` on one line (write `$${` for a literal `${`)".to_string(),
            ));
            out.text.push_str("${");
            return body_start;
        }
    };
    let body = &original[body_start..close];
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    let end = close + 1;
    if !is_valid_name(name) {
        out.errors.push((
            start,
            format!(
                "invalid environment variable reference `${{{body}}}`, expected `${{NAME}}` or `${{NAME:-default}}` where NAME is letters, digits and `_`"
            ),
        ));
        out.text.push_str(&original[start..end]);
        return end;
    }
    let value = match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => default.to_string(),
        (Some(value), _) => value,
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            out.errors.push((
                start,
                format!(
                    "environment variable `{name}` is not set, expected it to be set or a default like `${{{name}:-value}}`"
                ),
            ));
            out.text.push_str(&original[start..end]);
            return end;
        }
    };
    replace(out, start..end, &value);
    end
}

/// A variable name: a letter or `_`, then letters, digits or `_`.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Advances the lexical state over the start of `rest`;
/// returns the new state and how many bytes were consumed. Only ASCII
/// bytes are inspected, so every offset stays on a char boundary.
fn step(state: State, rest: &[u8]) -> (State, usize) {
    let Some(&first) = rest.first() else {
        return (state, 1);
    };
    match state {
        State::Normal => match first {
            b'#' => (State::Comment, 1),
            b'"' if rest.starts_with(b"\"\"\"") => (State::MultiBasic, 3),
            b'"' => (State::Basic, 1),
            b'\'' if rest.starts_with(b"'''") => (State::MultiLiteral, 3),
            b'\'' => (State::Literal, 1),
            _ => (State::Normal, 1),
        },
        State::Comment => match first {
            b'\n' => (State::Normal, 1),
            _ => (State::Comment, 1),
        },
        State::Basic => match first {
            b'\\' if rest.len() > 1 && rest[1].is_ascii() && rest[1] != b'\n' => (State::Basic, 2),
            b'"' | b'\n' => (State::Normal, 1),
            _ => (State::Basic, 1),
        },
        State::Literal => match first {
            b'\'' | b'\n' => (State::Normal, 1),
            _ => (State::Literal, 1),
        },
        State::MultiBasic => match first {
            b'\\' if rest.len() > 1 && rest[1].is_ascii() => (State::MultiBasic, 2),
            b'"' if rest.starts_with(b"\"\"\"") => (State::Normal, run_of(rest, b'"')),
            _ => (State::MultiBasic, 1),
        },
        State::MultiLiteral => match first {
            b'\'' if rest.starts_with(b"'''") => (State::Normal, run_of(rest, b'\'')),
            _ => (State::MultiLiteral, 1),
        },
    }
}

/// Length of the run of `quote` at the start of `rest`, at most 5 (a
/// multi-line string may end with up to two quotes before its `"""`).
fn run_of(rest: &[u8], quote: u8) -> usize {
    rest.iter().take(5).take_while(|&&b| b == quote).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.org".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Substituted {
        substitute(text, &env)
    }

    #[test]
    fn plain_text_is_unchanged() {
        let out = run("a = 'b'\n# c\n");
        assert_eq!(out.text, "a = 'b'\n# c\n");
        assert!(out.expansions.is_empty());
        assert!(out.errors.is_empty());
    }

    #[test]
    fn variable_and_default() {
        let out = run("h = \"${HOST}\"\np = ${PORT:-80}\n");
        assert_eq!(out.text, "h = \"example.org\"\np = 80\n");
        assert_eq!(
            out.expansions,
            vec![
                Expansion {
                    original: 5..12,
                    text: 5..16
                },
                Expansion {
                    original: 18..29,
                    text: 22..24
                },
            ]
        );
        assert!(out.errors.is_empty());
    }

    #[test]
    fn empty_value_uses_default_only_when_given() {
        assert_eq!(run("${EMPTY:-x}").text, "x");
        assert_eq!(run("${EMPTY}").text, "");
        assert_eq!(run("${HOST:-}").text, "example.org");
        assert_eq!(run("${NOPE:-}").text, "");
    }

    #[test]
    fn escaped_dollar() {
        let out = run("a = '$${HOST}' $x $$ $");
        assert_eq!(out.text, "a = '${HOST}' $x $$ $");
        assert!(out.errors.is_empty());
    }

    #[test]
    fn unset_variable_is_an_error_at_the_dollar() {
        let out = run("a = 1\nb = \"${NOPE}\"\n");
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].0, 11);
        assert!(out.errors[0].1.contains("`NOPE` is not set"));
        assert_eq!(out.text, "a = 1\nb = \"${NOPE}\"\n");
    }

    #[test]
    fn malformed_references() {
        let out = run("a = ${}\nb = ${1X}\nc = ${OPEN\nd = ${A:B}\n");
        let at: Vec<usize> = out.errors.iter().map(|e| e.0).collect();
        assert_eq!(at, vec![4, 12, 22, 33]);
        assert!(out.errors[2].1.starts_with("unterminated"));
    }

    #[test]
    fn comments_are_skipped_but_strings_are_not() {
        let out = run("# ${NOPE}\na = \"# ${HOST}\" # ${NOPE}\nb = '${HOST}'\n");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.text,
            "# ${NOPE}\na = \"# example.org\" # ${NOPE}\nb = 'example.org'\n"
        );
    }

    #[test]
    fn multiline_strings_and_escapes() {
        let text = "a = \"\"\"\n# ${HOST}\n\"\"\"\"\nb = \"\\\"#\" ${HOST}\nc = '''#'''' ${HOST}\n";
        let out = run(text);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(
            out.text,
            "a = \"\"\"\n# example.org\n\"\"\"\"\nb = \"\\\"#\" example.org\nc = '''#'''' example.org\n"
        );
    }

    #[test]
    fn non_ascii_text_survives() {
        let out = run("é = \"ü ${HOST} ß\" # ${X} ñ\n");
        assert_eq!(out.text, "é = \"ü example.org ß\" # ${X} ñ\n");
    }
}
