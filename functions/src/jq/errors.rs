//! Readable messages for jq programs that do not load or compile.

use jaq_core::compile::Undefined;
use jaq_core::load::{self, lex, parse};

/// Messages for errors that `Loader::load` found (lexing, parsing, modules).
pub(super) fn load(code: &str, errors: load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, error) in errors {
        match error {
            load::Error::Io(errors) => {
                for (path, why) in errors {
                    messages.push(format!("cannot load module `{path}`: {why}"));
                }
            }
            load::Error::Lex(errors) => {
                for (expect, at) in errors {
                    messages.push(match (expect, at.chars().next()) {
                        (lex::Expect::Token, Some(c)) => {
                            format!("unexpected `{c}`{}", position(code, at))
                        }
                        (expect, _) => {
                            format!("expected {}{}", lex_expect(&expect), position(code, at))
                        }
                    });
                }
            }
            load::Error::Parse(errors) => {
                for (expect, found) in errors {
                    let expected = parse_expect(&expect);
                    messages.push(if found.is_empty() {
                        format!("expected {expected} but found end of input")
                    } else {
                        format!(
                            "expected {expected} but found `{}`{}",
                            snippet(found),
                            position(code, found)
                        )
                    });
                }
            }
        }
    }
    join(messages)
}

/// Messages for errors that `Compiler::compile` found (undefined names).
pub(super) fn compile(code: &str, errors: jaq_core::compile::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, errors) in errors {
        for (name, undefined) in errors {
            let what = match undefined {
                Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
                Undefined::Var => format!("undefined variable `{name}`"),
                Undefined::Label => format!("undefined label `{name}`"),
                Undefined::Mod => format!("undefined module `{name}`"),
                _ => format!("undefined name `{name}`"),
            };
            messages.push(format!("{what}{}", position(code, name)));
        }
    }
    join(messages)
}

fn join(messages: Vec<String>) -> String {
    if messages.is_empty() {
        "invalid jq program".to_string()
    } else {
        messages.join("; ")
    }
}

/// What the lexer expected.
fn lex_expect(expect: &lex::Expect<&str>) -> String {
    match expect {
        lex::Expect::Digit => "digit".into(),
        lex::Expect::Ident => "identifier".into(),
        lex::Expect::Delim("(") => "closing parenthesis".into(),
        lex::Expect::Delim("[") => "closing bracket".into(),
        lex::Expect::Delim("{") => "closing brace".into(),
        lex::Expect::Delim("\"") => "closing quote".into(),
        lex::Expect::Delim(open) => format!("closing delimiter for `{open}`"),
        lex::Expect::Escape => "string escape sequence".into(),
        lex::Expect::Unicode => "4-digit hexadecimal code point".into(),
        lex::Expect::Token => "token".into(),
        _ => "something else".into(),
    }
}

/// What the parser expected.
fn parse_expect(expect: &parse::Expect<&str>) -> String {
    match expect {
        parse::Expect::Just(token) => format!("`{token}`"),
        other => other.as_str().to_string(),
    }
}

/// The start of a token, at most 20 characters.
fn snippet(token: &str) -> &str {
    match token.char_indices().nth(20) {
        Some((end, _)) => &token[..end],
        None => token,
    }
}

/// Where `part` (a slice of `code`) starts, in words: ` at column C`, or
/// ` at line L, column C` for programs of several lines, ` at end of input`
/// when `part` starts at the end; empty if `part` is not in `code`.
fn position(code: &str, part: &str) -> String {
    let start = code.as_ptr() as usize;
    let at = (part.as_ptr() as usize).wrapping_sub(start);
    if at > code.len() {
        return String::new();
    }
    if at == code.len() {
        return " at end of input".to_string();
    }
    let Some(before) = code.get(..at) else {
        return String::new();
    };
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
        + 1;
    if code.contains('\n') {
        let line = before.matches('\n').count() + 1;
        format!(" at line {line}, column {column}")
    } else {
        format!(" at column {column}")
    }
}
