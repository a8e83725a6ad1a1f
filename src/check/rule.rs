//! `rule` (probe): a minijinja expression over other checks' states (SPEC §3).
//!
//! `expr` sees `checks`, a map from check name to `{status, up, score, latency_ms,
//! labels, error_kind, consecutive_failures}`, and helper functions: `up(name)`,
//! `healthy(name)`, `status(name)`, `score(name)`, `latency_ms(name)`,
//! `count_up(label=value, …)` and `count_failing(label=value, …)`.
//!
//! The expression is compiled at config load (a syntax error is a `PATH:LINE:COL` error at
//! the expression) and every check it names (`checks['x']`, `checks.x`, `healthy('x')`, …)
//! must exist. Those checks trigger a re-evaluation whenever they report a result; an
//! expression that reaches checks dynamically (`count_failing()`, `checks[var]`, loops)
//! is triggered by every other check.
//!
//! Result: true → healthy; false → unhealthy with `error_kind = "rejected"`; a referenced
//! check without a result yet, an evaluation error (including running out of fuel) or an
//! undefined/none value → unknown.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind as JinjaError, State, UndefinedBehavior};
use tokio::time::Instant;

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Verdict,
};
use crate::config::raw::Table;

/// Evaluation budget (minijinja fuel) of one rule run.
pub const FUEL: u64 = 50_000;

/// Helper functions that take a check name as their first argument.
const NAME_HELPERS: [&str; 5] = ["up", "healthy", "status", "score", "latency_ms"];
/// Helper functions that look at every check.
const ALL_HELPERS: [&str; 2] = ["count_up", "count_failing"];
/// Globals minijinja itself provides.
const BUILTIN_GLOBALS: [&str; 4] = ["range", "dict", "namespace", "debug"];

fn checks_of(state: &State<'_, '_>) -> Result<Value, Error> {
    state
        .lookup("checks")
        .ok_or_else(|| Error::new(JinjaError::UndefinedError, "`checks` is not defined"))
}

fn one(state: &State<'_, '_>, name: &str) -> Result<Value, Error> {
    let v = checks_of(state)?.get_item(&Value::from(name))?;
    if v.is_undefined() {
        return Err(Error::new(
            JinjaError::UndefinedError,
            format!("no check named `{name}`"),
        ));
    }
    Ok(v)
}

fn count(state: &State<'_, '_>, kwargs: Kwargs, failing: bool) -> Result<usize, Error> {
    let mut want = Vec::new();
    for k in kwargs.args() {
        want.push((k.to_string(), kwargs.get::<String>(k)?));
    }
    kwargs.assert_all_used()?;
    let checks = checks_of(state)?;
    let mut n = 0;
    for name in checks.try_iter()? {
        let c = checks.get_item(&name)?;
        let labels = c.get_attr("labels")?;
        let matches = want.iter().all(|(k, v)| {
            labels
                .get_attr(k)
                .ok()
                .is_some_and(|l| l.as_str() == Some(v.as_str()))
        });
        if !matches {
            continue;
        }
        let status = c.get_attr("status")?;
        let is_failing = matches!(status.as_str(), Some("unhealthy" | "disconnected"));
        let is_up = c.get_attr("up")?.is_true();
        if (failing && is_failing) || (!failing && is_up) {
            n += 1;
        }
    }
    Ok(n)
}

/// The shared expression environment (helpers, strict undefined, fuel).
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.add_function(
            "up",
            |s: &State<'_, '_>, n: String| -> Result<bool, Error> {
                Ok(one(s, &n)?.get_attr("up")?.is_true())
            },
        );
        env.add_function(
            "healthy",
            |s: &State<'_, '_>, n: String| -> Result<bool, Error> {
                Ok(one(s, &n)?.get_attr("status")?.as_str() == Some("healthy"))
            },
        );
        env.add_function(
            "status",
            |s: &State<'_, '_>, n: String| -> Result<Value, Error> {
                one(s, &n)?.get_attr("status")
            },
        );
        env.add_function(
            "score",
            |s: &State<'_, '_>, n: String| -> Result<Value, Error> {
                one(s, &n)?.get_attr("score")
            },
        );
        env.add_function(
            "latency_ms",
            |s: &State<'_, '_>, n: String| -> Result<Value, Error> {
                one(s, &n)?.get_attr("latency_ms")
            },
        );
        env.add_function("count_up", |s: &State<'_, '_>, k: Kwargs| {
            count(s, k, false)
        });
        env.add_function("count_failing", |s: &State<'_, '_>, k: Kwargs| {
            count(s, k, true)
        });
        env
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

