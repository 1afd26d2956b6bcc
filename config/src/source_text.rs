//! [`SourceText`]: a configuration file's original text, the text after
//! environment substitution, and the map between the two so that errors
//! found in the substituted text are reported at original lines and columns.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::substitute::{substitute, Expansion};

/// A configuration file's text before and after `${NAME}` substitution.
#[derive(Debug, Clone)]
pub struct SourceText {
    path: Arc<Path>,
    original: String,
    text: String,
    expansions: Vec<Expansion>,
    line_starts: Vec<usize>,
}

impl SourceText {
    /// Substitutes `${NAME}` and `${NAME:-default}` in `original` using
    /// `env` (see the crate docs for the rules). Fails with one diagnostic
    /// per unset variable or malformed reference, at the reference itself.
    pub fn new(
        path: &Path,
        original: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceText, Diagnostics> {
        let substituted = substitute(original, env);
        let source = SourceText {
            path: Arc::from(path),
            original: original.to_string(),
            text: substituted.text,
            expansions: substituted.expansions,
            line_starts: line_starts(original),
        };
        let mut diagnostics = Diagnostics::new();
        for (offset, message) in substituted.errors {
            diagnostics.push(Diagnostic::at(source.original_location(offset), message));
        }
        diagnostics.into_result(source)
    }

    /// Text used as is, without substitution.
    pub fn verbatim(path: &Path, text: &str) -> SourceText {
        SourceText {
            path: Arc::from(path),
            original: text.to_string(),
            text: text.to_string(),
            expansions: Vec::new(),
            line_starts: line_starts(text),
        }
    }

    /// The file the text came from.
    pub fn path(&self) -> &Arc<Path> {
        &self.path
    }

    /// The text as read, before substitution.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The text after substitution: what the TOML parser sees.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where a byte range of the substituted text ([`SourceText::text`])
    /// starts, as a line and column of the original text. A position inside
    /// a substituted value maps to the `$` of its `${...}`. Out-of-range
    /// offsets are clamped to the end of the text.
    pub fn location(&self, span: Range<usize>) -> Location {
        self.original_location(self.original_offset(span.start))
    }

    /// Maps a byte offset of the substituted text to the original text.
    pub fn original_offset(&self, offset: usize) -> usize {
        let before = self
            .expansions
            .partition_point(|expansion| expansion.text.start <= offset);
        let Some(expansion) = before.checked_sub(1).and_then(|i| self.expansions.get(i)) else {
            return offset;
        };
        if offset < expansion.text.end {
            expansion.original.start
        } else {
            expansion.original.end + (offset - expansion.text.end)
        }
    }

    /// Line and column of a byte offset in the original text.
    fn original_location(&self, offset: usize) -> Location {
        let bytes = self.original.as_bytes();
        let offset = offset.min(bytes.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = line
            .checked_sub(1)
            .and_then(|i| self.line_starts.get(i))
            .copied()
            .unwrap_or(0);
        let column = bytes[line_start..offset]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        Location::new(self.path.clone(), line.max(1), column + 1)
    }
}

/// Byte offsets where each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "LONG").then(|| "a-much-longer-value".to_string())
    }

    fn at(source: &SourceText, offset: usize) -> (usize, usize) {
        let location = source.location(offset..offset);
        (location.line, location.column)
    }

    #[test]
    fn lines_and_columns_are_one_based() {
        let source = SourceText::verbatim(Path::new("f.toml"), "ab\ncd\n");
        assert_eq!(at(&source, 0), (1, 1));
        assert_eq!(at(&source, 1), (1, 2));
        assert_eq!(at(&source, 2), (1, 3));
        assert_eq!(at(&source, 3), (2, 1));
        assert_eq!(at(&source, 6), (3, 1));
        assert_eq!(at(&source, 600), (3, 1));
        assert_eq!(source.location(4..5).to_string(), "f.toml:2:2");
    }

    #[test]
    fn columns_count_characters() {
        let source = SourceText::verbatim(Path::new("f.toml"), "é = 'ü' x");
        assert_eq!(at(&source, 8), (1, 7));
        // inside a multi-byte character: still no panic
        assert_eq!(at(&source, 1), (1, 2));
    }

    #[test]
    fn offsets_map_back_through_expansions() {
        let text = "a = '${LONG}' x\nb = ${N:-7}\nc";
        let source = SourceText::new(Path::new("f.toml"), text, &env).expect("substitutes");
        assert_eq!(source.text(), "a = 'a-much-longer-value' x\nb = 7\nc");
        // before the expansion
        assert_eq!(at(&source, 4), (1, 5));
        // inside the expanded value: the `$`
        assert_eq!(at(&source, 10), (1, 6));
        // after it on the same line: the `x`
        let x = source.text().find(" x").expect("x") + 1;
        assert_eq!(at(&source, x), (1, 15));
        // later lines
        let c = source.text().len() - 1;
        assert_eq!(at(&source, c), (3, 1));
        let seven = source.text().find('7').expect("7");
        assert_eq!(at(&source, seven), (2, 5));
    }

    #[test]
    fn unset_variables_are_reported_at_original_positions() {
        let text = "a = '${LONG}'\nb = ${NOPE} ${ALSO}\n";
        let errors = SourceText::new(Path::new("f.toml"), text, &env).expect_err("fails");
        let rendered: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(rendered.len(), 2);
        assert!(rendered[0].starts_with("error: f.toml:2:5: environment variable `NOPE`"));
        assert!(rendered[1].starts_with("error: f.toml:2:13: environment variable `ALSO`"));
    }
}
