//! Reading a Prometheus text exposition in the benches: sums over series and quantiles
//! of histograms (buckets summed over every series, as `histogram_quantile(sum by (le))`
//! would).

use std::collections::BTreeMap;

/// One scrape, parsed into `(name, labels, value)` lines.
pub struct Expo {
    lines: Vec<(String, String, f64)>,
}

impl Expo {
    /// Parses the text format (comments and malformed lines skipped).
    pub fn parse(body: &str) -> Self {
        let mut lines = Vec::new();
        for l in body.lines() {
            if l.starts_with('#') || l.is_empty() {
                continue;
            }
            let (series, value) = match l.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            lines.push((name.to_string(), labels.to_string(), v));
        }
        Self { lines }
    }

    /// Sum of every series of `name` whose labels contain `filter` (`""` for all).
    pub fn sum(&self, name: &str, filter: &str) -> f64 {
        self.lines
            .iter()
            .filter(|(n, l, _)| n == name && l.contains(filter))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Cumulative bucket counts of histogram `name`, summed over its series, by `le`.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (n, l, v) in &self.lines {
            if *n != bucket {
                continue;
            }
            let Some(le) = l
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(|s| {
                    if s == "+Inf" {
                        f64::INFINITY
                    } else {
                        s.parse().unwrap_or(f64::NAN)
                    }
                })
            else {
                continue;
            };
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += v;
        }
        let mut v: Vec<(f64, f64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

/// The `q` quantile of the observations between two scrapes' buckets (upper bound of the
/// bucket it falls in, like a conservative `histogram_quantile`); `None` with no samples.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l.to_bits() == le.to_bits())
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            (*le, c - b)
        })
        .collect();
    let total = delta.last().map(|(_, c)| *c).unwrap_or(0.0);
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    delta.iter().find(|(_, c)| *c >= rank).map(|(le, _)| *le)
}
