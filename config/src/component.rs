//! [`ComponentConfig`]: one source, step or sink. The engine's registry
//! interprets `type` and the connector- or step-specific options; this
//! module keeps their positions so errors point at the right place.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use crate::decode::{at, decode_one, decode_table, syntax_errors};
use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::settings::BatchSettings;
use crate::source_text::SourceText;
use crate::suggest::suggest;
use crate::tree::{table_value, take_at, KeyPath, Value};

/// Path shown in locations of components built with
/// [`ComponentConfig::from_toml`].
const INLINE_PATH: &str = "<inline>";

/// What a component is: decides its reserved keys and message wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// An entry of `[sources]`.
    Source,
    /// An element of `[[steps]]`.
    Step,
    /// An entry of `[sinks]`.
    Sink,
    /// Built by [`ComponentConfig::from_toml`].
    Inline,
}

impl Role {
    /// Keys that are not connector- or step-specific options.
    fn reserved(self) -> &'static [&'static str] {
        match self {
            Role::Source | Role::Sink => &["type", "batch"],
            Role::Step => &["type", "batch", "name"],
            Role::Inline => &["batch"],
        }
    }

    /// What `type` names, for messages.
    fn type_meaning(self) -> &'static str {
        match self {
            Role::Step => "the step type",
            Role::Source | Role::Sink | Role::Inline => "the connector type",
        }
    }
}

/// One source, step or sink: its name, `type`, batching, and unparsed
/// options (every other key of its table), read with
/// [`ComponentConfig::options`].
#[derive(Clone)]
pub struct ComponentConfig {
    /// The component's name: the `NAME` of `[sources.NAME]` or
    /// `[sinks.NAME]`; for steps the `name` key, by default
    /// `"<type>-<index>"` with the 0-based index in `[[steps]]`.
    pub name: String,
    /// The `type` key: which connector or step implementation to use.
    pub kind: String,
    /// The `batch` key, or the defaults.
    pub batch: BatchSettings,
    /// The text the component was read from.
    source: Arc<SourceText>,
    /// Where the component's table is in the document.
    path: KeyPath,
    /// Source, step, sink or inline.
    role: Role,
    /// Byte range of the table (its header for `[header]` tables).
    span: Range<usize>,
    /// Byte range of the `type` value, if read from the text.
    type_span: Option<Range<usize>>,
    /// Byte range of a step's `name` value, if given.
    name_span: Option<Range<usize>>,
}

