//! Data profiles of the pipeline's CSV artifacts, and drift between two of
//! them.
//!
//! A profile is read in one pass over the file with bounded memory: the
//! header names the columns; a column is numeric when every value that is
//! not missing (empty, `NA`, `NaN`, `null`, `None`, as pandas reads them)
//! parses as a number, else categorical. Numeric columns keep count, min,
//! max, mean and standard deviation (Welford) over every row, and a
//! reservoir sample of at most `row_cap` values (Algorithm R, seeded), from
//! which quantiles and the drift statistics come: a file of any size costs
//! `row_cap` values a column. Categorical columns count values exactly up
//! to 10,000 distinct ones (the rest go to "other").
//!
//! Drift of a column against the reference profile:
//! - **PSI** (population stability index) `Σ (p − q) · ln(p / q)` over
//!   bins: for numeric columns the reference's deciles (numpy's default,
//!   linear interpolation) as inner edges, values equal to an edge in the
//!   bin above it (`searchsorted(edges, x, side="right")`); for
//!   categorical columns the union of categories. A proportion of 0 is
//!   taken as 1e-6 (the one convention, stated where the tests compute
//!   the same with numpy).
//! - **KS**: the two-sample Kolmogorov–Smirnov statistic, the largest
//!   distance between the two empirical distribution functions (scipy's
//!   `ks_2samp(...).statistic`), on the samples (exact while the files
//!   have at most `row_cap` rows).
//! - schema: columns added, gone or changed type; categories new and gone;
//!   the change of the missing ratio.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values read as missing, as pandas' `read_csv` reads them by default
/// (the common ones).
const MISSING: &[&str] = &["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "-"];
/// Distinct categories counted per column; more go to "other".
const MAX_CATEGORIES: usize = 2_000;
/// Columns profiled per file (the first ones); a wider file's others are
/// left out and the profile says how many.
pub const MAX_COLUMNS: usize = 256;
/// Categories shown in a profile (the rest summed as "other").
const TOP_K: usize = 10;
/// Floor of a bin's proportion in PSI.
pub const PSI_EPSILON: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Numeric,
    Categorical,
}

/// One column's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    pub missing: u64,
    pub missing_ratio: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Quantiles 0, 0.05, …, 1 of the sample (numeric columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<f64>,
    /// The most frequent categories and their counts (categorical).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<(String, u64)>,
    #[serde(default)]
    pub other: u64,
    #[serde(default)]
    pub distinct: u64,
}

/// A file's profile, and what drift needs of it (kept apart: the sample
/// and full counts are larger than what the run page shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub file: String,
    pub rows: u64,
    pub columns: Vec<Column>,
    /// Whether the sample is every value (rows ≤ row cap).
    pub exact: bool,
    /// Columns past [`MAX_COLUMNS`], not profiled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub columns_left_out: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The values drift is computed from: per numeric column its sample, per
/// categorical column its counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub samples: BTreeMap<String, Vec<f64>>,
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    pub missing: BTreeMap<String, f64>,
    pub kinds: BTreeMap<String, Kind>,
}

struct Acc {
    name: String,
    missing: u64,
    numeric: bool,
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    sample: Vec<f64>,
    counts: BTreeMap<String, u64>,
    other: u64,
}

