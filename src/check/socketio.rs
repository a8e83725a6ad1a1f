//! `socketio` (placeholder, filled in below).
use std::sync::Arc;
use super::registry::ParseCx;
use super::KindSpec;
use crate::config::raw::Table;
/// Reads the keys.
pub fn parse(_t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> { None }