impl ComponentConfig {
    /// Deserializes the connector- or step-specific keys (the table without
    /// `type`, `batch`, and for steps `name`) into `T`. Errors carry the
    /// line and column of the offending key or value; use
    /// `#[serde(deny_unknown_fields)]` on `T` to reject misspelled keys
    /// (they get a did-you-mean suggestion).
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        decode_one(&self.source, &self.label(), self.options_value()?)
    }

    /// Where `type = ...` is (the table, for components built in code).
    pub fn type_location(&self) -> Location {
        match &self.type_span {
            Some(span) => self.source.location(span.clone()),
            None => self.location(),
        }
    }

    /// Where the component's table starts.
    pub fn location(&self) -> Location {
        self.source.location(self.span.clone())
    }

    /// An error about the component as a whole, at its table.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.location(), message)
    }

    /// An error about the component's `type`, at `type = ...`.
    pub fn type_error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.type_location(), message)
    }

    /// An error about option `key`, at its value (at the table when the
    /// option is absent).
    pub fn option_error(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        let location = self
            .options_value()
            .ok()
            .and_then(|value| value.get_ref().get(key).map(|option| option.span()))
            .map(|span| self.source.location(span))
            .unwrap_or_else(|| self.location());
        Diagnostic::at(location, message)
    }

    /// A component built in code (tests, `weir bench`), with options from a
    /// TOML string like `"count = 10\npayload = 'x'"`. A `batch` key there
    /// sets [`ComponentConfig::batch`]; every other key is an option.
    /// Errors are located in a file named `<inline>`.
    pub fn from_toml(
        name: &str,
        kind: &str,
        options_toml: &str,
    ) -> Result<ComponentConfig, Diagnostics> {
        let source = Arc::new(SourceText::verbatim(Path::new(INLINE_PATH), options_toml));
        let (document, errors) = DeTable::parse_recoverable(source.text());
        let mut diagnostics = syntax_errors(&source, errors);
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let span = document.span();
        let value = table_value(document.into_inner(), span);
        let spec = Spec {
            path: KeyPath::default(),
            role: Role::Inline,
            name: Some(name.to_string()),
            index: 0,
            kind: Some(kind),
        };
        let component = build(&source, spec, value, &mut diagnostics);
        match component {
            Some(component) if diagnostics.is_empty() => Ok(component),
            _ => Err(diagnostics),
        }
    }

    /// Byte range of a step's explicit `name` value.
    pub(crate) fn name_span(&self) -> Option<Range<usize>> {
        self.name_span.clone()
    }

    /// Byte range of the component's table.
    pub(crate) fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Where the component's table is in the document.
    pub(crate) fn path(&self) -> &KeyPath {
        &self.path
    }

    /// The text the component was read from.
    pub(crate) fn source(&self) -> &SourceText {
        &self.source
    }

    /// Path used to name the component in messages.
    fn label(&self) -> KeyPath {
        match self.role {
            Role::Inline => KeyPath::default(),
            Role::Source | Role::Step | Role::Sink => self.path.clone(),
        }
    }

    /// Re-reads the component's table and drops the reserved keys. The
    /// text parsed before, so this only fails if it was tampered with.
    fn options_value(&self) -> Result<Value<'_>, Diagnostic> {
        let lost = || self.error("internal error: the component's table can no longer be read");
        let document = DeTable::parse(self.source.text()).map_err(|_| lost())?;
        let span = document.span();
        let value =
            take_at(table_value(document.into_inner(), span), &self.path).ok_or_else(lost)?;
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            return Err(lost());
        };
        for key in self.role.reserved() {
            table.remove(*key);
        }
        Ok(table_value(table, span))
    }
}

impl fmt::Debug for ComponentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("batch", &self.batch)
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

/// What the caller knows about a component before reading its table.
pub(crate) struct Spec<'k> {
    /// Where the table is in the document.
    pub(crate) path: KeyPath,
    /// Source, step, sink or inline.
    pub(crate) role: Role,
    /// The name, for sources and sinks (their key) and inline components.
    pub(crate) name: Option<String>,
    /// Position in `[[steps]]`, for default step names.
    pub(crate) index: usize,
    /// The type, when given in code rather than by a `type` key.
    pub(crate) kind: Option<&'k str>,
}

/// Reads one component table, reporting every problem found in it.
pub(crate) fn build(
    source: &Arc<SourceText>,
    spec: Spec<'_>,
    value: Value<'_>,
    diagnostics: &mut Diagnostics,
) -> Option<ComponentConfig> {
    let span = value.span();
    let path = &spec.path;
    let Some(table) = value.get_ref().as_table() else {
        let message = format!(
            "invalid type: {}, expected a table with a `type`",
            value.get_ref().type_str()
        );
        diagnostics.push(at(source, span, path, &message));
        return None;
    };
    let before = diagnostics.len();
    let (kind, type_span) = match spec.kind {
        Some(kind) => (Some(kind.to_string()), None),
        None => read_type(source, path, spec.role, &span, table, diagnostics),
    };
    let batch = match table.get("batch") {
        Some(batch) => {
            let settings: Option<BatchSettings> =
                decode_table(source, &path.key("batch"), batch.clone(), diagnostics);
            if settings
                .as_ref()
                .is_some_and(|b| b.latency_target.is_some())
                && matches!(spec.role, Role::Step | Role::Sink)
            {
                let message = "`latency_target` applies to sources only: it sets how long a source lets a partial batch wait";
                diagnostics.push(at(source, batch.span(), &path.key("batch"), message));
            }
            settings
        }
        None => Some(BatchSettings::default()),
    };
    let (name, name_span) = match (spec.role, table.get("name")) {
        (Role::Step, Some(name)) => match name.get_ref().as_str() {
            Some(text) => (Some(text.to_string()), Some(name.span())),
            None => {
                let message = format!(
                    "invalid type: {}, expected a string",
                    name.get_ref().type_str()
                );
                diagnostics.push(at(source, name.span(), &path.key("name"), &message));
                (None, None)
            }
        },
        (Role::Step, None) => (
            kind.as_ref().map(|kind| format!("{kind}-{}", spec.index)),
            None,
        ),
        _ => (spec.name, None),
    };
    if diagnostics.len() > before {
        return None;
    }
    Some(ComponentConfig {
        name: name?,
        kind: kind?,
        batch: batch?,
        source: source.clone(),
        path: spec.path,
        role: spec.role,
        span,
        type_span,
        name_span,
    })
}

