//! Reading a parsed pipeline document: each top-level section on its own,
//! so an error in one does not hide errors in another, then the checks
//! that span sections.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use toml::de::DeValue;

use crate::component::{build, ComponentConfig, Role, Spec};
use crate::decode::{at, decode_table};
use crate::diagnostic::Diagnostics;
use crate::pipeline::PipelineConfig;
use crate::settings::{DeadLetterFile, DeadLetterSettings};
use crate::source_text::SourceText;
use crate::suggest::unknown_name;
use crate::tree::{entries_in_file_order, KeyPath, Value};

/// The top-level sections a pipeline file may have.
const SECTIONS: &[&str] = &[
    "pipeline",
    "sources",
    "steps",
    "sinks",
    "queues",
    "checkpoint",
    "dead_letter",
    "retry",
    "shutdown",
    "admin",
];

/// `[sources]` or `[sinks]` as found in the file, for cross-section checks.
#[derive(Debug, Default)]
struct Named {
    /// Span of the section (its `[header]` if it has one); `None` when the
    /// section is absent.
    span: Option<Range<usize>>,
    /// Names of its entries, whether or not they are valid; `None` when
    /// the section is not a table (already reported).
    names: Option<Vec<String>>,
}

/// Reads a parsed document into a [`PipelineConfig`], reporting every
/// problem found.
pub(crate) fn read(
    source: &Arc<SourceText>,
    document: Value<'_>,
) -> Result<PipelineConfig, Diagnostics> {
    let mut diagnostics = Diagnostics::new();
    let mut config = PipelineConfig::new_in_code(Vec::new(), Vec::new(), Vec::new());
    config.path = source.path().to_path_buf();
    let mut sources = Named::default();
    let mut sinks = Named::default();
    let mut dead_letter_span = None;
    let table = match document.into_inner() {
        DeValue::Table(table) => table,
        _ => Default::default(),
    };
    let d = &mut diagnostics;
    for (key, value) in entries_in_file_order(table) {
        let path = KeyPath::default().key(key.get_ref());
        match key.get_ref().as_ref() {
            "pipeline" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.pipeline = settings;
                }
            }
            "sources" => {
                sources.span = Some(value.span());
                (config.sources, sources.names) = named(source, &path, Role::Source, value, d);
            }
            "steps" => config.steps = steps(source, &path, value, d),
            "sinks" => {
                sinks.span = Some(value.span());
                (config.sinks, sinks.names) = named(source, &path, Role::Sink, value, d);
            }
            "queues" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.queues = settings;
                }
            }
            "checkpoint" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.checkpoint = settings;
                }
            }
            "dead_letter" => {
                if let Some(file) = decode_table::<DeadLetterFile>(source, &path, value, d) {
                    let span = file.sink.span();
                    let location = source.location(span.clone());
                    dead_letter_span = Some(span);
                    config.dead_letter = Some(DeadLetterSettings::located(
                        file.sink.into_inner(),
                        location,
                    ));
                }
            }
            "retry" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.retry = settings;
                }
            }
            "shutdown" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.shutdown = settings;
                }
            }
            "admin" => {
                if let Some(settings) = decode_table(source, &path, value, d) {
                    config.admin = settings;
                }
            }
            other => {
                let message = unknown_name("section", other, SECTIONS);
                d.push(at(source, key.span(), &KeyPath::default(), &message));
            }
        }
    }
    require(source, &sources, "source", "sources", d);
    require(source, &sinks, "sink", "sinks", d);
    if let (Some(dead_letter), Some(span), Some(names)) =
        (&config.dead_letter, dead_letter_span, &sinks.names)
    {
        if !names.contains(&dead_letter.sink) {
            let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
            let message = if candidates.is_empty() {
                format!("unknown sink `{}`, no sinks are defined", dead_letter.sink)
            } else {
                unknown_name("sink", &dead_letter.sink, &candidates)
            };
            let path = KeyPath::default().key("dead_letter").key("sink");
            d.push(at(source, span, &path, &message));
        }
    }
    unique_step_names(&config.steps, d);
    diagnostics.sort();
    diagnostics.into_result(config)
}

/// Reads `[sources]` or `[sinks]`: a table of named component tables.
/// Returns the valid components and the names of all entries.
fn named(
    source: &Arc<SourceText>,
    path: &KeyPath,
    role: Role,
    value: Value<'_>,
    diagnostics: &mut Diagnostics,
) -> (Vec<ComponentConfig>, Option<Vec<String>>) {
    let span = value.span();
    let kind = value.get_ref().type_str();
    let DeValue::Table(table) = value.into_inner() else {
        let message = format!(
            "invalid type: {kind}, expected a table of named components like [{path}.NAME]"
        );
        diagnostics.push(at(source, span, path, &message));
        return (Vec::new(), None);
    };
    let mut components = Vec::new();
    let mut names = Vec::new();
    for (name, value) in entries_in_file_order(table) {
        let name = name.into_inner().into_owned();
        let spec = Spec {
            path: path.key(&name),
            role,
            name: Some(name.clone()),
            index: names.len(),
            kind: None,
        };
        components.extend(build(source, spec, value, diagnostics));
        names.push(name);
    }
    (components, Some(names))
}

/// Reads `[[steps]]`: an array of step tables.
fn steps(
    source: &Arc<SourceText>,
    path: &KeyPath,
    value: Value<'_>,
    diagnostics: &mut Diagnostics,
) -> Vec<ComponentConfig> {
    let span = value.span();
    let kind = value.get_ref().type_str();
    let DeValue::Array(array) = value.into_inner() else {
        let message = format!("invalid type: {kind}, expected an array of tables like [[steps]]");
        diagnostics.push(at(source, span, path, &message));
        return Vec::new();
    };
    let mut steps = Vec::new();
    for (index, value) in array.into_iter().enumerate() {
        let spec = Spec {
            path: path.index(index),
            role: Role::Step,
            name: None,
            index,
            kind: None,
        };
        steps.extend(build(source, spec, value, diagnostics));
    }
    steps
}

/// Reports a missing or empty `[sources]` / `[sinks]`: at the section when
/// present, otherwise at the start of the file.
fn require(
    source: &SourceText,
    named: &Named,
    singular: &str,
    section: &str,
    diagnostics: &mut Diagnostics,
) {
    let empty = match &named.names {
        Some(names) => names.is_empty(),
        None => named.span.is_none(),
    };
    if empty {
        let span = named.span.clone().unwrap_or(0..0);
        let message =
            format!("pipeline has no {singular}; add a [{section}.NAME] table with a `type`");
        diagnostics.push(at(source, span, &KeyPath::default(), &message));
    }
}

/// Reports steps whose (explicit or default) name is already taken.
fn unique_step_names(steps: &[ComponentConfig], diagnostics: &mut Diagnostics) {
    let mut first: HashMap<&str, &ComponentConfig> = HashMap::new();
    for step in steps {
        match first.get(step.name.as_str()) {
            Some(earlier) => {
                let message = format!(
                    "duplicate step name `{}`, expected a unique name (already used by the step at line {})",
                    step.name,
                    earlier.location().line
                );
                let (span, path) = match step.name_span() {
                    Some(span) => (span, step.path().key("name")),
                    None => (step.span(), step.path().clone()),
                };
                diagnostics.push(at(step.source(), span, &path, &message));
            }
            None => {
                first.insert(&step.name, step);
            }
        }
    }
}
