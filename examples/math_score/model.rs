//! The model: one-hot categories and standardised scores (the original's
//! ColumnTransformer), ElasticNet (`alpha = 0.001`, `l1_ratio = 0.5`) fitted
//! with linfa, saved as JSON together with what the API needs to judge
//! drift: each numeric input's training distribution in ten quantile bins.

use std::collections::BTreeMap;

use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::data::{Student, EDUCATION, GENDERS, GROUPS, LUNCH, PREP};

pub const ALPHA: f64 = 0.001;
pub const L1_RATIO: f64 = 0.5;
pub const NUMERIC: [&str; 2] = ["reading_score", "writing_score"];

/// How the inputs are turned into the model's features.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Encoder {
    /// Column → its categories, in one-hot order.
    pub categorical: BTreeMap<String, Vec<String>>,
    /// Column → (mean, standard deviation).
    pub numeric: BTreeMap<String, (f64, f64)>,
}

/// A numeric input's training distribution: inner bin edges and the
/// share of training rows in each bin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Bins {
    fn of(values: &[f64]) -> Bins {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .map(|i| v[(v.len() * i / 10).min(v.len() - 1)])
            .collect();
        edges.dedup();
        let shares = Bins::shares(&edges, values);
        Bins { edges, shares }
    }

    pub fn bin(edges: &[f64], x: f64) -> usize {
        edges.iter().take_while(|e| x >= **e).count()
    }

    pub fn shares(edges: &[f64], values: &[f64]) -> Vec<f64> {
        let mut counts = vec![0.0; edges.len() + 1];
        for &x in values {
            counts[Bins::bin(edges, x)] += 1.0;
        }
        let n = values.len().max(1) as f64;
        counts.iter().map(|c| c / n).collect()
    }

    /// Population stability index of `values` against these shares.
    pub fn psi(&self, values: &[f64]) -> f64 {
        let actual = Bins::shares(&self.edges, values);
        self.shares
            .iter()
            .zip(&actual)
            .map(|(e, a)| {
                let (e, a) = (e.max(1e-4), a.max(1e-4));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub kind: String,
    pub alpha: f64,
    pub l1_ratio: f64,
    pub target: String,
    pub features: Vec<String>,
    pub encoder: Encoder,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Unix seconds.
    pub trained_at: f64,
    pub training_rows: usize,
    pub training_distribution: BTreeMap<String, Bins>,
}

fn categories() -> BTreeMap<String, Vec<String>> {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    [
        ("gender", list(&GENDERS)),
        ("race_ethnicity", list(&GROUPS)),
        ("parental_level_of_education", list(&EDUCATION)),
        ("lunch", list(&LUNCH)),
        ("test_preparation_course", list(&PREP)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn categorical_value<'a>(s: &'a Student, column: &str) -> &'a str {
    match column {
        "gender" => &s.gender,
        "race_ethnicity" => &s.race_ethnicity,
        "parental_level_of_education" => &s.parental_level_of_education,
        "lunch" => &s.lunch,
        _ => &s.test_preparation_course,
    }
}

pub fn numeric_value(s: &Student, column: &str) -> f64 {
    if column == "reading_score" {
        s.reading_score
    } else {
        s.writing_score
    }
}

impl Encoder {
    pub fn fit(rows: &[Student]) -> Encoder {
        let numeric = NUMERIC
            .iter()
            .map(|c| {
                let v: Vec<f64> = rows.iter().map(|s| numeric_value(s, c)).collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
                (c.to_string(), (mean, var.sqrt().max(1e-9)))
            })
            .collect();
        Encoder {
            categorical: categories(),
            numeric,
        }
    }

    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (col, cats) in &self.categorical {
            for c in cats {
                out.push(format!("{col}={c}"));
            }
        }
        out.extend(self.numeric.keys().cloned());
        out
    }

    pub fn row(&self, s: &Student) -> Vec<f64> {
        let mut out = Vec::new();
        for (col, cats) in &self.categorical {
            let v = categorical_value(s, col);
            out.extend(cats.iter().map(|c| if c == v { 1.0 } else { 0.0 }));
        }
        for (col, (mean, std)) in &self.numeric {
            out.push((numeric_value(s, col) - mean) / std);
        }
        out
    }

    pub fn matrix(&self, rows: &[Student]) -> Array2<f64> {
        let width = self.feature_names().len();
        let flat: Vec<f64> = rows.iter().flat_map(|s| self.row(s)).collect();
        Array2::from_shape_vec((rows.len(), width), flat).expect("every row has every feature")
    }
}

impl Model {
    /// Fits ElasticNet on `rows`.
    pub fn train(rows: &[Student], encoder: Encoder) -> Result<Model, String> {
        let x = encoder.matrix(rows);
        let y = Array1::from_iter(rows.iter().map(|s| s.math_score));
        let dataset = Dataset::new(x, y);
        let fitted = ElasticNet::params()
            .penalty(ALPHA)
            .l1_ratio(L1_RATIO)
            .max_iterations(10_000)
            .fit(&dataset)
            .map_err(|e| format!("ElasticNet: {e}"))?;
        let training_distribution = NUMERIC
            .iter()
            .map(|c| {
                let v: Vec<f64> = rows.iter().map(|s| numeric_value(s, c)).collect();
                (c.to_string(), Bins::of(&v))
            })
            .collect();
        Ok(Model {
            kind: "ElasticNet".into(),
            alpha: ALPHA,
            l1_ratio: L1_RATIO,
            target: "math_score".into(),
            features: encoder.feature_names(),
            coefficients: fitted.hyperplane().to_vec(),
            intercept: fitted.intercept(),
            encoder,
            trained_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            training_rows: rows.len(),
            training_distribution,
        })
    }

    pub fn predict(&self, s: &Student) -> f64 {
        self.encoder
            .row(s)
            .iter()
            .zip(&self.coefficients)
            .map(|(x, w)| x * w)
            .sum::<f64>()
            + self.intercept
    }
}

/// R², RMSE and MAE of predictions against truth.
pub fn scores(truth: &[f64], predicted: &[f64]) -> (f64, f64, f64) {
    let n = truth.len().max(1) as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_res: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let mae = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / n;
    (1.0 - ss_res / ss_tot.max(1e-12), (ss_res / n).sqrt(), mae)
}