/// Splits an expression into identifiers, string literals (with their byte offset) and
/// punctuation; enough to find the check names it refers to.
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '\'' || c == '"' {
            let mut s = String::new();
            while let Some((_, d)) = it.next() {
                if d == '\\' {
                    if let Some((_, e)) = it.next() {
                        s.push(e);
                    }
                } else if d == c {
                    break;
                } else {
                    s.push(d);
                }
            }
            out.push((Tok::Str(s), i));
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::from(c);
            while let Some(&(_, d)) = it.peek() {
                if d.is_alphanumeric() || d == '_' {
                    s.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            out.push((Tok::Ident(s), i));
        } else {
            out.push((Tok::Punct(c), i));
        }
    }
    out
}

/// Check names an expression refers to, each with its byte offset; `dynamic` when it
/// reaches checks in a way that cannot be resolved statically.
#[derive(Debug, Default, PartialEq)]
pub struct Refs {
    /// Statically named checks.
    pub names: Vec<(String, usize)>,
    /// True when any check may be read.
    pub dynamic: bool,
}

/// Finds the check names `src` refers to.
pub fn references(src: &str) -> Refs {
    let t = tokens(src);
    let mut r = Refs::default();
    for (k, (tok, _)) in t.iter().enumerate() {
        let Tok::Ident(id) = tok else { continue };
        let after_dot = k > 0 && t[k - 1].0 == Tok::Punct('.');
        if after_dot {
            continue;
        }
        let next = t.get(k + 1).map(|x| &x.0);
        let next2 = t.get(k + 2);
        let next3 = t.get(k + 3).map(|x| &x.0);
        if id == "checks" {
            match (next, next2, next3) {
                (Some(Tok::Punct('[')), Some((Tok::Str(s), off)), Some(Tok::Punct(']'))) => {
                    r.names.push((s.clone(), *off));
                }
                (Some(Tok::Punct('.')), Some((Tok::Ident(s), off)), _) => {
                    r.names.push((s.clone(), *off))
                }
                _ => r.dynamic = true,
            }
        } else if NAME_HELPERS.contains(&id.as_str()) && next == Some(&Tok::Punct('(')) {
            match next2 {
                Some((Tok::Str(s), off)) => r.names.push((s.clone(), *off)),
                _ => r.dynamic = true,
            }
        } else if ALL_HELPERS.contains(&id.as_str()) {
            r.dynamic = true;
        }
    }
    r
}

/// `rule` settings.
pub struct RuleSpec {
    /// The source text.
    pub expr: String,
    compiled: Arc<minijinja::Expression<'static, 'static>>,
    /// Checks named in the expression.
    pub referenced: Vec<String>,
    /// Checks that trigger a re-evaluation.
    pub trigger_names: Vec<String>,
}

impl std::fmt::Debug for RuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSpec")
            .field("expr", &self.expr)
            .field("triggers", &self.trigger_names)
            .finish()
    }
}

