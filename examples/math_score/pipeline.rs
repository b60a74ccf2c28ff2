//! The five stages, writing the original pipeline's artifacts layout:
//! `data_ingestion/` (raw, train and test CSVs), `data_validation/status.txt`,
//! `data_transformation/preprocessor.json`, `model_trainer/model.json`,
//! `model_evaluation/evaluation_report.json`.

use std::path::{Path, PathBuf};

use crate::data::{self, Rng, Student};
use crate::model::{scores, Encoder, Model};

pub struct Options {
    pub artifacts: PathBuf,
    pub rows: usize,
    pub seed: u64,
    pub drift: f64,
    pub fail_stage: Option<String>,
    pub input: Option<PathBuf>,
}

/// The stage names `--fail-stage` accepts, with their directories.
pub const STAGES: [(&str, &str); 5] = [
    ("ingestion", "data_ingestion"),
    ("validation", "data_validation"),
    ("transformation", "data_transformation"),
    ("training", "model_trainer"),
    ("evaluation", "model_evaluation"),
];

pub fn stage_name(arg: &str) -> Option<&'static str> {
    STAGES
        .iter()
        .find(|(short, dir)| *short == arg || *dir == arg)
        .map(|(short, _)| *short)
}

fn dir(base: &Path, name: &str) -> Result<PathBuf, String> {
    let d = base.join(name);
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    // Written beside and renamed, so a watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn fail_if(o: &Options, stage: &str) -> Result<(), String> {
    if o.fail_stage.as_deref() == Some(stage) {
        Err(format!("{stage} failed (--fail-stage {stage})"))
    } else {
        Ok(())
    }
}

/// Runs the stages in order; the error says which stage failed and why.
pub fn run(o: &Options) -> Result<(), String> {
    // 1. Ingestion: the raw data, split 80/20 with a seeded shuffle.
    eprintln!("[ingestion] reading the data");
    fail_if(o, "ingestion")?;
    let ingestion = dir(&o.artifacts, "data_ingestion")?;
    let raw_path = ingestion.join("raw.csv");
    match &o.input {
        Some(csv) => {
            std::fs::copy(csv, &raw_path)
                .map_err(|e| format!("cannot read {}: {e}", csv.display()))?;
        }
        None => data::write_csv(&raw_path, &data::generate(o.rows, o.seed, o.drift))?,
    }
    let rows = data::read_csv(&raw_path)?;
    // 2. Validation: schema, types, ranges.
    eprintln!("[validation] checking {} rows", rows.len());
    let validation = dir(&o.artifacts, "data_validation")?;
    let forced = fail_if(o, "validation").err();
    let students: Vec<Student> = match (data::validate(&rows), forced) {
        (Ok(s), None) => {
            write(&validation.join("status.txt"), "Validation status: True\n")?;
            s
        }
        (result, forced) => {
            let mut reasons = result.err().unwrap_or_default();
            reasons.extend(forced);
            write(
                &validation.join("status.txt"),
                &format!("Validation status: False\n{}\n", reasons.join("\n")),
            )?;
            return Err(format!("validation failed: {}", reasons.join("; ")));
        }
    };
    let mut shuffled = students.clone();
    let mut rng = Rng::new(o.seed.wrapping_add(1));
    for i in (1..shuffled.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        shuffled.swap(i, j);
    }
    let cut = shuffled.len() * 4 / 5;
    let (train, test) = shuffled.split_at(cut);
    data::write_csv(&ingestion.join("train.csv"), train)?;
    data::write_csv(&ingestion.join("test.csv"), test)?;
    // 3. Transformation: one-hot categories, standardised scores.
    eprintln!("[transformation] encoding {} features", 2);
    fail_if(o, "transformation")?;
    let encoder = Encoder::fit(train);
    let transformation = dir(&o.artifacts, "data_transformation")?;
    write(
        &transformation.join("preprocessor.json"),
        &serde_json::to_string_pretty(&encoder).map_err(|e| e.to_string())?,
    )?;
    // 4. Training.
    eprintln!(
        "[training] ElasticNet(alpha=0.001, l1_ratio=0.5) on {} rows",
        train.len()
    );
    fail_if(o, "training")?;
    let model = Model::train(train, encoder)?;
    let trainer = dir(&o.artifacts, "model_trainer")?;
    let model_path = trainer.join("model.json");
    write(
        &model_path,
        &serde_json::to_string_pretty(&model).map_err(|e| e.to_string())?,
    )?;
    // 5. Evaluation.
    fail_if(o, "evaluation")?;
    let eval = |rows: &[Student]| {
        let truth: Vec<f64> = rows.iter().map(|s| s.math_score).collect();
        let pred: Vec<f64> = rows.iter().map(|s| model.predict(s)).collect();
        scores(&truth, &pred)
    };
    let (train_r2, train_rmse, train_mae) = eval(train);
    let (test_r2, test_rmse, test_mae) = eval(test);
    eprintln!("[evaluation] test R² {test_r2:.3}, RMSE {test_rmse:.2}, MAE {test_mae:.2}");
    let report = serde_json::json!({
        "train_rmse": train_rmse,
        "test_rmse": test_rmse,
        "train_mae": train_mae,
        "test_mae": test_mae,
        "train_r2": train_r2,
        "test_r2": test_r2,
        "target_column": "math_score",
        "model_path": model_path.display().to_string(),
    });
    let evaluation = dir(&o.artifacts, "model_evaluation")?;
    write(
        &evaluation.join("evaluation_report.json"),
        &serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )?;
    Ok(())
}
