//! [`PipelineConfig`]: a whole pipeline file, typed.

use std::path::PathBuf;

use crate::component::ComponentConfig;
use crate::settings::{
    AdminSettings, CheckpointSettings, DeadLetterSettings, PipelineSettings, QueueSettings,
    RetrySettings, ShutdownSettings,
};

/// A loaded pipeline: every section of the file, with defaults filled in.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The file the configuration was read from (empty when built in code).
    pub path: PathBuf,
    /// `[pipeline]`.
    pub pipeline: PipelineSettings,
    /// `[sources.NAME]` tables, in file order; never empty when loaded.
    pub sources: Vec<ComponentConfig>,
    /// `[[steps]]`, in file order; names are unique.
    pub steps: Vec<ComponentConfig>,
    /// `[sinks.NAME]` tables, in file order; never empty when loaded.
    pub sinks: Vec<ComponentConfig>,
    /// `[queues]`.
    pub queues: QueueSettings,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointSettings,
    /// `[dead_letter]`, if present; its sink is one of [`Self::sinks`].
    pub dead_letter: Option<DeadLetterSettings>,
    /// `[retry]`.
    pub retry: RetrySettings,
    /// `[shutdown]`.
    pub shutdown: ShutdownSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
}

impl PipelineConfig {
    /// A configuration built in code (benchmarks, tests): the given
    /// components with every section at its defaults. Nothing is
    /// validated; build components with [`ComponentConfig::from_toml`].
    pub fn new_in_code(
        sources: Vec<ComponentConfig>,
        steps: Vec<ComponentConfig>,
        sinks: Vec<ComponentConfig>,
    ) -> PipelineConfig {
        PipelineConfig {
            path: PathBuf::new(),
            pipeline: PipelineSettings::default(),
            sources,
            steps,
            sinks,
            queues: QueueSettings::default(),
            checkpoint: CheckpointSettings::default(),
            dead_letter: None,
            retry: RetrySettings::default(),
            shutdown: ShutdownSettings::default(),
            admin: AdminSettings::default(),
        }
    }
}