/// A small deterministic generator for the reservoir (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// Profiles a CSV file (`reader` gives its bytes); `row_cap` bounds the
/// values kept per numeric column.
pub fn profile_csv(
    file: &str,
    reader: impl std::io::Read,
    row_cap: usize,
) -> Result<(Profile, Distribution), String> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(reader);
    let headers = r
        .headers()
        .map_err(|e| format!("{file}: cannot read the header: {e}"))?
        .clone();
    let columns_left_out = headers.len().saturating_sub(MAX_COLUMNS);
    let mut acc: Vec<Acc> = headers
        .iter()
        .take(MAX_COLUMNS)
        .map(|h| Acc {
            name: h.trim().to_string(),
            missing: 0,
            numeric: true,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sample: Vec::new(),
            counts: BTreeMap::new(),
            other: 0,
        })
        .collect();
    let mut rows = 0u64;
    let mut rng = Rng(0x5EED);
    let mut record = csv::StringRecord::new();
    loop {
        match r.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("{file}: {e}")),
        }
        rows += 1;
        for (a, v) in acc.iter_mut().zip(record.iter()) {
            let v = v.trim();
            if MISSING.contains(&v) {
                a.missing += 1;
                continue;
            }
            if a.numeric {
                match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => {
                        a.n += 1;
                        let d = x - a.mean;
                        a.mean += d / a.n as f64;
                        a.m2 += d * (x - a.mean);
                        a.min = a.min.min(x);
                        a.max = a.max.max(x);
                        // The reservoir runs on the column's own count of
                        // values (missing ones are not drawn).
                        let n = a.n as usize;
                        if n <= row_cap {
                            a.sample.push(x);
                        } else {
                            let j = rng.below(a.n) as usize;
                            if j < row_cap {
                                a.sample[j] = x;
                            }
                        }
                    }
                    _ => a.numeric = false,
                }
            }
            if a.counts.len() < MAX_CATEGORIES || a.counts.contains_key(v) {
                *a.counts.entry(v.to_string()).or_insert(0) += 1;
            } else {
                a.other += 1;
            }
        }
    }
    let mut columns = Vec::new();
    let mut dist = Distribution::default();
    for a in acc {
        let missing_ratio = if rows == 0 {
            0.0
        } else {
            a.missing as f64 / rows as f64
        };
        dist.missing.insert(a.name.clone(), missing_ratio);
        let numeric = a.numeric && a.n > 0;
        let kind = if numeric {
            Kind::Numeric
        } else {
            Kind::Categorical
        };
        dist.kinds.insert(a.name.clone(), kind.clone());
        let mut c = Column {
            name: a.name.clone(),
            kind,
            missing: a.missing,
            missing_ratio,
            min: None,
            max: None,
            mean: None,
            std: None,
            quantiles: Vec::new(),
            top: Vec::new(),
            other: 0,
            distinct: a.counts.len() as u64,
        };
        if numeric {
            let mut s = a.sample;
            s.sort_by(f64::total_cmp);
            c.min = Some(a.min);
            c.max = Some(a.max);
            c.mean = Some(a.mean);
            c.std = Some(if a.n > 1 {
                (a.m2 / (a.n - 1) as f64).sqrt()
            } else {
                0.0
            });
            c.quantiles = (0..=20).map(|i| quantile(&s, i as f64 / 20.0)).collect();
            dist.samples.insert(a.name.clone(), s);
        } else {
            let mut top: Vec<(String, u64)> =
                a.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
            top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            c.other = top.iter().skip(TOP_K).map(|x| x.1).sum::<u64>() + a.other;
            top.truncate(TOP_K);
            c.top = top;
            dist.counts.insert(a.name.clone(), a.counts);
        }
        columns.push(c);
    }
    let exact = rows as usize <= row_cap;
    Ok((
        Profile {
            file: file.to_string(),
            rows,
            columns,
            exact,
            columns_left_out,
        },
        dist,
    ))
}

/// numpy's default percentile (linear interpolation) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// PSI of two proportion vectors, with zero proportions floored.
fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = (e.max(PSI_EPSILON), a.max(PSI_EPSILON));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// PSI of a numeric column on the reference's deciles.
pub fn psi_numeric(reference: &[f64], current: &[f64]) -> f64 {
    if reference.is_empty() || current.is_empty() {
        return f64::NAN;
    }
    let mut r = reference.to_vec();
    r.sort_by(f64::total_cmp);
    let edges: Vec<f64> = (1..10).map(|i| quantile(&r, i as f64 / 10.0)).collect();
    let bins = |xs: &[f64]| {
        let mut counts = [0u64; 10];
        for x in xs {
            // searchsorted(edges, x, side="right")
            let i = edges.partition_point(|e| *e <= *x);
            counts[i] += 1;
        }
        counts.map(|c| c as f64 / xs.len() as f64)
    };
    psi(&bins(reference), &bins(current))
}

/// PSI of a categorical column over the union of categories.
pub fn psi_categorical(reference: &BTreeMap<String, u64>, current: &BTreeMap<String, u64>) -> f64 {
    let (rt, ct) = (
        reference.values().sum::<u64>().max(1) as f64,
        current.values().sum::<u64>().max(1) as f64,
    );
    let keys: std::collections::BTreeSet<&String> =
        reference.keys().chain(current.keys()).collect();
    let e: Vec<f64> = keys
        .iter()
        .map(|k| reference.get(*k).copied().unwrap_or(0) as f64 / rt)
        .collect();
    let a: Vec<f64> = keys
        .iter()
        .map(|k| current.get(*k).copied().unwrap_or(0) as f64 / ct)
        .collect();
    psi(&e, &a)
}

/// The two-sample Kolmogorov–Smirnov statistic.
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// How one column moved against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    pub column: String,
    pub psi: Option<f64>,
    pub ks: Option<f64>,
    pub missing_ratio: f64,
    pub missing_ratio_change: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_categories: Vec<String>,
    /// "added", "removed", "type" (the kind changed), or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_change: Option<String>,
}

impl ColumnDrift {
    /// How severe, for sorting: schema changes first, then PSI.
    pub fn severity(&self) -> f64 {
        if self.schema_change.is_some() {
            return f64::INFINITY;
        }
        self.psi.unwrap_or(0.0).max(self.ks.unwrap_or(0.0) / 2.0)
    }
}

