//! Pass 1 of config loading: the TOML document parsed with a span on every key and value,
//! and a [`Table`] reader that pass 2 (and every check kind) uses to take typed values out
//! of it.
//!
//! A reader records every problem in the shared [`Diag`] instead of stopping, so one run
//! reports every error. Keys that were never asked for are reported by [`Table::finish`]
//! as unknown, with a "did you mean" when a known key is close.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Diag;
use super::interpolate::interpolate;
use crate::secret::{self, Secret};
use crate::time::parse_duration;

/// Shared context of one load: the error sink and the directory `${file:…}` is relative to.
pub struct Loader<'s> {
    /// Where errors go.
    pub diag: Diag<'s>,
    /// Directory of the config file.
    pub base: PathBuf,
}

impl<'s> Loader<'s> {
    /// A loader for `src` read from `path`.
    pub fn new(path: &Path, src: &'s str) -> Self {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self {
            diag: Diag::new(path, src),
            base,
        }
    }

    /// Records an error at `span`.
    pub fn error(&self, span: Range<usize>, msg: impl Into<String>) {
        self.diag.error(span, msg);
    }
}

/// A string value with the span it came from.
#[derive(Debug, Clone)]
pub struct Str {
    /// The value after `${…}` substitution.
    pub value: String,
    /// Where it is in the file.
    pub span: Range<usize>,
    /// True if part of it came from `${env:…}`/`${file:…}`.
    pub substituted: bool,
}

/// Reads one TOML table. Every getter marks its key as known; [`Table::finish`] then
/// reports the keys nobody asked for.
pub struct Table<'a, 's> {
    cx: &'a Loader<'s>,
    map: &'a DeTable<'s>,
    span: Range<usize>,
    asked: RefCell<Vec<&'static str>>,
}

impl<'a, 's> Table<'a, 's> {
    /// A reader over `map`, whose whole extent is `span`.
    pub fn new(cx: &'a Loader<'s>, map: &'a DeTable<'s>, span: Range<usize>) -> Self {
        Self {
            cx,
            map,
            span,
            asked: RefCell::new(Vec::new()),
        }
    }

    /// The loader (for errors and `${file:}` paths).
    pub fn loader(&self) -> &'a Loader<'s> {
        self.cx
    }

    /// The span of the whole table (its header, for `[[…]]` entries).
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Records an error at `span`.
    pub fn error(&self, span: Range<usize>, msg: impl Into<String>) {
        self.cx.error(span, msg);
    }

    /// Marks `key` as known without reading it (for keys handled elsewhere).
    pub fn allow(&self, key: &'static str) {
        self.asked.borrow_mut().push(key);
    }

    /// The raw value of `key`, marking it known.
    pub fn raw(&self, key: &'static str) -> Option<&'a Spanned<DeValue<'s>>> {
        self.allow(key);
        self.map.get(key)
    }

    /// True if `key` is present (marks it known).
    pub fn has(&self, key: &'static str) -> bool {
        self.raw(key).is_some()
    }

