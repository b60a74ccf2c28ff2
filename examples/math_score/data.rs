//! Student records with the public "students performance" dataset's schema:
//! a seeded generator whose relationships resemble the real data (math
//! tied to reading and writing, effects of gender, lunch, test preparation
//! and group), a CSV reader and writer, and validation of schema, types
//! and ranges.

use std::path::Path;

pub const GENDERS: [&str; 2] = ["female", "male"];
pub const GROUPS: [&str; 5] = ["group A", "group B", "group C", "group D", "group E"];
pub const EDUCATION: [&str; 6] = [
    "some high school",
    "high school",
    "some college",
    "associate's degree",
    "bachelor's degree",
    "master's degree",
];
pub const LUNCH: [&str; 2] = ["free/reduced", "standard"];
pub const PREP: [&str; 2] = ["none", "completed"];

/// The CSV header, in the dataset's column order.
pub const HEADER: [&str; 8] = [
    "gender",
    "race_ethnicity",
    "parental_level_of_education",
    "lunch",
    "test_preparation_course",
    "math_score",
    "reading_score",
    "writing_score",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Student {
    pub gender: String,
    pub race_ethnicity: String,
    pub parental_level_of_education: String,
    pub lunch: String,
    pub test_preparation_course: String,
    pub reading_score: f64,
    pub writing_score: f64,
    pub math_score: f64,
}

/// SplitMix64: small, seeded, good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn pick<'a>(&mut self, items: &[&'a str], weights: &[f64]) -> &'a str {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (item, w) in items.iter().zip(weights) {
            if x < *w {
                return item;
            }
            x -= w;
        }
        items[items.len() - 1]
    }
}

fn clamp_score(v: f64) -> f64 {
    v.round().clamp(0.0, 100.0)
}

/// `rows` students. With `drift` > 0, that share of the rows have reading
/// and writing scores unrelated to their math score and every score is
/// shifted down by `drift` × 25 points: the inputs move away from the
/// training distribution and the relationship the model learns weakens.
pub fn generate(rows: usize, seed: u64, drift: f64) -> Vec<Student> {
    let mut rng = Rng::new(seed);
    (0..rows)
        .map(|_| {
            let gender = rng.pick(&GENDERS, &[0.52, 0.48]);
            let group = rng.pick(&GROUPS, &[0.09, 0.19, 0.32, 0.26, 0.14]);
            let education = rng.pick(&EDUCATION, &[0.18, 0.2, 0.23, 0.22, 0.12, 0.05]);
            let lunch = rng.pick(&LUNCH, &[0.35, 0.65]);
            let prep = rng.pick(&PREP, &[0.64, 0.36]);
            let ability = rng.normal();
            let lunch_fx = if lunch == "standard" { 1.0 } else { -1.0 };
            let prep_fx = if prep == "completed" { 1.0 } else { -1.0 };
            let group_fx = GROUPS.iter().position(|g| *g == group).unwrap_or(2) as f64 - 2.0;
            let edu_fx = EDUCATION.iter().position(|e| *e == education).unwrap_or(2) as f64 - 2.5;
            let reading = 69.0
                + 12.0 * ability
                + 3.5 * lunch_fx
                + 3.5 * prep_fx
                + if gender == "female" { 3.5 } else { -3.5 }
                + 1.2 * edu_fx
                + 3.5 * rng.normal();
            let writing = reading - 1.0
                + 1.5 * prep_fx
                + if gender == "female" { 2.5 } else { -2.5 }
                + 4.0 * rng.normal();
            let math = 66.0
                + 13.0 * ability
                + 5.0 * lunch_fx
                + 1.0 * prep_fx
                + if gender == "male" { 4.5 } else { -4.5 }
                + 1.5 * group_fx
                + 4.0 * rng.normal();
            let (mut reading, mut writing) = (reading, writing);
            if drift > 0.0 {
                if rng.unit() < drift {
                    reading = 40.0 + 40.0 * rng.unit();
                    writing = 40.0 + 40.0 * rng.unit();
                }
                reading -= drift * 25.0;
                writing -= drift * 25.0;
            }
            Student {
                gender: gender.into(),
                race_ethnicity: group.into(),
                parental_level_of_education: education.into(),
                lunch: lunch.into(),
                test_preparation_course: prep.into(),
                reading_score: clamp_score(reading),
                writing_score: clamp_score(writing),
                math_score: clamp_score(math),
            }
        })
        .collect()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn write_csv(path: &Path, rows: &[Student]) -> Result<(), String> {
    let mut out = HEADER.join(",");
    out.push('\n');
    for s in rows {
        let fields = [
            csv_field(&s.gender),
            csv_field(&s.race_ethnicity),
            csv_field(&s.parental_level_of_education),
            csv_field(&s.lunch),
            csv_field(&s.test_preparation_course),
            format!("{}", s.math_score),
            format!("{}", s.reading_score),
            format!("{}", s.writing_score),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Splits one CSV line, with double-quoted fields.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    out.push(field);
    out
}

/// The rows of a CSV with the dataset's columns (any order; the real
/// dataset's spaced and slashed headers are accepted too), as text.
pub fn read_csv(path: &Path) -> Result<Vec<Vec<(String, String)>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_csv(lines.next().ok_or("the file is empty")?)
        .iter()
        .map(|h| h.trim().to_lowercase().replace([' ', '/'], "_"))
        .collect();
    Ok(lines
        .map(|l| header.iter().cloned().zip(split_csv(l)).collect())
        .collect())
}

/// Checks schema, types and ranges; the reasons for every problem found
/// (at most 20), or the students.
pub fn validate(rows: &[Vec<(String, String)>]) -> Result<Vec<Student>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    if let Some(first) = rows.first() {
        for col in HEADER {
            if !first.iter().any(|(k, _)| k == col) {
                problems.push(format!("missing column {col:?}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
    } else {
        return Err(vec!["no rows".into()]);
    }
    for (i, row) in rows.iter().enumerate() {
        let line = i + 2;
        let get = |k: &str| {
            row.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let mut cat = |k: &str, allowed: &[&str]| {
            let v = get(k);
            if !allowed.contains(&v.as_str()) {
                problems.push(format!("line {line}: {k}: unknown value {v:?}"));
            }
            v
        };
        let gender = cat("gender", &GENDERS);
        let group = cat("race_ethnicity", &GROUPS);
        let education = cat("parental_level_of_education", &EDUCATION);
        let lunch = cat("lunch", &LUNCH);
        let prep = cat("test_preparation_course", &PREP);
        let mut score = |k: &str| match get(k).parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => v,
            Ok(v) => {
                problems.push(format!("line {line}: {k}: {v} is outside 0–100"));
                f64::NAN
            }
            Err(_) => {
                problems.push(format!("line {line}: {k}: {:?} is not a number", get(k)));
                f64::NAN
            }
        };
        let (math, reading, writing) = (
            score("math_score"),
            score("reading_score"),
            score("writing_score"),
        );
        out.push(Student {
            gender,
            race_ethnicity: group,
            parental_level_of_education: education,
            lunch,
            test_preparation_course: prep,
            reading_score: reading,
            writing_score: writing,
            math_score: math,
        });
        if problems.len() >= 20 {
            break;
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
