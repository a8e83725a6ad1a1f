//! `exec` (probe): runs a command and reads its result with the Nagios plugin protocol.
//!
//! * `command` is an argv array, run without a shell, stdin closed, in its own process
//!   group, with a clean environment: `PATH`, `LANG`, `TZ` and `HOME` from the agent's
//!   (those that are set) plus the check's `env`. `inherit_env = true` passes the agent's
//!   whole environment instead — minus the agent's own secrets (`LIFELINE_*`, every
//!   variable the config reads with `${env:…}`, any variable whose value is a secret),
//!   which never reach a child either way.
//! * Exit 0 → healthy, 1 → degraded (warning), 2 → unhealthy (`error_kind = "rejected"`:
//!   the command checked its target and reports it critical), 3 → unknown. Any other exit
//!   code, or death by a signal, is unknown too (as Nagios does). A command that cannot be
//!   started is `internal`.
//! * The first line of output (stdout, else stderr) up to `|` is the message; perfdata
//!   after `|` on the first line and after the first `|` on later lines (the multi-line
//!   form) is parsed into `lifeline_check_perfdata` in base units.
//! * At most [`OUTPUT_CAP`] bytes of stdout are kept; the rest is read and discarded so
//!   the command never blocks on a full pipe.
//! * On timeout the whole process group is killed with SIGKILL and the result is
//!   `timeout`. The child is always reaped; when it exits, whatever it left running in its
//!   group is killed too.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::time::{Instant, sleep_until};

use super::ParseCx;
use super::{
    Attempt, BoxFuture, BuildEnv, Check, CheckError, ErrorKind, KindSpec, Outcome, Perf, Verdict,
};
use crate::config::raw::Table;
use crate::net::capped::{AtCap, CappedBuf, Pipe};
use crate::secret::Secret;

/// Bytes of stdout kept per run.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Bytes of stderr kept per run.
const STDERR_CAP: usize = 8 * 1024;
/// Longest message kept.
const MESSAGE_CAP: usize = 1024;
/// Most perfdata values parsed from one run (a parse bound; the metrics keep at most
/// `metrics::series::PERFDATA_CAP` per check and count the rest as dropped).
pub const MAX_PERFDATA: usize = 1024;
/// How long pipes may stay open after the command exited (a process that left the
/// group may hold them).
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// `exec` settings.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment (values may be secrets).
    pub env: BTreeMap<String, Secret<String>>,
    /// `inherit_env`: start from the agent's environment (minus its secrets) instead of
    /// the clean one.
    pub inherit_env: bool,
}

/// Variables a clean environment keeps from the agent's.
pub const CLEAN_ENV: [&str; 4] = ["PATH", "LANG", "TZ", "HOME"];

impl ExecSpec {
    /// The child's environment (without the check's `env`, added on top): the clean set,
    /// or the agent's whole environment with `inherit_env`; the agent's secrets stripped
    /// from both.
    pub fn base_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        std::env::vars_os()
            .filter(|(k, v)| {
                let (Some(k), v) = (k.to_str(), v.to_string_lossy()) else {
                    return self.inherit_env;
                };
                (self.inherit_env || CLEAN_ENV.contains(&k)) && !crate::secret::is_agent_env(k, &v)
            })
            .collect()
    }
}

/// Reads `command` and `env`.
pub fn parse(t: &Table<'_, '_>, _cx: &ParseCx<'_>) -> Option<Arc<dyn KindSpec>> {
    if !t.has("command") {
        t.missing("command");
        return None;
    }
    let list = t.str_list("command");
    let inherit_env = t.bool("inherit_env").unwrap_or(false);
    let env = match t.str_map("env") {
        Some(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    t.error(
                        v.span.clone(),
                        format!("`env`: invalid variable name `{k}`"),
                    );
                    continue;
                }
                let val = if v.substituted {
                    Secret::registered(v.value)
                } else {
                    Secret::new(v.value)
                };
                out.insert(k, val);
            }
            Some(out)
        }
        None if t.has("env") => None,
        None => Some(BTreeMap::new()),
    };
    let list = list?;
    let Some(first) = list.first() else {
        if let Some(v) = t.raw("command") {
            t.error(
                v.span(),
                "`command` must name a program: [\"/path/to/check\", \"arg\", …]",
            );
        }
        return None;
    };
    let mut command: Vec<String> = list.iter().map(|s| s.value.clone()).collect();
    if first.value.contains('/') {
        let p = PathBuf::from(&first.value);
        let p = if p.is_absolute() {
            p
        } else {
            t.loader().base.join(p)
        };
        if !p.is_file() {
            t.error(
                first.span.clone(),
                format!("`command`: no such program {}", p.display()),
            );
            return None;
        }
        command[0] = p.to_string_lossy().into_owned();
    } else if first.value.is_empty() {
        t.error(first.span.clone(), "`command`: empty program name");
        return None;
    }
    Some(Arc::new(ExecSpec {
        command,
        env: env?,
        inherit_env,
    }))
}

