//! Entry points: [`load`] a file or [`parse_str`] a text.

use std::path::Path;
use std::sync::Arc;

use toml::de::DeTable;

use crate::decode::syntax_errors;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::document::read;
use crate::pipeline::PipelineConfig;
use crate::source_text::SourceText;
use crate::tree::table_value;

/// Reads the pipeline file at `path`, substituting `${NAME}` from the
/// process environment. See [`parse_str`].
pub fn load(path: &Path) -> Result<PipelineConfig, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Diagnostic::new(format!(
            "cannot read config file `{}`: {error}",
            path.display()
        ))
    })?;
    parse_str(&text, path, &|name| std::env::var(name).ok())
}

/// Parses pipeline text as if read from `path` (used only in messages),
/// taking `${NAME}` values from `env`.
///
/// Errors are reported in stages, each complete: first every bad `${...}`
/// reference, then every TOML syntax error, then every error in the
/// sections and across them. A later stage runs only when the earlier ones
/// found nothing, because its errors would mostly be echoes.
pub fn parse_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PipelineConfig, Diagnostics> {
    let source = Arc::new(SourceText::new(path, text, env)?);
    let (document, errors) = DeTable::parse_recoverable(source.text());
    let syntax = syntax_errors(&source, errors);
    if !syntax.is_empty() {
        return Err(syntax);
    }
    let span = document.span();
    read(&source, table_value(document.into_inner(), span))
}
