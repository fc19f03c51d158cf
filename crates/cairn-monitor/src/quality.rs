//! Live model quality from ground truth: true labels that arrive after the predictions
//! (`POST /feedback`), paired with what the model answered.
//!
//! - Classification (labels and predictions that are classes: strings, booleans, integers):
//!   accuracy, and precision and recall of the positive class (`1`, `true` or `"1"`).
//! - Regression (numbers that are not all integers): MAE and RMSE.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Predictions with a true label.
    pub labelled: usize,
    /// `classification` or `regression`.
    pub task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

impl Quality {
    /// One metric by name (`accuracy`, `precision`, `recall`, `mae`, `rmse`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => self.accuracy,
            "precision" => self.precision,
            "recall" => self.recall,
            "mae" => self.mae,
            "rmse" => self.rmse,
            _ => None,
        }
    }
}

/// The predicted value a label is compared with, from a logged `outputs` JSON
/// (`{output: [rows]}`): the output whose name contains `label`, else the first; its first
/// row, unwrapped to a scalar.
pub fn predicted(outputs: &str) -> Option<Value> {
    let outputs: Value = serde_json::from_str(outputs).ok()?;
    let map = outputs.as_object()?;
    let (_, rows) = map.iter().find(|(k, _)| k.contains("label")).or_else(|| map.iter().next())?;
    let mut first = rows.as_array()?.first()?.clone();
    while let Value::Array(items) = first {
        first = items.first()?.clone();
    }
    Some(first)
}

/// Whether a prediction equals a label: as numbers when both are, else as text (`"1"` = `1`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => text(a) == text(b),
    }
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// Quality of `(predicted, label)` pairs; `None` when there are none.
pub fn quality(pairs: &[(Value, Value)]) -> Option<Quality> {
    if pairs.is_empty() {
        return None;
    }
    let numeric = pairs.iter().all(|(p, l)| p.is_number() && l.is_number());
    let integral =
        pairs.iter().all(|(p, l)| [p, l].iter().all(|v| v.as_f64().is_some_and(|x| x.fract() == 0.0)));
    let mut out = Quality {
        labelled: pairs.len(),
        task: "classification".into(),
        accuracy: None,
        precision: None,
        recall: None,
        mae: None,
        rmse: None,
    };
    if numeric && !integral {
        let errors: Vec<f64> = pairs.iter().filter_map(|(p, l)| Some(p.as_f64()? - l.as_f64()?)).collect();
        let n = errors.len() as f64;
        out.task = "regression".into();
        out.mae = Some(errors.iter().map(|e| e.abs()).sum::<f64>() / n);
        out.rmse = Some((errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt());
        return Some(out);
    }
    let correct = pairs.iter().filter(|(p, l)| same(p, l)).count();
    let positive =
        |v: &Value| v.as_f64() == Some(1.0) || v.as_bool() == Some(true) || v.as_str() == Some("1");
    let tp = pairs.iter().filter(|(p, l)| positive(p) && positive(l)).count() as f64;
    let predicted_positive = pairs.iter().filter(|(p, _)| positive(p)).count() as f64;
    let actual_positive = pairs.iter().filter(|(_, l)| positive(l)).count() as f64;
    out.accuracy = Some(correct as f64 / pairs.len() as f64);
    out.precision = (predicted_positive > 0.0).then(|| tp / predicted_positive);
    out.recall = (actual_positive > 0.0).then(|| tp / actual_positive);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classification_counts_the_positive_class() {
        // predicted, label: TP, FP, FN, TN, TP
        let pairs: Vec<(Value, Value)> =
            [(1, 1), (1, 0), (0, 1), (0, 0), (1, 1)].iter().map(|&(p, l)| (json!(p), json!(l))).collect();
        let q = quality(&pairs).unwrap();
        assert_eq!(q.task, "classification");
        assert_eq!(q.accuracy, Some(0.6));
        assert!((q.precision.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((q.recall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Labels sent as strings compare with integer predictions.
        assert_eq!(quality(&[(json!(1), json!("1"))]).unwrap().accuracy, Some(1.0));
    }

    #[test]
    fn regression_gives_mae_and_rmse() {
        let pairs = vec![(json!(1.5), json!(1.0)), (json!(2.0), json!(3.5))];
        let q = quality(&pairs).unwrap();
        assert_eq!(q.task, "regression");
        assert!((q.mae.unwrap() - 1.0).abs() < 1e-12);
        assert!((q.rmse.unwrap() - ((0.25 + 2.25) / 2.0f64).sqrt()).abs() < 1e-12);
        assert!(quality(&[]).is_none());
    }

    #[test]
    fn the_label_output_is_compared() {
        assert_eq!(
            predicted(r#"{"output_label":[1],"output_probability":[{"0":0.2,"1":0.8}]}"#),
            Some(json!(1))
        );
        assert_eq!(predicted(r#"{"variable":[[2.5]]}"#), Some(json!(2.5)));
        assert_eq!(predicted("not json"), None);
    }
}
