//! Configuration errors: every problem is collected with its byte span and rendered as
//! `PATH:LINE:COL: message`, one line each, sorted by position.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One configuration problem, already located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the error is in.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// Human-readable message; never contains a resolved secret.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every error found in one load, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while a config is walked. Errors are kept as byte offsets and only
/// turned into line/column once, at the end.
pub struct Diag<'s> {
    path: PathBuf,
    src: &'s str,
    errors: RefCell<Vec<(usize, String)>>,
    /// Values that came from `${env:…}`/`${file:…}`, with their source text.
    masks: RefCell<Vec<(String, String)>>,
}

impl<'s> Diag<'s> {
    /// A collector for `src`, the text of the file at `path`.
    pub fn new(path: &Path, src: &'s str) -> Self {
        Self {
            path: path.to_path_buf(),
            src,
            errors: RefCell::new(Vec::new()),
            masks: RefCell::new(Vec::new()),
        }
    }

    /// Remembers that `value` was substituted from `source` (e.g. `${env:X}`): any error
    /// recorded afterwards shows `source` wherever it would have quoted `value`.
    pub fn mask(&self, value: &str, source: &str) {
        if value.is_empty() || value == source {
            return;
        }
        let mut m = self.masks.borrow_mut();
        if !m.iter().any(|(v, _)| v == value) {
            m.push((value.to_string(), source.to_string()));
            // Longest first, so a whole value wins over a piece of it.
            m.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        }
    }

    fn unmask(&self, mut message: String) -> String {
        for (value, source) in self.masks.borrow().iter() {
            message = message.replace(value.as_str(), source);
            // Also in the one-line form (a multi-line `${file:…}` value).
            let flat = value.split_whitespace().collect::<Vec<_>>().join(" ");
            if !flat.is_empty() && flat != *value {
                message = message.replace(flat.as_str(), source);
            }
        }
        message
    }

    /// Records an error at the start of `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) {
        let message = self.unmask(message.into());
        // One line per error, always.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        let message = self.unmask(message);
        self.errors.borrow_mut().push((span.start, message));
    }

    /// True when nothing has been recorded.
    pub fn is_clean(&self) -> bool {
        self.errors.borrow().is_empty()
    }

    /// The located, sorted, de-duplicated errors.
    pub fn finish(self) -> ConfigErrors {
        let mut raw = self.errors.into_inner();
        raw.sort_by_key(|(off, _)| *off);
        raw.dedup();
        ConfigErrors(
            raw.into_iter()
                .map(|(off, message)| {
                    let (line, col) = line_col(self.src, off);
                    ConfigError {
                        path: self.path.clone(),
                        line,
                        col,
                        message: crate::secret::redact(&message),
                    }
                })
                .collect(),
        )
    }
}

/// 1-based line and character column of byte offset `off` in `src`.
pub fn line_col(src: &str, off: usize) -> (usize, usize) {
    let off = off.min(src.len());
    let before = &src[..floor_char_boundary(src, off)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substituted_values_are_shown_as_their_source() {
        let d = Diag::new(Path::new("c.toml"), "timeout = \"${env:X}\"\n");
        d.mask("Zq81-long-random-value", "${env:X}");
        d.mask("two\nlines", "${file:pw}");
        d.error(0..1, "invalid duration `Zq81-long-random-value`");
        d.error(1..2, "got `two\nlines`");
        let e = d.finish().to_string();
        assert!(!e.contains("Zq81") && !e.contains("two"), "{e}");
        assert!(e.contains("invalid duration `${env:X}`"), "{e}");
        assert!(e.contains("got `${file:pw}`"), "{e}");
    }

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // 'é' is two bytes; the column counts characters.
        assert_eq!(line_col(src, 9), (2, 3));
    }
}
