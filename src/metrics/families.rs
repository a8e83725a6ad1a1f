//! The per-check metric families, rendered in pieces.
//!
//! The text format wants every sample of a family together, so the exposition is
//! family-major: for each family its `# HELP`/`# TYPE` lines, then one line (or a few)
//! per check. [`Chunks`] walks that order a slice of checks at a time, so the HTTP
//! handler can stream a scrape of 100,000 checks in pieces of about [`CHUNK_BYTES`]
//! instead of building the whole exposition (tens of MiB) in memory, and a scrape never
//! holds a runtime worker for the whole render.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::series::{
    LATENCY_BUCKETS, PHASES, Series, escape, head, int, num, put, sample, sample_int,
};
use crate::check::ErrorKind;
use crate::health::Status;

/// Bytes a streamed chunk aims at (a chunk ends after the check that passes it).
///
/// Each chunk is one hand-over from the render thread to the connection's task and one
/// `writev`. At 10,000 checks (24 MB) 64 KiB chunks cost about 30 ms of CPU a scrape and
/// 256 KiB chunks about 20; 512 KiB saved nothing more and held twice the memory. With
/// the channel of two, a scrape holds at most about four chunks: 1 MiB.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Which families a scrape carries (`[metrics]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Whether the `lifeline_check_latency_seconds` family is written at all (some check
    /// has `latency_histogram = "classic"`: 16 series each; a check whose kind has
    /// `"none"` is skipped inside it).
    pub latency_histogram: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latency_histogram: true,
        }
    }
}

/// `,le="0.005"} ` for every latency bucket, built once.
fn bucket_labels() -> &'static [String] {
    static LES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LES.get_or_init(|| {
        LATENCY_BUCKETS
            .iter()
            .map(|b| {
                let mut x = String::new();
                num(&mut x, *b);
                format!(",le=\"{x}\"}} ")
            })
            .collect()
    })
}

type Lines = fn(&Series, &mut String);

/// One family: its name, help, type, and the lines of one check.
struct Family {
    name: &'static str,
    help: &'static str,
    ty: &'static str,
    lines: Lines,
}

fn gauge(out: &mut String, name: &str, s: &Series, v: Option<f64>) {
    if let Some(v) = v {
        sample(out, name, s, None, v);
    }
}

const INFO: Family = Family {
    name: "lifeline_check_info",
    help: "Static facts about each check; its labels are the check's own labels.",
    ty: "gauge",
    lines: |s, out| {
        out.push_str("lifeline_check_info{check=\"");
        out.push_str(&s.name);
        out.push_str("\",kind=\"");
        out.push_str(s.kind);
        out.push_str("\",mode=\"");
        out.push_str(s.mode);
        out.push('"');
        for (k, v) in &s.labels {
            out.push(',');
            out.push_str(k);
            out.push_str("=\"");
            escape(v, out);
            out.push('"');
        }
        out.push_str("} 1\n");
    },
};

const UP: Family = Family {
    name: "lifeline_check_up",
    help: "1 if the check is healthy or degraded, 0 otherwise.",
    ty: "gauge",
    lines: |s, out| {
        let v = s.up.load(Ordering::Relaxed);
        sample_int(out, "lifeline_check_up", s, None, v);
    },
};

const STATUS: Family = Family {
    name: "lifeline_check_status",
    help: "1 for the check's current status, 0 for the other five.",
    ty: "gauge",
    lines: |s, out| {
        let cur = s.status.load(Ordering::Relaxed) as usize;
        for (i, st) in Status::ALL.iter().enumerate() {
            sample_int(
                out,
                "lifeline_check_status",
                s,
                Some(("status", st.as_str())),
                u8::from(i == cur),
            );
        }
    },
};

const SCORE: Family = Family {
    name: "lifeline_check_score",
    help: "Health score of the check, 0-100 (NaN while unknown).",
    ty: "gauge",
    lines: |s, out| {
        let v = s.score.get().unwrap_or(f64::NAN);
        gauge(out, "lifeline_check_score", s, Some(v));
    },
};

const LATENCY: Family = Family {
    name: "lifeline_check_latency_seconds",
    help: "Duration of each successful attempt or heartbeat round trip.",
    ty: "histogram",
    lines: |s, out| {
        if !s.histogram.load(Ordering::Relaxed) {
            return;
        }
        for (b, le) in s.buckets.iter().zip(bucket_labels()) {
            put(out, "lifeline_check_latency_seconds_bucket{");
            put(out, &s.prefix);
            put(out, le);
            int(out, b.load(Ordering::Relaxed));
            out.push('\n');
        }
        let count = s.lat_count.load(Ordering::Relaxed);
        sample_int(
            out,
            "lifeline_check_latency_seconds_bucket",
            s,
            Some(("le", "+Inf")),
            count,
        );
        sample(
            out,
            "lifeline_check_latency_seconds_sum",
            s,
            None,
            s.lat_sum.get().unwrap_or(0.0),
        );
        sample_int(out, "lifeline_check_latency_seconds_count", s, None, count);
    },
};

