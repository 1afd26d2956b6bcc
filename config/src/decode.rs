//! Deserializing parts of the document with serde while keeping positions:
//! toml errors become [`Diagnostic`]s at original lines and columns, named
//! by the key path they concern, with did-you-mean suggestions.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeValue, ValueDeserializer};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::source_text::SourceText;
use crate::suggest::with_suggestion;
use crate::tree::{path_at, remove_entry_at, KeyPath, Value};

/// Turns a toml error raised while deserializing `value` (found at `path`
/// in the document) into a diagnostic. Errors without a span are placed at
/// `value`.
pub(crate) fn diagnostic(
    source: &SourceText,
    path: &KeyPath,
    value: &Value<'_>,
    error: &toml::de::Error,
) -> Diagnostic {
    let span = error.span().unwrap_or_else(|| value.span());
    let full_path = path.join(&path_at(value, span.start));
    at(source, span, &full_path, &with_suggestion(error.message()))
}

/// A diagnostic at `span`, its message prefixed with `path` unless empty.
pub(crate) fn at(
    source: &SourceText,
    span: Range<usize>,
    path: &KeyPath,
    message: &str,
) -> Diagnostic {
    let message = if path.is_empty() {
        message.to_string()
    } else {
        format!("`{path}`: {message}")
    };
    Diagnostic::at(source.location(span), message)
}

/// Deserializes `value` (at `path`) into `T`, stopping at the first error.
pub(crate) fn decode_one<'de, T: Deserialize<'de>>(
    source: &SourceText,
    path: &KeyPath,
    value: Value<'de>,
) -> Result<T, Diagnostic> {
    T::deserialize(ValueDeserializer::from(value.clone()))
        .map_err(|error| diagnostic(source, path, &value, &error))
}

/// Deserializes `value` (at `path`) into `T`, reporting as many errors as
/// possible: serde stops at the first error, so after each one the entry it
/// is in is dropped and deserialization retried. Returns the value decoded
/// from what was left, if any (so cross-section checks can still run); the
/// caller knows from `diagnostics` whether anything was dropped.
pub(crate) fn decode_all<'de, T: Deserialize<'de>>(
    source: &SourceText,
    path: &KeyPath,
    mut value: Value<'de>,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(decoded) => return Some(decoded),
            Err(error) => error,
        };
        if is_missing_one_of(error.message(), &removed) {
            // an echo of an earlier error: we dropped that field ourselves
            return None;
        }
        diagnostics.push(diagnostic(source, path, &value, &error));
        let span = error.span()?;
        let DeValue::Table(table) = value.get_mut() else {
            return None;
        };
        match remove_entry_at(table, span.start) {
            Some(key) => removed.push(key),
            None => return None,
        }
    }
}

/// Whether `message` is serde's "missing field `x`" for an `x` in `removed`.
fn is_missing_one_of(message: &str, removed: &[String]) -> bool {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
        .is_some_and(|field| removed.iter().any(|key| key == field))
}

/// Like [`decode_all`] but first checks that `value` is a table, with a
/// clearer message than serde's "expected struct ...".
pub(crate) fn decode_table<'de, T: Deserialize<'de>>(
    source: &SourceText,
    path: &KeyPath,
    value: Value<'de>,
    diagnostics: &mut Diagnostics,
) -> Option<T> {
    if !value.get_ref().is_table() {
        let message = format!(
            "invalid type: {}, expected a table",
            value.get_ref().type_str()
        );
        diagnostics.push(at(source, value.span(), path, &message));
        return None;
    }
    decode_all(source, path, value, diagnostics)
}

/// Diagnostics for TOML syntax errors, in file order.
pub(crate) fn syntax_errors(source: &SourceText, errors: Vec<toml::de::Error>) -> Diagnostics {
    let mut diagnostics: Diagnostics = errors
        .iter()
        .map(|error| {
            let span = error.span().unwrap_or(0..0);
            Diagnostic::at(source.location(span), error.message())
        })
        .collect::<Vec<_>>()
        .into();
    diagnostics.sort();
    diagnostics
}
