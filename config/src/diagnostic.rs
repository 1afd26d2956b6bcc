//! Error reporting: a [`Location`] in a file, one [`Diagnostic`], and the
//! [`Diagnostics`] collection that loading returns.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A position in a configuration file: path plus 1-based line and column.
///
/// Columns count characters (not bytes) from the start of the line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file the position is in, as given to the loader.
    pub path: Arc<Path>,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number, counted in characters.
    pub column: usize,
}

impl Location {
    /// A location in `path` at 1-based `line` and `column`.
    pub fn new(path: impl Into<Arc<Path>>, line: usize, column: usize) -> Location {
        Location {
            path: path.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// One error found in a configuration, optionally tied to a [`Location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the error is; `None` when it is not about a place in a file
    /// (for example the file could not be read).
    pub location: Option<Location>,
    /// What is wrong and, where possible, what was expected.
    pub message: String,
}

impl Diagnostic {
    /// An error that is not tied to a place in a file.
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: None,
            message: message.into(),
        }
    }

    /// An error at `location`.
    pub fn at(location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: Some(location),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "error: {location}: {}", self.message),
            None => write!(f, "error: {}", self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Every error found while loading a configuration, in file order.
///
/// Displays as one [`Diagnostic`] per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// An empty collection.
    pub fn new() -> Diagnostics {
        Diagnostics(Vec::new())
    }

    /// True when no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of errors recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Records one error.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Iterates over the recorded errors.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when no error was recorded, otherwise `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Sorts errors by file position; errors without a location come first.
    /// The sort is stable, so errors at the same place keep their order.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| a.location.cmp(&b.location));
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Diagnostics {
        Diagnostics(vec![diagnostic])
    }
}

impl From<Vec<Diagnostic>> for Diagnostics {
    fn from(diagnostics: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics(diagnostics)
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let at = Diagnostic::at(Location::new(Path::new("a.toml"), 3, 7), "bad");
        assert_eq!(at.to_string(), "error: a.toml:3:7: bad");
        let plain = Diagnostic::new("worse");
        assert_eq!(plain.to_string(), "error: worse");
        let all = Diagnostics(vec![at, plain]);
        assert_eq!(all.to_string(), "error: a.toml:3:7: bad\nerror: worse");
    }

    #[test]
    fn into_result() {
        assert_eq!(Diagnostics::new().into_result(5), Ok(5));
        let one = Diagnostics::from(Diagnostic::new("x"));
        assert!(one.into_result(5).is_err());
    }
}
