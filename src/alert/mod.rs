//! Alerting (SPEC §7). This module owns `[[notifiers]]`, `[[routes]]` and `[[silences]]`.

use crate::config::CheckConfig;
use crate::config::raw::Table;

/// Validated alerting configuration.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {}

impl AlertConfig {
    /// Reads the alerting sections of the root table.
    pub fn parse(root: &Table<'_, '_>, _checks: &[CheckConfig]) -> Option<Self> {
        for key in ["notifiers", "routes", "silences"] {
            if let Some(v) = root.raw(key) {
                root.error(
                    v.span(),
                    format!("`{key}` is not supported by this build yet"),
                );
            }
        }
        Some(Self {})
    }
}
