//! Helpers over toml's span-preserving value tree ([`DeValue`]): paths to
//! entries, finding the entry an error position falls in, navigation.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A parsed TOML value with its byte range in the substituted text.
pub(crate) type Value<'a> = Spanned<DeValue<'a>>;

/// One step of a path from the document root to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// A path from the document root, displayed like `sources.gen.batch` or
/// `steps[1].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Segment>);

impl KeyPath {
    /// The path one key further down.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    /// The path one array element further down.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// This path followed by `rest`.
    pub(crate) fn join(&self, rest: &KeyPath) -> KeyPath {
        let mut path = self.clone();
        path.0.extend(rest.0.iter().cloned());
        path
    }

    /// True for the document root.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => write!(f, "{key}")?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Whether byte `pos` is inside `span`; an empty span contains its start.
fn in_span(span: &Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || span.start == pos
}

/// Whether `pos` is inside `value`'s own span or any nested key or value.
/// (A table opened by a `[header]` has the header as its span, with its
/// entries elsewhere in the file.)
pub(crate) fn contains(value: &Value<'_>, pos: usize) -> bool {
    if in_span(&value.span(), pos) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .any(|(key, value)| in_span(&key.span(), pos) || contains(value, pos)),
        DeValue::Array(array) => array.iter().any(|value| contains(value, pos)),
        _ => false,
    }
}

/// The path, relative to `value`, of the deepest value containing `pos`.
/// A position on a key yields the path of the table holding the key.
pub(crate) fn path_at(value: &Value<'_>, pos: usize) -> KeyPath {
    let mut path = KeyPath::default();
    let mut current = value;
    'descend: loop {
        match current.get_ref() {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    if contains(child, pos) {
                        path.0.push(Segment::Key(key.get_ref().to_string()));
                        current = child;
                        continue 'descend;
                    }
                }
            }
            DeValue::Array(array) => {
                for (index, child) in array.iter().enumerate() {
                    if contains(child, pos) {
                        path.0.push(Segment::Index(index));
                        current = child;
                        continue 'descend;
                    }
                }
            }
            _ => {}
        }
        return path;
    }
}

/// Removes the entry of `table` whose key or value contains `pos` and
/// returns its key; `None` when no entry does.
pub(crate) fn remove_entry_at(table: &mut DeTable<'_>, pos: usize) -> Option<String> {
    let key = table
        .iter()
        .find(|(key, value)| in_span(&key.span(), pos) || contains(value, pos))
        .map(|(key, _)| key.get_ref().to_string())?;
    table.remove(key.as_str()).map(|_| key)
}

/// Takes the value at `path` out of `root`.
pub(crate) fn take_at<'a>(root: Value<'a>, path: &KeyPath) -> Option<Value<'a>> {
    let mut current = root;
    for segment in &path.0 {
        current = match (segment, current.into_inner()) {
            (Segment::Key(key), DeValue::Table(mut table)) => table.remove(key.as_str())?,
            (Segment::Index(index), DeValue::Array(array)) => array.into_iter().nth(*index)?,
            _ => return None,
        };
    }
    Some(current)
}

/// The entries of `table` in file order (toml's map may sort them).
pub(crate) fn entries_in_file_order<'a>(
    table: DeTable<'a>,
) -> Vec<(Spanned<toml::de::DeString<'a>>, Value<'a>)> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// A table value with the given span.
pub(crate) fn table_value(table: DeTable<'_>, span: Range<usize>) -> Value<'_> {
    Spanned::new(span, DeValue::Table(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[a]\nx = 1\nb = { c = [1, { d = 2 }] }\n[[s]]\ny = 3\n[[s]]\nz = 4\n";

    fn root() -> Value<'static> {
        let table = DeTable::parse(TEXT).expect("parses");
        let span = table.span();
        table_value(table.into_inner(), span)
    }

    #[test]
    fn paths_at_positions() {
        let root = root();
        let at = |needle: &str| path_at(&root, TEXT.find(needle).expect("needle")).to_string();
        assert_eq!(at("1\n"), "a.x");
        assert_eq!(at("x ="), "a");
        assert_eq!(at("d ="), "a.b.c[1]");
        assert_eq!(at("2 }"), "a.b.c[1].d");
        assert_eq!(at("3\n"), "s[0].y");
        assert_eq!(at("z ="), "s[1]");
    }

    #[test]
    fn take_and_remove() {
        let path = KeyPath::default().key("s").index(1);
        let value = take_at(root(), &path).expect("found");
        assert!(value
            .get_ref()
            .as_table()
            .is_some_and(|t| t.contains_key("z")));
        assert!(take_at(root(), &KeyPath::default().key("s").index(2)).is_none());
        assert!(take_at(root(), &KeyPath::default().key("a").index(0)).is_none());

        let DeValue::Table(mut a) = take_at(root(), &KeyPath::default().key("a"))
            .expect("a")
            .into_inner()
        else {
            panic!("a is a table");
        };
        assert_eq!(
            remove_entry_at(&mut a, TEXT.find("d =").expect("d")).as_deref(),
            Some("b")
        );
        assert!(!a.contains_key("b"));
        assert_eq!(remove_entry_at(&mut a, 0), None);
    }

    #[test]
    fn file_order() {
        let table = DeTable::parse("z = 1\na = 2\nm = 3\n")
            .expect("parses")
            .into_inner();
        let keys: Vec<String> = entries_in_file_order(table)
            .into_iter()
            .map(|(key, _)| key.into_inner().into_owned())
            .collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }
}
