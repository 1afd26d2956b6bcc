//! The one registry of connectors and steps. A connector registers its
//! `type` name with a factory that turns its configuration table into a
//! running instance; an unknown `type` answers with the known ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_config::{suggest, ComponentConfig, Diagnostic};

use crate::sink::Sink;
use crate::source::Source;
use crate::step::{SinkId, StepFactory};

/// Builds a source from its configuration (validation happens here).
pub type SourceFactory = fn(&ComponentConfig) -> Result<Box<dyn Source>, Diagnostic>;
/// Builds a sink from its configuration.
pub type SinkFactory = fn(&ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic>;
/// Validates a step's configuration and returns the factory of its instances.
pub type StepBuilder =
    fn(&ComponentConfig, &mut StepContext<'_>) -> Result<Arc<dyn StepFactory>, Diagnostic>;

/// What a step may learn about the pipeline while it is built.
pub struct StepContext<'a> {
    sinks: &'a [String],
    routed: Vec<SinkId>,
}

impl<'a> StepContext<'a> {
    /// A context for a pipeline with these sinks, in order.
    pub fn new(sinks: &'a [String]) -> Self {
        StepContext {
            sinks,
            routed: Vec::new(),
        }
    }

    /// Resolves a sink a step routes events to. Routed sinks do not receive
    /// the pipeline's default output.
    pub fn route_to(&mut self, sink: &str) -> Result<SinkId, crate::Error> {
        match self.sinks.iter().position(|s| s == sink) {
            Some(i) => {
                let id = i as SinkId;
                if !self.routed.contains(&id) {
                    self.routed.push(id);
                }
                Ok(id)
            }
            None => {
                let mut msg = format!(
                    "no sink called `{sink}`; sinks are: {}",
                    self.sinks
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(s) = suggest(sink, self.sinks.iter().map(String::as_str)) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                Err(crate::Error::user(msg))
            }
        }
    }

    /// Sinks some step routes to.
    pub fn routed(&self) -> &[SinkId] {
        &self.routed
    }
}

/// Every known source, sink and step type.
#[derive(Default)]
pub struct Registry {
    sources: BTreeMap<&'static str, SourceFactory>,
    sinks: BTreeMap<&'static str, SinkFactory>,
    steps: BTreeMap<&'static str, StepBuilder>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a source type.
    pub fn source(&mut self, kind: &'static str, factory: SourceFactory) -> &mut Self {
        self.sources.insert(kind, factory);
        self
    }

    /// Registers a sink type.
    pub fn sink(&mut self, kind: &'static str, factory: SinkFactory) -> &mut Self {
        self.sinks.insert(kind, factory);
        self
    }

    /// Registers a step type.
    pub fn step(&mut self, kind: &'static str, builder: StepBuilder) -> &mut Self {
        self.steps.insert(kind, builder);
        self
    }

    /// Known source types.
    pub fn source_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.keys().copied()
    }

    /// Known sink types.
    pub fn sink_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sinks.keys().copied()
    }

    /// Known step types.
    pub fn step_kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.steps.keys().copied()
    }

    /// Builds the source `config` describes.
    pub fn build_source(&self, config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
        let factory = lookup(&self.sources, "source", config)?;
        factory(config)
    }

    /// Builds the sink `config` describes.
    pub fn build_sink(&self, config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
        let factory = lookup(&self.sinks, "sink", config)?;
        factory(config)
    }

    /// Builds the step `config` describes.
    pub fn build_step(
        &self,
        config: &ComponentConfig,
        ctx: &mut StepContext<'_>,
    ) -> Result<Arc<dyn StepFactory>, Diagnostic> {
        let builder = lookup(&self.steps, "step", config)?;
        builder(config, ctx)
    }
}

fn lookup<'r, F>(
    map: &'r BTreeMap<&'static str, F>,
    what: &str,
    config: &ComponentConfig,
) -> Result<&'r F, Diagnostic> {
    map.get(config.kind.as_str()).ok_or_else(|| {
        let known: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        let mut msg = format!(
            "unknown {what} type `{}`; known types: {}",
            config.kind,
            known.join(", ")
        );
        if let Some(s) = suggest(&config.kind, map.keys().copied()) {
            msg.push_str(&format!("; did you mean `{s}`?"));
        }
        config.type_error(msg)
    })
}