/// Every column's drift of `current` against `reference`, most severe
/// first.
pub fn drift(reference: &Distribution, current: &Distribution) -> Vec<ColumnDrift> {
    let mut out = Vec::new();
    for (name, kind) in &current.kinds {
        let missing = current.missing.get(name).copied().unwrap_or(0.0);
        let mut d = ColumnDrift {
            column: name.clone(),
            psi: None,
            ks: None,
            missing_ratio: missing,
            missing_ratio_change: missing - reference.missing.get(name).copied().unwrap_or(0.0),
            new_categories: Vec::new(),
            missing_categories: Vec::new(),
            schema_change: None,
        };
        match reference.kinds.get(name) {
            None => d.schema_change = Some("added".into()),
            Some(k) if k != kind => d.schema_change = Some("type".into()),
            Some(_) => match kind {
                Kind::Numeric => {
                    if let (Some(r), Some(c)) =
                        (reference.samples.get(name), current.samples.get(name))
                    {
                        d.psi = Some(psi_numeric(r, c)).filter(|x| x.is_finite());
                        d.ks = Some(ks(r, c)).filter(|x| x.is_finite());
                    }
                }
                Kind::Categorical => {
                    if let (Some(r), Some(c)) =
                        (reference.counts.get(name), current.counts.get(name))
                    {
                        d.psi = Some(psi_categorical(r, c));
                        d.new_categories =
                            c.keys().filter(|k| !r.contains_key(*k)).cloned().collect();
                        d.missing_categories =
                            r.keys().filter(|k| !c.contains_key(*k)).cloned().collect();
                    }
                }
            },
        }
        out.push(d);
    }
    for name in reference
        .kinds
        .keys()
        .filter(|n| !current.kinds.contains_key(*n))
    {
        out.push(ColumnDrift {
            column: name.clone(),
            psi: None,
            ks: None,
            missing_ratio: 0.0,
            missing_ratio_change: 0.0,
            new_categories: Vec::new(),
            missing_categories: Vec::new(),
            schema_change: Some("removed".into()),
        });
    }
    out.sort_by(|a, b| {
        b.severity()
            .total_cmp(&a.severity())
            .then(a.column.cmp(&b.column))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_missing_values_and_categories() {
        let csv = "a,b,c\n1,x,\n2,y,NA\n3.5,x,7\n,z,8\n";
        let (p, d) = profile_csv("t.csv", csv.as_bytes(), 100).unwrap();
        assert_eq!(p.rows, 4);
        assert_eq!(p.columns[0].kind, Kind::Numeric);
        assert_eq!(p.columns[0].missing, 1);
        assert_eq!(p.columns[0].max, Some(3.5));
        assert_eq!(p.columns[1].kind, Kind::Categorical);
        assert_eq!(p.columns[1].top[0], ("x".to_string(), 2));
        assert_eq!(p.columns[2].missing_ratio, 0.5);
        assert_eq!(d.samples["a"], vec![1.0, 2.0, 3.5]);
        assert!(p.exact);
    }

    #[test]
    fn a_very_wide_file_profiles_its_first_columns() {
        let header: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let row: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let csv = format!("{}\n{}\n", header.join(","), row.join(","));
        let (p, _) = profile_csv("wide.csv", csv.as_bytes(), 10).unwrap();
        assert_eq!(p.columns.len(), MAX_COLUMNS);
        assert_eq!(p.columns_left_out, 1000 - MAX_COLUMNS);
    }

    #[test]
    fn ragged_and_binary_files_are_refused_with_the_file_named() {
        let e = profile_csv("bad.csv", "a,b\n1\n".as_bytes(), 10).unwrap_err();
        assert!(e.starts_with("bad.csv:"), "{e}");
        let e = profile_csv("bin.csv", &b"a,b\n\xff\xfe,1\n"[..], 10).unwrap_err();
        assert!(e.starts_with("bin.csv:"), "{e}");
    }

    #[test]
    fn ks_and_psi_of_known_cases() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(ks(&a, &a), 0.0);
        let b: Vec<f64> = (50..150).map(f64::from).collect();
        assert!((ks(&a, &b) - 0.5).abs() < 1e-12);
        assert!(psi_numeric(&a, &a).abs() < 1e-12);
        assert!(psi_numeric(&a, &b) > 0.25);
    }

    #[test]
    fn schema_changes_are_found() {
        let (_, r) = profile_csv("r", "a,b\n1,x\n2,y\n".as_bytes(), 10).unwrap();
        let (_, c) = profile_csv("c", "a,bb\nx,x\ny,z\n".as_bytes(), 10).unwrap();
        let d = drift(&r, &c);
        let by: BTreeMap<&str, Option<&str>> = d
            .iter()
            .map(|x| (x.column.as_str(), x.schema_change.as_deref()))
            .collect();
        assert_eq!(by["a"], Some("type"));
        assert_eq!(by["bb"], Some("added"));
        assert_eq!(by["b"], Some("removed"));
    }
}