impl KindSpec for ExecSpec {
    fn build(&self, _env: &BuildEnv) -> Result<Arc<dyn Check>, CheckError> {
        Ok(Arc::new(ExecCheck { spec: self.clone() }))
    }
}

struct ExecCheck {
    spec: ExecSpec,
}

/// Kills the process group on drop unless disarmed (covers a probe dropped by the
/// supervisor's own timeout).
struct GroupKill(Option<Pid>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(pg) = self.0 {
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `r` to EOF (an error ends it too), keeping the first bytes in `buf` and
/// discarding the rest so the child never blocks on a full pipe; returns true if some
/// were discarded.
async fn read_capped<R: AsyncRead + Unpin + Send>(r: Option<R>, buf: &mut CappedBuf) -> bool {
    if let Some(r) = r {
        let _ = buf.fill(&mut Pipe::new(r), AtCap::Drain).await;
    }
    buf.truncated()
}

/// What the run produced.
struct Run {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    out: Vec<u8>,
    err: Vec<u8>,
    truncated: bool,
}

impl ExecCheck {
    async fn run(&self, at: &Attempt, budget: Duration) -> Result<Run, CheckError> {
        let argv = &self.spec.command;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(self.spec.base_env())
            .envs(self.spec.env.iter().map(|(k, v)| (k, v.expose())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            CheckError::new(ErrorKind::Internal, format!("cannot run {}: {e}", argv[0]))
        })?;
        let mut group = GroupKill(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        );
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let deadline = Instant::now() + budget;
        let (mut out, mut err) = (CappedBuf::new(OUTPUT_CAP), CappedBuf::new(STDERR_CAP));
        let mut status = None;
        let mut timed_out = false;
        let mut truncated = false;
        {
            let mut out_f = std::pin::pin!(read_capped(stdout, &mut out));
            let mut err_f = std::pin::pin!(read_capped(stderr, &mut err));
            let (mut out_done, mut err_done) = (false, false);
            let mut until = deadline;
            while status.is_none() || !out_done || !err_done {
                tokio::select! {
                    s = child.wait(), if status.is_none() => {
                        status = Some(s.map_err(|e| CheckError::new(ErrorKind::Internal, format!("wait for {}: {e}", argv[0])))?);
                        // Leftovers in the group would keep the pipes open: kill them.
                        group.kill();
                        until = deadline.min(Instant::now() + PIPE_GRACE);
                    }
                    t = &mut out_f, if !out_done => { out_done = true; truncated = t; }
                    _ = &mut err_f, if !err_done => { err_done = true; }
                    _ = sleep_until(until) => {
                        if status.is_none() {
                            timed_out = true;
                        }
                        break;
                    }
                    _ = at.cancel.cancelled() => {
                        timed_out = true;
                        break;
                    }
                }
            }
        }
        if timed_out {
            group.kill();
            // SIGKILL cannot be ignored: the reap is prompt. Bounded all the same.
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                status = Some(s);
            }
        }
        Ok(Run {
            status,
            timed_out,
            out: out.into_bytes(),
            err: err.into_bytes(),
            truncated,
        })
    }
}

impl Check for ExecCheck {
    fn probe<'a>(&'a self, at: &'a Attempt) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let start = Instant::now();
            // Finish a little before the supervisor's own cut-off so the outcome carries
            // the exec-specific message.
            let budget = at.timeout.saturating_sub(at.timeout / 50);
            let run = match self.run(at, budget).await {
                Ok(r) => r,
                Err(e) => return Outcome::down(e, start.elapsed()),
            };
            let latency = start.elapsed();
            let text = if run.out.iter().any(|b| !b.is_ascii_whitespace()) {
                String::from_utf8_lossy(&run.out).into_owned()
            } else {
                String::from_utf8_lossy(&run.err).into_owned()
            };
            let parsed = parse_output(&text);
            let mut o = if run.timed_out {
                Outcome::down(
                    CheckError::new(
                        ErrorKind::Timeout,
                        format!(
                            "{} timed out after {}; process group killed",
                            self.spec.command[0],
                            crate::time::fmt_duration(budget)
                        ),
                    ),
                    latency,
                )
            } else {
                let status = run
                    .status
                    .unwrap_or_else(|| std::process::ExitStatus::from_raw(3 << 8));
                let (verdict, fallback) = match (status.code(), status.signal()) {
                    (Some(0), _) => (Verdict::Up, "OK".to_string()),
                    (Some(1), _) => (Verdict::Warn(None), "WARNING".to_string()),
                    (Some(2), _) => (Verdict::Down(ErrorKind::Rejected), "CRITICAL".to_string()),
                    (Some(3), _) => (Verdict::Unknown, "UNKNOWN".to_string()),
                    (Some(n), _) => (
                        Verdict::Unknown,
                        format!("exit code {n} is not a plugin status"),
                    ),
                    (None, Some(sig)) => (Verdict::Unknown, format!("killed by signal {sig}")),
                    (None, None) => (Verdict::Unknown, "no exit status".to_string()),
                };
                let message = match (&verdict, parsed.message.is_empty()) {
                    (_, true) => fallback,
                    (Verdict::Unknown, false) if !matches!(status.code(), Some(3)) => {
                        format!("{fallback}: {}", parsed.message)
                    }
                    _ => parsed.message.clone(),
                };
                let mut o = Outcome::up(latency).with_message(crate::secret::redact(&message));
                o.verdict = verdict;
                if let Some(c) = status.code() {
                    o = o.with_detail("exit_code", c);
                }
                o
            };
            o.perfdata = parsed.perfdata;
            if run.truncated {
                o = o.with_detail("output_truncated", true);
            }
            o
        })
    }
}

