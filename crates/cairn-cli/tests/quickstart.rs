//! The README's main command, end to end: `examples/quickstart/run.sh` with this build's
//! `cairn`. It versions data, runs pipelines and experiments, then the whole model loop —
//! train, sweep, register, approve, serve, drift, alert (on a webhook too), export, retrain,
//! canary, promote or roll back, trace. Its Python environment (scikit-learn, skl2onnx,
//! onnxruntime) is made under target/quickstart-venv on first use, from PyPI.
//!
//! It is a test binary of its own, not a module of `tests/it/`: its drift alert depends on
//! when the rules are evaluated during the traffic it sends, so it runs with the machine to
//! itself rather than beside another test.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_quickstart_closes_the_loop() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let home = tempfile::tempdir().unwrap();
    let output = Command::new("bash")
        .arg(root.join("examples/quickstart/run.sh"))
        .env("CAIRN_BIN", env!("CARGO_BIN_EXE_cairn"))
        .env("HOME", home.path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("CAIRN_ONNXRUNTIME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the quickstart failed:\n{stdout}\n{stderr}");
    // Progress (which stages ran) is on stderr, data on stdout: read both.
    let all = format!("{stdout}\n{stderr}");
    for expected in [
        "the teammate has the same data",
        // A drift alert opened, was delivered to the webhook, and names the drifted features.
        "rule `inputs drifted`",
        "webhook received: ALERT churn@1: drift_share",
        "features: age, plan",
        "DRIFTED (at least half of the features)",
        // Production data went back into training and the model stage reran on it.
        "1200 labelled to",
        "churn: running (new dep `data/production.csv`",
        "registered churn@2",
        "churn@production: version 1 50%, canary 2 50%",
        // The retrained version's prediction traces back to the production data.
        "model     churn@2",
        "data      data/production.csv blake3:",
        "quickstart finished",
    ] {
        assert!(all.contains(expected), "the quickstart did not print {expected:?}:\n{all}");
    }
    // Promote or roll back, by live accuracy: either way production ends on a known version.
    assert!(
        stdout.contains("churn@production: 1 → 2")
            || stdout.contains("rolled back (version 1 keeps production)"),
        "{stdout}"
    );
    assert!(!all.contains("warning:"), "no warnings:\n{all}");
}
