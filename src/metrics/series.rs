//! Per-check series kept as plain atomics and rendered straight into the text exposition.
//!
//! With 10,000 checks there are ~350,000 per-check sample lines. Going through the
//! `prometheus` crate's `gather()` allocates a protobuf struct and label strings for every
//! one of them on every scrape (seconds at that size); writing from atomics is a loop of
//! formatting. Agent-wide metrics stay in the crate's registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::check::ErrorKind;
use crate::health::Status;

/// Latency buckets (seconds): 1 ms … 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most `lifeline_check_perfdata` series one check keeps; labels past it in one result are
/// cut (first ones kept, in the order the check reported them) and counted in
/// `lifeline_check_perfdata_dropped_total`.
pub const PERFDATA_CAP: usize = 64;

pub(super) const PHASES: [&str; 5] = ["dns", "connect", "tls", "auth", "exchange"];
const UNSET: u64 = u64::MAX; // f64 bits of a NaN we never produce: "no sample yet"

/// An f64 in an atomic; `UNSET` means "no value", which is not rendered.
#[derive(Debug)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// Starts unset.
    pub fn unset() -> Self {
        Self(AtomicU64::new(UNSET))
    }
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// The value, if set.
    pub fn get(&self) -> Option<f64> {
        let b = self.0.load(Ordering::Relaxed);
        (b != UNSET).then(|| f64::from_bits(b))
    }
    fn add(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let base = if cur == UNSET {
                0.0
            } else {
                f64::from_bits(cur)
            };
            let new = (base + v).to_bits();
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(x) => cur = x,
            }
        }
    }
}

/// Every per-check series of one check.
#[derive(Debug)]
pub struct Series {
    /// `check` label.
    pub name: String,
    /// `kind` label.
    pub kind: &'static str,
    /// `mode` label of the info series.
    pub mode: &'static str,
    /// The check's own labels (info series only).
    pub labels: BTreeMap<String, String>,
    /// `check="…",kind="…"`, written once.
    pub(super) prefix: String,
    pub(crate) up: AtomicI64,
    pub(crate) status: AtomicU8,
    pub(crate) score: AtomicF64,
    pub(crate) buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    pub(crate) lat_sum: AtomicF64,
    pub(crate) lat_count: AtomicU64,
    pub(crate) attempts: [AtomicU64; 3],
    /// What most checks never need (failure counts, perfdata, TLS expiry), allocated on
    /// first use: a healthy tcp check does not carry its ~120 bytes.
    rare: std::sync::OnceLock<Box<Rare>>,
    pub(crate) consecutive: AtomicI64,
    pub(crate) backoff: AtomicF64,
    pub(crate) last_success: AtomicF64,
    pub(crate) changes: AtomicU64,
    pub(crate) reconnects: Option<AtomicU64>,
    pub(crate) phases: [AtomicF64; 5],
    /// Whether this check's latency histogram is exported (`[metrics]`).
    pub(crate) histogram: std::sync::atomic::AtomicBool,
}

/// The part of a [`Series`] allocated on first use.
#[derive(Debug)]
pub(crate) struct Rare {
    pub(crate) failures: [AtomicU64; ErrorKind::ALL.len()],
    pub(crate) perfdata: Mutex<BTreeMap<String, f64>>,
    pub(crate) perfdata_dropped: AtomicU64,
    pub(crate) tls_not_after: AtomicF64,
}

impl Default for Rare {
    fn default() -> Self {
        Self {
            failures: Default::default(),
            perfdata: Mutex::new(BTreeMap::new()),
            perfdata_dropped: AtomicU64::new(0),
            tls_not_after: AtomicF64::unset(),
        }
    }
}

impl Series {
    /// The rarely used part, allocated now if it was not.
    pub(crate) fn rare_or_init(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }

    /// The rarely used part, if it was ever used.
    pub(crate) fn rare(&self) -> Option<&Rare> {
        self.rare.get().map(|b| &**b)
    }