/// A plugin's output, split.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// First line, before `|`, trimmed and capped.
    pub message: String,
    /// Perfdata from every part of the output.
    pub perfdata: Vec<Perf>,
}

/// Splits Nagios plugin output: `TEXT | PERF` on the first line, then long text lines,
/// the first later line containing `|` starting perfdata that runs to the end.
pub fn parse_output(text: &str) -> Parsed {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let (msg, perf0) = match first.split_once('|') {
        Some((m, p)) => (m, p),
        None => (first, ""),
    };
    let mut perf_text = String::from(perf0);
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf_text.push(' ');
            perf_text.push_str(line);
        } else if let Some((_, p)) = line.split_once('|') {
            in_perf = true;
            perf_text.push(' ');
            perf_text.push_str(p);
        }
    }
    let mut message = msg.trim().to_string();
    if message.len() > MESSAGE_CAP {
        let mut cut = MESSAGE_CAP;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    Parsed {
        message,
        perfdata: parse_perfdata(&perf_text),
    }
}

/// Parses `'label'=value[UOM];warn;crit;min;max …` into values in base units: seconds
/// (`s`, `ms`, `us`, `ns`), bytes (`B`, `KB`, `MB`, `GB`, `TB`, powers of 1024; `KiB`…
/// too), `%` and counters (`c`) as they are. Undetermined (`U`) and malformed values are
/// skipped; at most [`MAX_PERFDATA`] are kept.
pub fn parse_perfdata(s: &str) -> Vec<Perf> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < MAX_PERFDATA {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        // Label.
        let mut label = String::new();
        let mut ok = true;
        if b[i] == b'\'' {
            i += 1;
            let mut closed = false;
            let start = i;
            let mut raw = Vec::new();
            while i < b.len() {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        raw.push(b'\'');
                        i += 2;
                        continue;
                    }
                    closed = true;
                    i += 1;
                    break;
                }
                raw.push(b[i]);
                i += 1;
            }
            let _ = start;
            label = String::from_utf8_lossy(&raw).into_owned();
            if !closed || b.get(i) != Some(&b'=') {
                ok = false;
            }
        } else {
            let start = i;
            while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            label.push_str(&s[start..i]);
            if b.get(i) != Some(&b'=') {
                ok = false;
            }
        }
        // Value field (up to whitespace).
        let vstart = if ok { i + 1 } else { i };
        let mut j = vstart;
        while j < b.len() && !b[j].is_ascii_whitespace() {
            j += 1;
        }
        let field = &s[vstart.min(j)..j];
        i = j;
        if !ok || label.is_empty() || label.len() > 128 {
            continue;
        }
        let value = field.split(';').next().unwrap_or("");
        if let Some(v) = parse_value(value) {
            out.push(Perf { label, value: v });
        }
    }
    out
}