const ATTEMPTS: Family = Family {
    name: "lifeline_check_attempts_total",
    help: "Attempts by result (success, failure, timeout).",
    ty: "counter",
    lines: |s, out| {
        for (i, r) in ["success", "failure", "timeout"].iter().enumerate() {
            sample_int(
                out,
                "lifeline_check_attempts_total",
                s,
                Some(("result", r)),
                s.attempts[i].load(Ordering::Relaxed),
            );
        }
    },
};

const FAILURES: Family = Family {
    name: "lifeline_check_failures_total",
    help: "Failed attempts by error kind.",
    ty: "counter",
    lines: |s, out| {
        let Some(rare) = s.rare() else { return };
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            let n = rare.failures[i].load(Ordering::Relaxed);
            if n > 0 {
                sample_int(
                    out,
                    "lifeline_check_failures_total",
                    s,
                    Some(("error_kind", k.as_str())),
                    n,
                );
            }
        }
    },
};

const CONSECUTIVE: Family = Family {
    name: "lifeline_check_consecutive_failures",
    help: "Failures in a row.",
    ty: "gauge",
    lines: |s, out| {
        let v = s.consecutive.load(Ordering::Relaxed);
        sample_int(out, "lifeline_check_consecutive_failures", s, None, v);
    },
};

const BACKOFF: Family = Family {
    name: "lifeline_check_backoff_seconds",
    help: "Delay before the next attempt.",
    ty: "gauge",
    lines: |s, out| gauge(out, "lifeline_check_backoff_seconds", s, s.backoff.get()),
};

const LAST_SUCCESS: Family = Family {
    name: "lifeline_check_last_success_timestamp_seconds",
    help: "Unix time of the last success.",
    ty: "gauge",
    lines: |s, out| {
        let v = s.last_success.get();
        gauge(out, "lifeline_check_last_success_timestamp_seconds", s, v);
    },
};

const TLS_NOT_AFTER: Family = Family {
    name: "lifeline_check_tls_not_after_timestamp_seconds",
    help: "Unix time the server certificate seen by the last TLS handshake expires (notAfter).",
    ty: "gauge",
    lines: |s, out| {
        let v = s.rare().and_then(|r| r.tls_not_after.get());
        gauge(out, "lifeline_check_tls_not_after_timestamp_seconds", s, v);
    },
};

const CHANGES: Family = Family {
    name: "lifeline_check_state_changes_total",
    help: "Status changes.",
    ty: "counter",
    lines: |s, out| {
        let v = s.changes.load(Ordering::Relaxed);
        sample_int(out, "lifeline_check_state_changes_total", s, None, v);
    },
};

const RECONNECTS: Family = Family {
    name: "lifeline_session_reconnects_total",
    help: "Sessions re-established after being lost.",
    ty: "counter",
    lines: |s, out| {
        if let Some(r) = &s.reconnects {
            let v = r.load(Ordering::Relaxed);
            sample_int(out, "lifeline_session_reconnects_total", s, None, v);
        }
    },
};

const PERFDATA: Family = Family {
    name: "lifeline_check_perfdata",
    help: "Values reported by the check (exec/plugin perfdata, SIP status code), base units.",
    ty: "gauge",
    lines: |s, out| {
        let Some(rare) = s.rare() else { return };
        for (label, v) in rare.perfdata.lock().iter() {
            sample(
                out,
                "lifeline_check_perfdata",
                s,
                Some(("label", label)),
                *v,
            );
        }
    },
};

const PERFDATA_DROPPED: Family = Family {
    name: "lifeline_check_perfdata_dropped_total",
    help: "Perfdata values not exported because a result reported more than 64 labels.",
    ty: "counter",
    lines: |s, out| {
        let n = s
            .rare()
            .map_or(0, |r| r.perfdata_dropped.load(Ordering::Relaxed));
        if n > 0 {
            sample_int(out, "lifeline_check_perfdata_dropped_total", s, None, n);
        }
    },
};

const PHASE: Family = Family {
    name: "lifeline_check_phase_seconds",
    help: "Time per phase of the last attempt.",
    ty: "gauge",
    lines: |s, out| {
        for (i, p) in PHASES.iter().enumerate() {
            if let Some(v) = s.phases[i].get() {
                sample(
                    out,
                    "lifeline_check_phase_seconds",
                    s,
                    Some(("phase", p)),
                    v,
                );
            }
        }
    },
};

/// Every per-check family, in exposition order (HELP/TYPE are always written, so a
/// dashboard can tell a family exists before it has samples).
const ALL: [&Family; 16] = [
    &INFO,
    &UP,
    &STATUS,
    &SCORE,
    &LATENCY,
    &ATTEMPTS,
    &FAILURES,
    &CONSECUTIVE,
    &BACKOFF,
    &LAST_SUCCESS,
    &TLS_NOT_AFTER,
    &CHANGES,
    &RECONNECTS,
    &PERFDATA,
    &PERFDATA_DROPPED,
    &PHASE,
];

