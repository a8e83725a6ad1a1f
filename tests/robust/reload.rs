//! Reload and shutdown (placeholder until the reload tests land).