fn parse_value(v: &str) -> Option<f64> {
    let b = v.as_bytes();
    let mut k = 0;
    while k < b.len() {
        let c = b[k];
        let exp = (c == b'e' || c == b'E')
            && k > 0
            && match b.get(k + 1) {
                Some(d) if d.is_ascii_digit() => true,
                Some(b'+' | b'-') => b.get(k + 2).is_some_and(u8::is_ascii_digit),
                _ => false,
            };
        if c.is_ascii_digit() || matches!(c, b'.' | b',' | b'+' | b'-') || exp {
            if exp {
                k += 1;
            }
            k += 1;
        } else {
            break;
        }
    }
    let (num, uom) = v.split_at(k);
    if num.is_empty() {
        return None;
    }
    let num = if num.contains(',') && !num.contains('.') {
        num.replace(',', ".")
    } else {
        num.to_string()
    };
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    const K: f64 = 1024.0;
    let factor = match uom.to_ascii_lowercase().as_str() {
        "" | "s" | "%" | "c" | "b" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "kb" | "kib" => K,
        "mb" | "mib" => K * K,
        "gb" | "gib" => K * K * K,
        "tb" | "tib" => K * K * K * K,
        _ => 1.0,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perf(s: &str) -> Vec<(String, f64)> {
        parse_perfdata(s)
            .into_iter()
            .map(|p| (p.label, p.value))
            .collect()
    }

    #[test]
    fn perfdata_units_and_quoting() {
        assert_eq!(
            perf("time=0.5s;1;2;0;10 size=2KB 'disk /var'=50% rt=250ms up=1500us c=12c"),
            vec![
                ("time".into(), 0.5),
                ("size".into(), 2048.0),
                ("disk /var".into(), 50.0),
                ("rt".into(), 0.25),
                ("up".into(), 0.0015),
                ("c".into(), 12.0),
            ]
        );
        assert_eq!(
            perf("'it''s'=1 'a=b'=2MB"),
            vec![("it's".into(), 1.0), ("a=b".into(), 2.0 * 1024.0 * 1024.0)]
        );
        assert_eq!(
            perf("x=U;1;2 y= z=abc w=-1.5e3 v=3,5 big=1TB"),
            vec![
                ("w".into(), -1500.0),
                ("v".into(), 3.5),
                ("big".into(), 1024f64.powi(4)),
            ]
        );
        assert_eq!(perf("'unterminated=1 ok=2"), vec![]);
        assert_eq!(perf("noequals ok=2"), vec![("ok".into(), 2.0)]);
        assert_eq!(perf("  "), vec![]);
        assert_eq!(perf("e=1e;2"), vec![("e".into(), 1.0)]);
        let many: String = (0..MAX_PERFDATA + 100)
            .map(|i| format!("l{i}=1 "))
            .collect();
        assert_eq!(parse_perfdata(&many).len(), MAX_PERFDATA);
    }

    #[test]
    fn multi_line_output() {
        let p = parse_output(
            "DISK OK - free space | /=2643MB;5948;5958;0;5968\n/ 15272 MB (77%);\n/boot 68 MB (69%);\n/var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n/home=69357MB;253404;253409;0;253414\n",
        );
        assert_eq!(p.message, "DISK OK - free space");
        let labels: Vec<&str> = p.perfdata.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, vec!["/", "/boot", "/home"]);
        assert_eq!(p.perfdata[1].value, 68.0 * 1024.0 * 1024.0);
        let p = parse_output("just text\nmore text\n");
        assert_eq!(
            p,
            Parsed {
                message: "just text".into(),
                perfdata: vec![]
            }
        );
        assert_eq!(parse_output("").message, "");
        assert_eq!(parse_output("| a=1").perfdata.len(), 1);
        let long = "x".repeat(5000);
        assert!(parse_output(&long).message.len() <= MESSAGE_CAP + 3);
    }
}