/// Names of the per-check families a scrape with `opts` carries.
pub fn names(opts: Options) -> impl Iterator<Item = &'static str> {
    ALL.iter()
        .filter(move |f| opts.latency_histogram || f.name != LATENCY.name)
        .map(|f| f.name)
}

/// Renders every per-check family at once, with the default options (tests).
pub fn render(all: &[Arc<Series>], out: &mut String) {
    let mut r = Chunks::new(all.to_vec(), Options::default());
    while r.next_into(out, usize::MAX) {}
}

/// How many checks ahead of the one being written a walk asks for its series' memory.
const AHEAD: usize = 32;

/// Cache lines a [`Series`] can touch, wherever it starts.
const SERIES_LINES: usize = std::mem::size_of::<Series>() / 64 + 1;

/// Asks the CPU to bring `lines` cache lines from `p` on into its cache.
///
/// A walk visits every check's series once per family (16 times a scrape), and the
/// series of 10,000 checks are spread over the whole heap between the checks' other
/// allocations. By the next scrape the 24 MB the last one sent through the kernel have
/// pushed them out of the cache, so without a hint every visit waits for memory: in the
/// running agent that was a third of the render.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for k in 0..lines {
        // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and
        // reads nothing into the program.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(k * 64).cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, lines);
}

/// A walk over every family × every check, written out a piece at a time.
pub struct Chunks {
    checks: Vec<Arc<Series>>,
    families: Vec<&'static Family>,
    family: usize,
    /// Next check of the current family; `None` before its HELP/TYPE lines.
    check: Option<usize>,
}

impl Chunks {
    /// Over a snapshot of the checks (taken once, so a reload meanwhile cannot make a
    /// family list a check another family lacks).
    pub fn new(checks: Vec<Arc<Series>>, opts: Options) -> Self {
        Self {
            checks,
            families: ALL
                .iter()
                .copied()
                .filter(|f| opts.latency_histogram || f.name != LATENCY.name)
                .collect(),
            family: 0,
            check: None,
        }
    }

    /// Appends lines to `out` until it has grown by at least `budget` bytes or the walk is
    /// over; false once nothing is left (and nothing was written).
    pub fn next_into(&mut self, out: &mut String, budget: usize) -> bool {
        let start = out.len();
        let mut wrote = false;
        while let Some(f) = self.families.get(self.family) {
            let i = match self.check {
                None => {
                    head(out, f.name, f.help, f.ty);
                    self.check = Some(0);
                    wrote = true;
                    0
                }
                Some(i) => i,
            };
            if let Some(s) = self.checks.get(i) {
                if let Some(ahead) = self.checks.get(i + AHEAD) {
                    prefetch(Arc::as_ptr(ahead).cast(), SERIES_LINES);
                }
                if let Some(near) = self.checks.get(i + AHEAD / 2) {
                    // Its series is in the cache by now, so reading where the label
                    // prefix lives costs nothing.
                    prefetch(near.prefix.as_ptr(), 1);
                }
                (f.lines)(s, out);
                self.check = Some(i + 1);
                wrote = true;
            } else {
                self.family += 1;
                self.check = None;
            }
            if out.len() - start >= budget {
                break;
            }
        }
        wrote
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn checks(n: usize) -> Vec<Arc<Series>> {
        (0..n)
            .map(|i| {
                let s = Series::new(&format!("c{i}"), "tcp", "probe", false, BTreeMap::new());
                s.observe_latency(0.002);
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn pieces_add_up_to_the_whole_in_family_order() {
        let all = checks(300);
        let mut whole = String::new();
        render(&all, &mut whole);
        let mut c = Chunks::new(all, Options::default());
        let (mut joined, mut pieces) = (String::new(), 0);
        loop {
            let mut piece = String::new();
            if !c.next_into(&mut piece, 4096) {
                break;
            }
            assert!(piece.ends_with('\n'), "a piece ends on a line");
            pieces += 1;
            joined.push_str(&piece);
        }
        assert_eq!(joined, whole);
        assert!(pieces > 10, "{pieces}");
        // Family-major: every sample of a family sits under its own TYPE line.
        let mut seen = Vec::new();
        for l in whole.lines().filter(|l| l.starts_with("# TYPE ")) {
            seen.push(l.split(' ').nth(2).unwrap_or("").to_string());
        }
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn latency_histogram_none_leaves_the_family_out() {
        let mut c = Chunks::new(
            checks(2),
            Options {
                latency_histogram: false,
            },
        );
        let mut out = String::new();
        while c.next_into(&mut out, usize::MAX) {}
        assert!(!out.contains("lifeline_check_latency_seconds"));
        assert!(out.contains("lifeline_check_attempts_total{check=\"c1\""));
        assert_eq!(
            names(Options {
                latency_histogram: false
            })
            .count(),
            15
        );
    }
}