/// Reads the `type` key of a component table.
fn read_type(
    source: &SourceText,
    path: &KeyPath,
    role: Role,
    span: &Range<usize>,
    table: &DeTable<'_>,
    diagnostics: &mut Diagnostics,
) -> (Option<String>, Option<Range<usize>>) {
    let Some(kind) = table.get("type") else {
        let mut message = format!(
            "missing field `type`, expected {} as a string",
            role.type_meaning()
        );
        let keys = table.keys().map(|key| key.get_ref().as_ref());
        if let Some(typo) = suggest("type", keys) {
            message.push_str(&format!("; did you mean `type` instead of `{typo}`?"));
        }
        diagnostics.push(at(source, span.clone(), path, &message));
        return (None, None);
    };
    match kind.get_ref().as_str() {
        Some(text) => (Some(text.to_string()), Some(kind.span())),
        None => {
            let message = format!(
                "invalid type: {}, expected {} as a string",
                kind.get_ref().type_str(),
                role.type_meaning()
            );
            diagnostics.push(at(source, kind.span(), &path.key("type"), &message));
            (None, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct GenOptions {
        count: u64,
        #[serde(default)]
        payload: String,
    }

    #[test]
    fn from_toml_reads_options_and_batch() {
        let component = ComponentConfig::from_toml(
            "gen",
            "generator",
            "count = 10\npayload = 'x'\nbatch = { max_events = 7 }\n",
        )
        .expect("valid");
        assert_eq!(component.name, "gen");
        assert_eq!(component.kind, "generator");
        assert_eq!(component.batch.max_events, 7);
        assert_eq!(
            component.options::<GenOptions>().expect("options"),
            GenOptions {
                count: 10,
                payload: "x".to_string()
            }
        );
    }

    #[test]
    fn from_toml_errors() {
        let err = ComponentConfig::from_toml("g", "generator", "count = = 1").expect_err("syntax");
        assert!(!err.is_empty());
        assert!(
            err.iter()
                .all(|d| d.to_string().starts_with("error: <inline>:1:")),
            "{err}"
        );

        let err = ComponentConfig::from_toml("g", "generator", "batch = { max_events = 0 }")
            .expect_err("bad batch");
        assert_eq!(
            err.to_string(),
            "error: <inline>:1:24: `batch.max_events`: invalid value: integer `0`, expected at least 1"
        );
    }

    #[test]
    fn unknown_option_reports_its_key() {
        let component = ComponentConfig::from_toml("g", "generator", "count = 1\n\n  cuont = 2\n")
            .expect("valid");
        let err = component.options::<GenOptions>().expect_err("unknown key");
        assert_eq!(
            err.to_string(),
            "error: <inline>:3:3: unknown field `cuont`, expected `count` or `payload`; did you mean `count`?"
        );
        let err = component
            .options::<std::collections::BTreeMap<String, u64>>()
            .map(|map| map.len());
        assert_eq!(err, Ok(2));
    }

    #[test]
    fn option_error_points_at_the_value() {
        let component = ComponentConfig::from_toml("g", "generator", "count = 1\npayload = 'x'\n")
            .expect("valid");
        assert_eq!(
            component.option_error("payload", "bad payload").to_string(),
            "error: <inline>:2:11: bad payload"
        );
        assert_eq!(
            component.option_error("absent", "no").to_string(),
            "error: <inline>:1:1: no"
        );
        assert_eq!(
            component.type_error("t").to_string(),
            "error: <inline>:1:1: t"
        );
    }

    #[test]
    fn is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<ComponentConfig>();
    }
}
