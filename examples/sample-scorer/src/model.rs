//! The seed's model-1: a linear regression whose coefficients come from the single `*.json`
//! file under `AZUREML_MODEL_DIR` (`{"coef": [...], "intercept": x}`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    coef: Vec<f64>,
    intercept: f64,
}

/// The body `POST /score` takes: one row of features per prediction.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    data: Vec<Vec<f64>>,
}

impl Model {
    /// Finds the one model file under `dir` (searched recursively, so both a mounted file and a
    /// mounted folder work) and reads it.
    pub fn load(dir: &Path) -> Result<(Model, PathBuf), String> {
        let mut found = Vec::new();
        find_json(dir, &mut found)
            .map_err(|e| format!("cannot read model directory {}: {e}", dir.display()))?;
        let path = match found.len() {
            0 => return Err(format!("no *.json model file under {}", dir.display())),
            1 => found.remove(0),
            n => {
                found.sort();
                let names: Vec<_> = found.iter().map(|p| p.display().to_string()).collect();
                return Err(format!(
                    "{n} *.json files under {}, expected exactly one: {}",
                    dir.display(),
                    names.join(", ")
                ));
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read model file {}: {e}", path.display()))?;
        let model: Model = serde_json::from_str(&text).map_err(|e| {
            format!("model file {}: {e} (expected {{\"coef\": [...], \"intercept\": x}})", path.display())
        })?;
        if model.coef.is_empty() {
            return Err(format!("model file {}: `coef` is empty", path.display()));
        }
        Ok((model, path))
    }

    pub fn features(&self) -> usize {
        self.coef.len()
    }

    /// Predictions for a request body, or a message saying what is wrong with it.
    pub fn score(&self, body: &[u8]) -> Result<Vec<f64>, String> {
        let request: ScoreRequest = serde_json::from_slice(body)
            .map_err(|e| format!("invalid request body: {e}; expected {{\"data\": [[number, ...], ...]}}"))?;
        request
            .data
            .iter()
            .enumerate()
            .map(|(i, row)| {
                if row.len() != self.coef.len() {
                    return Err(format!(
                        "data[{i}] has {} features, the model expects {}",
                        row.len(),
                        self.coef.len()
                    ));
                }
                let dot: f64 = row.iter().zip(&self.coef).map(|(x, c)| x * c).sum();
                Ok(dot + self.intercept)
            })
            .collect()
    }
}

fn find_json(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            find_json(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            found.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL_1: &str = include_str!("../../model-1/model/model-1.json");
    const SAMPLE: &[u8] = include_bytes!("../../model-1/sample-request.json");

    fn model_1() -> Model {
        serde_json::from_str(MODEL_1).expect("model-1.json parses")
    }

    #[test]
    fn sample_request_gives_the_documented_predictions() {
        let got = model_1().score(SAMPLE).expect("scores");
        let want = [11055.977245525679, 4503.079536107787];
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            assert!(((g - w) / w).abs() < 1e-9, "{g} vs {w}");
        }
    }

    #[test]
    fn wrong_row_length_names_the_row() {
        let err = model_1().score(br#"{"data": [[1,2,3]]}"#).unwrap_err();
        assert!(err.contains("data[0] has 3 features"), "{err}");
    }

    #[test]
    fn body_that_is_not_the_contract_is_refused() {
        for body in [&b"nope"[..], br#"{"rows": []}"#, br#"{"data": [["a"]]}"#] {
            let err = model_1().score(body).unwrap_err();
            assert!(err.contains("invalid request body"), "{err}");
        }
    }

    #[test]
    fn load_requires_exactly_one_json_file() {
        let dir = std::env::temp_dir().join(format!("scorer-model-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nested")).expect("mkdir");
        assert!(Model::load(&dir).unwrap_err().contains("no *.json"));
        std::fs::write(dir.join("nested/a.json"), MODEL_1).expect("write");
        let (m, _) = Model::load(&dir).expect("loads from a nested folder");
        assert_eq!(m.features(), 10);
        std::fs::write(dir.join("b.json"), MODEL_1).expect("write");
        assert!(Model::load(&dir).unwrap_err().contains("expected exactly one"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