    fn type_error(&self, key: &str, v: &Spanned<DeValue<'_>>, expected: &str) {
        self.error(
            v.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                v.get_ref().type_str()
            ),
        );
    }

    /// Reports `key` as missing (at the table's span).
    pub fn missing(&self, key: &str) {
        self.error(self.span(), format!("missing required key `{key}`"));
    }

    /// A string, with `${…}` substituted.
    pub fn str(&self, key: &'static str) -> Option<Str> {
        let v = self.raw(key)?;
        string_value(self.cx, key, v)
    }

    /// A required string.
    pub fn req_str(&self, key: &'static str) -> Option<Str> {
        if !self.has(key) {
            self.missing(key);
            return None;
        }
        self.str(key)
    }

    /// A string that is a secret: registered for redaction and wrapped.
    pub fn secret(&self, key: &'static str) -> Option<Secret<String>> {
        self.str(key).map(|s| Secret::registered(s.value))
    }

    /// A boolean.
    pub fn bool(&self, key: &'static str) -> Option<bool> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(key, v, "a boolean");
                None
            }
        }
    }

    /// An integer within `range`.
    pub fn int(&self, key: &'static str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let v = self.raw(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()),
            _ => {
                self.type_error(key, v, "an integer");
                return None;
            }
        };
        match n {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span(),
                    format!(
                        "`{key}` must be between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A number (integer or float) within `range`.
    pub fn float(&self, key: &'static str, range: std::ops::RangeInclusive<f64>) -> Option<f64> {
        let v = self.raw(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => {
                self.type_error(key, v, "a number");
                return None;
            }
        };
        match n {
            Some(n) if n.is_finite() && range.contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span(),
                    format!(
                        "`{key}` must be a number between {} and {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A duration string such as `250ms`, `5s`, `2m`, `1h`.
    pub fn duration(&self, key: &'static str) -> Option<Duration> {
        let s = self.str(key)?;
        match parse_duration(&s.value) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(s.span, format!("`{key}`: {msg}"));
                None
            }
        }
    }

    /// An array of strings.
    pub fn str_list(&self, key: &'static str) -> Option<Vec<Str>> {
        let v = self.raw(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            out.push(string_value(self.cx, key, item)?);
        }
        Some(out)
    }

    /// An inline table of string → string (labels, headers, env).
    pub fn str_map(&self, key: &'static str) -> Option<BTreeMap<String, Str>> {
        let v = self.raw(key)?;
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(key, v, "a table of strings");
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, val) in t.iter() {
            match string_value(self.cx, key, val) {
                Some(s) => {
                    out.insert(k.get_ref().to_string(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A nested table reader.
    pub fn table(&self, key: &'static str) -> Option<Table<'a, 's>> {
        let v = self.raw(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table::new(self.cx, t, v.span())),
            _ => {
                self.type_error(key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), each as a reader.
    pub fn tables(&self, key: &'static str) -> Vec<Table<'a, 's>> {
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(key, v, "an array of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(Table::new(self.cx, t, item.span())),
                _ => self.type_error(key, item, "a table"),
            }
        }
        out
    }

    /// Any value converted to JSON (strings substituted), e.g. a plugin's `config`.
    pub fn json(&self, key: &'static str) -> Option<serde_json::Value> {
        let v = self.raw(key)?;
        to_json(self.cx, key, v, true)
    }

    /// Feeds the whole table (keys in order, values with `${…}` resolved) to `h`, for
    /// fingerprints; does not mark keys as known. Returns false, having fed nothing
    /// further, if a number does not parse (its getter reports that). Walks the parsed
    /// values directly: no JSON is built (that was most of a 100,000-check load).
    pub fn hash_contents(&self, h: &mut impl Hasher) -> bool {
        hash_table(self.cx, self.map, h)
    }

    /// Reports every key that no getter asked for, with a suggestion when one is close.
    pub fn finish(self) {
        let asked = self.asked.into_inner();
        for (k, _) in self.map.iter() {
            let name = k.get_ref().as_ref();
            if asked.contains(&name) {
                continue;
            }
            let suggestion = asked
                .iter()
                .map(|a| (strsim::jaro_winkler(a, name), *a))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, a)| format!(" (did you mean `{a}`?)"))
                .unwrap_or_default();
            self.cx
                .error(k.span(), format!("unknown key `{name}`{suggestion}"));
        }
    }
}

fn hash_table(cx: &Loader<'_>, t: &DeTable<'_>, h: &mut impl Hasher) -> bool {
    t.len().hash(h);
    t.iter().all(|(k, v)| {
        k.get_ref().as_ref().hash(h);
        hash_value(cx, v.get_ref(), h)
    })
}

fn hash_value(cx: &Loader<'_>, v: &DeValue<'_>, h: &mut impl Hasher) -> bool {
    match v {
        DeValue::String(raw) => {
            0u8.hash(h);
            // Resolved silently (errors are reported by the getters), so a changed
            // `${file:…}` changes the fingerprint.
            match raw.contains("${") {
                false => raw.as_ref().hash(h),
                true => match interpolate(raw, &cx.base) {
                    Ok(r) => r.text.hash(h),
                    Err(_) => raw.as_ref().hash(h),
                },
            }
        }
        DeValue::Integer(i) => {
            let Ok(n) = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) else {
                return false;
            };
            1u8.hash(h);
            n.hash(h);
        }
        DeValue::Float(f) => {
            let Ok(x) = f.as_str().replace('_', "").parse::<f64>() else {
                return false;
            };
            2u8.hash(h);
            x.to_bits().hash(h);
        }
        DeValue::Boolean(b) => {
            3u8.hash(h);
            b.hash(h);
        }
        DeValue::Datetime(d) => {
            4u8.hash(h);
            d.to_string().hash(h);
        }
        DeValue::Array(a) => {
            5u8.hash(h);
            a.len().hash(h);
            return a.iter().all(|x| hash_value(cx, x.get_ref(), h));
        }
        DeValue::Table(t) => {
            6u8.hash(h);
            return hash_table(cx, t, h);
        }
    }
    true
}

fn string_value(cx: &Loader<'_>, key: &str, v: &Spanned<DeValue<'_>>) -> Option<Str> {
    match v.get_ref() {
        DeValue::String(s) => match interpolate(s, &cx.base) {
            Ok(r) => {
                if r.substituted {
                    // Errors quoting this value (or a substituted piece) show the source.
                    cx.diag.mask(&r.text, s);
                    for (value, source) in &r.pieces {
                        cx.diag.mask(value, source);
                    }
                }
                Some(Str {
                    value: r.text,
                    span: v.span(),
                    substituted: r.substituted,
                })
            }
            Err(e) => {
                cx.error(v.span(), format!("`{key}`: {e}"));
                None
            }
        },
        other => {
            cx.error(
                v.span(),
                format!("`{key}` must be a string, found {}", other.type_str()),
            );
            None
        }
    }
}

fn to_json(
    cx: &Loader<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    register: bool,
) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v.get_ref() {
        DeValue::String(raw) if !register => {
            // Fingerprint mode: resolve silently (errors are reported by the getters).
            J::String(
                interpolate(raw, &cx.base)
                    .map(|r| r.text)
                    .unwrap_or_else(|_| raw.to_string()),
            )
        }
        DeValue::String(_) => {
            let s = string_value(cx, key, v)?;
            if s.substituted {
                secret::register(&s.value);
            }
            J::String(s.value)
        }
        DeValue::Integer(i) => {
            J::from(i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()?)
        }
        DeValue::Float(f) => {
            serde_json::Number::from_f64(f.as_str().replace('_', "").parse().ok()?)
                .map(J::Number)
                .unwrap_or(J::Null)
        }
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(a) => J::Array(
            a.iter()
                .map(|x| to_json(cx, key, x, register))
                .collect::<Option<Vec<_>>>()?,
        ),
        DeValue::Table(t) => {
            let mut m = serde_json::Map::new();
            for (k, x) in t.iter() {
                m.insert(k.get_ref().to_string(), to_json(cx, key, x, register)?);
            }
            J::Object(m)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str, f: impl FnOnce(&Table<'_, '_>)) -> Vec<String> {
        let cx = Loader::new(Path::new("t.toml"), src);
        let doc = DeTable::parse(src).unwrap();
        let t = Table::new(&cx, doc.get_ref(), doc.span());
        f(&t);
        t.finish();
        cx.diag.finish().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn unknown_key_gets_suggestion() {
        let errs = load("intervall = \"5s\"\n", |t| {
            t.duration("interval");
        });
        assert_eq!(
            errs,
            vec!["t.toml:1:1: unknown key `intervall` (did you mean `interval`?)"]
        );
    }

    #[test]
    fn bad_duration_points_at_value() {
        let errs = load("a = 1\ninterval = \"30 parsecs\"\n", |t| {
            t.int("a", 0..=5);
            t.duration("interval");
        });
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.toml:2:12: `interval`: invalid duration"));
    }

    #[test]
    fn all_errors_are_collected() {
        let errs = load("a = \"x\"\nb = 99\n", |t| {
            t.int("a", 0..=5);
            t.int("b", 0..=5);
            t.req_str("c");
        });
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