    /// Fresh series for a check.
    pub fn new(
        name: &str,
        kind: &'static str,
        mode: &'static str,
        session: bool,
        labels: BTreeMap<String, String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            kind,
            mode,
            labels,
            // Names match [a-z0-9_.-] and kinds are static words: nothing to escape.
            prefix: format!("check=\"{name}\",kind=\"{kind}\""),
            up: AtomicI64::new(0),
            status: AtomicU8::new(0),
            score: AtomicF64::unset(),
            buckets: Default::default(),
            lat_sum: AtomicF64(AtomicU64::new(0f64.to_bits())),
            lat_count: AtomicU64::new(0),
            attempts: Default::default(),
            consecutive: AtomicI64::new(0),
            backoff: AtomicF64(AtomicU64::new(0f64.to_bits())),
            last_success: AtomicF64::unset(),
            changes: AtomicU64::new(0),
            reconnects: session.then(|| AtomicU64::new(0)),
            phases: [
                AtomicF64::unset(),
                AtomicF64::unset(),
                AtomicF64::unset(),
                AtomicF64::unset(),
                AtomicF64::unset(),
            ],
            rare: std::sync::OnceLock::new(),
            histogram: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Replaces the perfdata series with the values of the latest result: labels the
    /// result no longer reports disappear (a plugin printing a timestamp or a PID in its
    /// labels would otherwise grow the exposition forever), and at most [`PERFDATA_CAP`]
    /// distinct labels are kept, the rest counted as dropped.
    pub fn set_perfdata<'a>(&self, values: impl IntoIterator<Item = (&'a str, f64)>) {
        let mut values = values.into_iter().peekable();
        if values.peek().is_none() && self.rare().is_none() {
            return; // nothing reported, nothing to clear
        }
        let rare = self.rare_or_init();
        let mut next = BTreeMap::new();
        let mut dropped = 0u64;
        for (label, v) in values {
            if next.len() < PERFDATA_CAP || next.contains_key(label) {
                next.insert(label.to_string(), v);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            rare.perfdata_dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        *rare.perfdata.lock() = next;
    }

    /// Records a latency observation.
    pub fn observe_latency(&self, secs: f64) {
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lat_sum.add(secs);
        self.lat_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the status gauges.
    pub fn set_status(&self, s: Status) {
        let i = Status::ALL.iter().position(|x| *x == s).unwrap_or(0);
        self.status.store(i as u8, Ordering::Relaxed);
        self.up.store(i64::from(s.is_up()), Ordering::Relaxed);
    }

    /// Sets a phase duration (index into dns, connect, tls, auth, exchange).
    pub fn set_phase(&self, i: usize, secs: f64) {
        self.phases[i].set(secs);
    }
}

/// Escapes a label value for the text format.
pub fn escape(v: &str, out: &mut String) {
    // Nearly every value (names, kinds, statuses) has nothing to escape: one copy.
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        put(out, v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `s` to `out`.
///
/// A scrape of 10,000 checks is about 1.7 million short copies (metric names, the
/// check's label prefix, numbers), each under 40 bytes. `push_str` calls libc's
/// `memmove` for each; here up to 64 bytes are moved inline with two overlapping
/// fixed-size loads and stores, the way `memmove` itself does, without the call.
#[inline(always)]
#[allow(unsafe_code)]
pub(super) fn put(out: &mut String, s: &str) {
    let n = s.len();
    if n > 64 {
        out.push_str(s);
        return;
    }
    out.reserve(64);
    // SAFETY: `reserve` left at least 64 writable bytes after `len`, and every store below
    // lands in `dst[..n]` with `n <= 64`; every load reads inside `s`. The bytes appended
    // are all of `s`, a whole `str`, so the string stays UTF-8.
    unsafe {
        let v = out.as_mut_vec();
        let len = v.len();
        let dst = v.as_mut_ptr().add(len);
        let src = s.as_ptr();
        if n >= 32 {
            let a = src.cast::<[u8; 32]>().read_unaligned();
            let b = src.add(n - 32).cast::<[u8; 32]>().read_unaligned();
            dst.cast::<[u8; 32]>().write_unaligned(a);
            dst.add(n - 32).cast::<[u8; 32]>().write_unaligned(b);
        } else if n >= 16 {
            let a = src.cast::<[u8; 16]>().read_unaligned();
            let b = src.add(n - 16).cast::<[u8; 16]>().read_unaligned();
            dst.cast::<[u8; 16]>().write_unaligned(a);
            dst.add(n - 16).cast::<[u8; 16]>().write_unaligned(b);
        } else if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        v.set_len(len + n);
    }
}

pub(super) fn num(out: &mut String, v: f64) {
    if v.is_nan() {
        put(out, "NaN");
    } else if v.is_infinite() {
        put(out, if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        put(out, itoa::Buffer::new().format(v as i64));
    } else {
        put(out, ryu::Buffer::new().format_finite(v));
    }
}

pub(super) fn int(out: &mut String, v: impl itoa::Integer) {
    put(out, itoa::Buffer::new().format(v));
}

pub(super) fn head(out: &mut String, name: &str, help: &str, ty: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

/// A sample line with a float value.
pub(super) fn sample(
    out: &mut String,
    name: &str,
    s: &Series,
    extra: Option<(&str, &str)>,
    v: f64,
) {
    labels(out, name, s, extra);
    num(out, v);
    out.push('\n');
}

/// A sample line with an integer value (counters, 0/1 gauges): written as the float
/// path would write it, without the float round trip.
pub(super) fn sample_int(
    out: &mut String,
    name: &str,
    s: &Series,
    extra: Option<(&str, &str)>,
    v: impl itoa::Integer,
) {
    labels(out, name, s, extra);
    int(out, v);
    out.push('\n');
}

/// `name{check="…",kind="…"[,k="v"]} `: a line up to its value.
#[inline(always)]
fn labels(out: &mut String, name: &str, s: &Series, extra: Option<(&str, &str)>) {
    put(out, name);
    out.push('{');
    put(out, &s.prefix);
    if let Some((k, val)) = extra {
        out.push(',');
        put(out, k);
        put(out, "=\"");
        escape(val, out);
        out.push('"');
    }
    put(out, "} ");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let s = Series::new("a", "tcp", "probe", false, BTreeMap::new());
        s.observe_latency(0.003);
        s.observe_latency(20.0);
        let mut out = String::new();
        super::super::families::render(&[std::sync::Arc::new(s)], &mut out);
        assert!(out.contains(
            "lifeline_check_latency_seconds_bucket{check=\"a\",kind=\"tcp\",le=\"0.0025\"} 0\n"
        ));
        assert!(out.contains(
            "lifeline_check_latency_seconds_bucket{check=\"a\",kind=\"tcp\",le=\"0.005\"} 1\n"
        ));
        assert!(out.contains(
            "lifeline_check_latency_seconds_bucket{check=\"a\",kind=\"tcp\",le=\"10\"} 1\n"
        ));
        assert!(out.contains(
            "lifeline_check_latency_seconds_bucket{check=\"a\",kind=\"tcp\",le=\"+Inf\"} 2\n"
        ));
        assert!(out.contains("lifeline_check_latency_seconds_count{check=\"a\",kind=\"tcp\"} 2\n"));
        assert!(
            out.contains("lifeline_check_latency_seconds_sum{check=\"a\",kind=\"tcp\"} 20.003\n")
        );
    }

    #[test]
    fn perfdata_keeps_the_latest_labels_only_and_counts_cuts() {
        let s = Series::new("p", "exec", "probe", false, BTreeMap::new());
        s.set_perfdata([("a", 1.0), ("b", 2.0)]);
        s.set_perfdata([("b", 3.0), ("c", 4.0)]);
        let kept: Vec<(String, f64)> = s
            .rare()
            .unwrap()
            .perfdata
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(kept, vec![("b".into(), 3.0), ("c".into(), 4.0)]);
        let labels: Vec<String> = (0..PERFDATA_CAP + 10).map(|i| format!("l{i:03}")).collect();
        s.set_perfdata(labels.iter().map(|l| (l.as_str(), 1.0)));
        let rare = s.rare().unwrap();
        assert_eq!(rare.perfdata.lock().len(), PERFDATA_CAP);
        assert!(rare.perfdata.lock().contains_key("l000"));
        assert!(
            !rare
                .perfdata
                .lock()
                .contains_key(&format!("l{:03}", PERFDATA_CAP))
        );
        let mut out = String::new();
        super::super::families::render(&[std::sync::Arc::new(s)], &mut out);
        assert!(
            out.contains("lifeline_check_perfdata_dropped_total{check=\"p\",kind=\"exec\"} 10\n")
        );
    }

    #[test]
    fn put_appends_every_length_exactly() {
        let text: String = (0..100u8).map(|i| char::from(b'a' + i % 26)).collect();
        for n in 0..=text.len() {
            for start in 0..3 {
                let mut fast = "x".repeat(start);
                let mut slow = fast.clone();
                put(&mut fast, &text[..n]);
                put(&mut fast, "é€");
                slow.push_str(&text[..n]);
                slow.push_str("é€");
                assert_eq!(fast, slow, "length {n} after {start}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape("a\"b\\c\nd", &mut out);
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }
}