/// Reads `expr`, compiles it and checks the names it uses.
pub fn parse(t: &Table<'_, '_>, cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    let e = t.req_str("expr")?;
    // Byte offset of a position inside the expression, in the file (exact for one-line
    // strings without escapes; the start of the value otherwise).
    let at = |off: usize| {
        if !e.substituted
            && !e.value.contains('\n')
            && e.span.end >= e.span.start + e.value.len() + 2
        {
            let p = e.span.start + 1 + off;
            p..p + 1
        } else {
            e.span.clone()
        }
    };
    if e.value.trim().is_empty() {
        t.error(e.span.clone(), "`expr` is empty");
        return None;
    }
    let compiled = match environment().compile_expression_owned(e.value.clone()) {
        Ok(c) => c,
        Err(err) => {
            let off = err.range().map(|r| r.start).unwrap_or(0);
            let detail = err.detail().unwrap_or("invalid expression");
            t.error(at(off), format!("`expr`: {}: {detail}", err.kind()));
            return None;
        }
    };
    let mut ok = true;
    let mut allowed: BTreeSet<&str> = ["checks"].into_iter().collect();
    allowed.extend(NAME_HELPERS);
    allowed.extend(ALL_HELPERS);
    allowed.extend(BUILTIN_GLOBALS);
    let mut unknown: Vec<String> = compiled
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !allowed.contains(v.as_str()))
        .collect();
    unknown.sort();
    for v in unknown {
        let off = e.value.find(v.as_str()).unwrap_or(0);
        t.error(
            at(off),
            format!(
                "`expr`: unknown variable `{v}` (use checks['name'].status, or one of: {}, {})",
                NAME_HELPERS.join(", "),
                ALL_HELPERS.join(", ")
            ),
        );
        ok = false;
    }
    let refs = references(&e.value);
    let mut referenced = Vec::new();
    for (name, off) in &refs.names {
        if name == cx.check {
            t.error(at(*off), "`expr`: a rule cannot refer to itself");
            ok = false;
        } else if !cx.names.contains(name) {
            let hint = cx
                .names
                .all()
                .iter()
                .map(|n| (strsim::jaro_winkler(n, name), n))
                .filter(|(s, _)| *s > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, n)| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            t.error(
                at(*off),
                format!("`expr` refers to unknown check `{name}`{hint}"),
            );
            ok = false;
        } else if !referenced.contains(name) {
            referenced.push(name.clone());
        }
    }
    if !ok {
        return None;
    }
    let trigger_names = if refs.dynamic {
        cx.names
            .all()
            .iter()
            .filter(|n| **n != cx.check)
            .map(|n| n.to_string())
            .collect()
    } else {
        referenced.clone()
    };
    Some(Arc::new(RuleSpec {
        expr: e.value,
        compiled: Arc::new(compiled),
        referenced,
        trigger_names,
    }))
}

impl KindSpec for RuleSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(RuleCheck {
            expr: self.expr.clone(),
            compiled: self.compiled.clone(),
            referenced: self.referenced.clone(),
        }))
    }

    fn triggers(&self) -> Vec<String> {
        self.trigger_names.clone()
    }
}

/// Compiles `expr` in the rule environment and evaluates it once against `snapshot`
/// (`{name: {status, …}}`) exactly as a rule check's probe does; `None` when it does not
/// compile. For the fuzz targets and tests.
pub fn evaluate(expr: &str, snapshot: &serde_json::Value) -> Option<Outcome> {
    let compiled = environment()
        .compile_expression_owned(expr.to_string())
        .ok()?;
    let referenced = references(expr).names.into_iter().map(|(n, _)| n).collect();
    let check = RuleCheck {
        expr: expr.to_string(),
        compiled: Arc::new(compiled),
        referenced,
    };
    Some(check.evaluate(snapshot))
}

struct RuleCheck {
    expr: String,
    compiled: Arc<minijinja::Expression<'static, 'static>>,
    referenced: Vec<String>,
}

