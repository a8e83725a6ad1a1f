//! `${env:NAME}` and `${file:/path}` substitution inside string values.
//!
//! Substitution happens after TOML parsing, so spans still point at the original text.
//! `$${` is a literal `${`.

use std::path::Path;

/// Why a substitution failed; rendered at the span of the string that asked for it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${env:NAME}` with `NAME` unset.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// `${file:PATH}` that cannot be read.
    #[error("cannot read `{path}` for ${{file:…}}: {reason}")]
    File {
        /// The file named.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// `${...}` of an unknown form, or unterminated.
    #[error("bad substitution `{0}`: expected ${{env:NAME}} or ${{file:/path}}")]
    Syntax(String),
}

/// The result of a substitution: the text, and whether any part came from outside the
/// file (such values are treated as secrets by secret-typed keys).
#[derive(Debug, PartialEq, Eq)]
pub struct Interpolated {
    /// The resolved text.
    pub text: String,
    /// True if at least one `${…}` was substituted.
    pub substituted: bool,
    /// Each substituted value with the source text it came from (`("abc",
    /// "${env:TOKEN}")`): error messages show the source, never the value.
    pub pieces: Vec<(String, String)>,
}

/// Resolves every `${env:…}` and `${file:…}` in `input`. `base` is the directory relative
/// file paths are taken from (the config file's directory).
pub fn interpolate(input: &str, base: &Path) -> Result<Interpolated, InterpolateError> {
    interpolate_with(input, base, &|name| std::env::var(name).ok())
}

/// As [`interpolate`], with the environment supplied (for tests).
pub fn interpolate_with(
    input: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolateError> {
    if !input.contains("${") {
        return Ok(Interpolated {
            text: input.to_string(),
            substituted: false,
            pieces: Vec::new(),
        });
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut pieces = Vec::new();
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| InterpolateError::Syntax(truncate(&rest[pos..])))?;
        let inner = &after[..end];
        let value = if let Some(name) = inner.strip_prefix("env:") {
            env(name).ok_or_else(|| InterpolateError::MissingEnv(name.to_string()))?
        } else if let Some(path) = inner.strip_prefix("file:") {
            let p = base.join(path);
            let mut s = std::fs::read_to_string(&p).map_err(|e| InterpolateError::File {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            s
        } else {
            return Err(InterpolateError::Syntax(format!("${{{inner}}}")));
        };
        out.push_str(&value);
        pieces.push((value, format!("${{{inner}}}")));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Interpolated {
        text: out,
        substituted: !pieces.is_empty(),
        pieces,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "abc".to_string())
    }

    #[test]
    fn substitutes_env_and_escapes() {
        let r = interpolate_with("Bearer ${env:TOKEN} $${env:X}", Path::new("."), &env).unwrap();
        assert_eq!(r.text, "Bearer abc ${env:X}");
        assert!(r.substituted);
        assert_eq!(r.pieces, [("abc".to_string(), "${env:TOKEN}".to_string())]);
    }

    #[test]
    fn missing_env_is_an_error() {
        assert_eq!(
            interpolate_with("${env:NOPE}", Path::new("."), &env),
            Err(InterpolateError::MissingEnv("NOPE".into()))
        );
    }

    #[test]
    fn file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "pa55\n\n").unwrap();
        let r = interpolate_with("${file:pw}", dir.path(), &env).unwrap();
        assert_eq!(r.text, "pa55\n");
    }

    #[test]
    fn unknown_form_is_an_error() {
        assert!(matches!(
            interpolate_with("${vault:x}", Path::new("."), &env),
            Err(InterpolateError::Syntax(_))
        ));
        assert!(matches!(
            interpolate_with("${env:X", Path::new("."), &env),
            Err(InterpolateError::Syntax(_))
        ));
    }
}