impl RuleCheck {
    /// Evaluates against a snapshot (`{name: {status, …}}`).
    fn evaluate(&self, snapshot: &serde_json::Value) -> Outcome {
        let start = Instant::now();
        let waiting: Vec<&str> = self
            .referenced
            .iter()
            .filter(|n| {
                let s = &snapshot[n.as_str()];
                s["status"] == "unknown"
                    || (s["status"] == "connecting" && s["consecutive_failures"] == 0)
            })
            .map(String::as_str)
            .collect();
        if !waiting.is_empty() {
            let mut o = Outcome::up(start.elapsed())
                .with_message(format!("no result yet from {}", waiting.join(", ")));
            o.verdict = Verdict::Unknown;
            return o;
        }
        let ctx = minijinja::context! { checks => Value::from(minijinja::value::Serde(snapshot)) };
        let result = self.compiled.eval(ctx);
        let latency = start.elapsed();
        match result {
            Ok(v) if v.is_undefined() || v.is_none() => {
                let mut o = Outcome::up(latency).with_message("the expression has no value (none)");
                o.verdict = Verdict::Unknown;
                o
            }
            Ok(v) if v.is_true() => Outcome::up(latency).with_message("rule is true"),
            Ok(_) => Outcome::down(
                CheckError::new(ErrorKind::Rejected, format!("rule is false: {}", self.expr)),
                latency,
            ),
            Err(e) => {
                let detail = e
                    .detail()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.kind().to_string());
                let mut o = Outcome::up(latency)
                    .with_message(format!("cannot evaluate the rule: {detail}"));
                o.verdict = Verdict::Unknown;
                o
            }
        }
    }
}

impl Check for RuleCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let snapshot = at.states.snapshot_json();
            let mut o = self.evaluate(&snapshot);
            o.latency = o.latency.max(Duration::ZERO);
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references() {
        let r = references(
            r#"checks['pbx-sip'].up and checks["pbx.ws"].latency_ms < 200 or healthy('db') or checks.redis.up"#,
        );
        let names: Vec<&str> = r.names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["pbx-sip", "pbx.ws", "db", "redis"]);
        assert!(!r.dynamic);
        assert!(references("count_failing(team='voice') == 0").dynamic);
        assert!(references("checks[x].up").dynamic);
        // A string that mentions checks is not a reference; `.up` is an attribute.
        let r = references("status('a') == 'checks' and checks['a'].up");
        assert_eq!(r.names.len(), 2);
        assert!(!r.dynamic);
    }

    fn rule(expr: &str, refs: &[&str]) -> RuleCheck {
        RuleCheck {
            expr: expr.into(),
            compiled: Arc::new(
                environment()
                    .compile_expression_owned(expr.to_string())
                    .unwrap(),
            ),
            referenced: refs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn evaluates_true_false_unknown() {
        let snap = serde_json::json!({
            "a": {"status": "healthy", "up": true, "score": 100, "latency_ms": 12.0, "labels": {"team": "voice"}, "consecutive_failures": 0},
            "b": {"status": "unhealthy", "up": false, "score": 0, "latency_ms": null, "labels": {"team": "voice"}, "consecutive_failures": 3},
            "c": {"status": "unknown", "up": false, "score": null, "latency_ms": null, "labels": {}, "consecutive_failures": 0},
        });
        let v = |e: &str, r: &[&str]| rule(e, r).evaluate(&snap).verdict;
        assert_eq!(
            v("checks['a'].up and checks['a'].latency_ms < 200", &["a"]),
            Verdict::Up
        );
        assert_eq!(
            v("healthy('a') and healthy('b')", &["a", "b"]),
            Verdict::Down(ErrorKind::Rejected)
        );
        assert_eq!(v("count_failing(team='voice') == 1", &[]), Verdict::Up);
        assert_eq!(v("count_up() == 1", &[]), Verdict::Up);
        assert_eq!(v("checks['c'].up", &["c"]), Verdict::Unknown);
        assert_eq!(v("checks['zzz'].up", &[]), Verdict::Unknown);
        assert_eq!(v("none", &[]), Verdict::Unknown);
        assert_eq!(
            v("score('b') >= 60", &["b"]),
            Verdict::Down(ErrorKind::Rejected)
        );
    }

    #[test]
    fn evaluation_is_bounded() {
        assert_eq!(environment().fuel(), Some(FUEL));
        let o = rule("range(10000000) | length > 0", &[]).evaluate(&serde_json::json!({}));
        assert_eq!(o.verdict, Verdict::Unknown, "{}", o.message);
    }
}
