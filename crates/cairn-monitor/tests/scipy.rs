#![allow(clippy::unwrap_used)]
//! The drift statistics against scipy's on the same data.
//!
//! Needs a Python with scipy: `CAIRN_TEST_STATS_PYTHON`, else `target/test-tools/stats-venv`
//! (installed here on first use; `.ci/run` does it ahead of time).

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_monitor::stats;
use serde_json::{Value, json};

const SCIPY: &str = "scipy==1.17.1";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_TEST_STATS_PYTHON") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("install.lock")).unwrap();
    lock.lock().unwrap();
    let venv = dir.join("stats-venv");
    if std::fs::read_to_string(venv.join(".installed")).ok().as_deref() != Some(SCIPY) {
        assert!(Command::new("python3").arg("-m").arg("venv").arg(&venv).status().unwrap().success());
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", SCIPY])
            .status()
            .unwrap();
        assert!(pip.success(), "pip install {SCIPY}");
        std::fs::write(venv.join(".installed"), SCIPY).unwrap();
    }
    venv.join("bin/python")
}

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from scipy.stats import ks_2samp, kstwobign, chisquare, wasserstein_distance
from scipy.spatial.distance import jensenshannon
data = json.load(open(sys.argv[1]))
a, b = np.array(data["a"]), np.array(data["b"])
d = ks_2samp(a, b).statistic
en = np.sqrt(len(a) * len(b) / (len(a) + len(b)))
ref, cur = np.array(data["ref"], dtype=float), np.array(data["cur"], dtype=float)
chi = chisquare(cur, ref * cur.sum() / ref.sum())
print(json.dumps({
    "ks": d, "ks_p": kstwobign.sf(en * d),
    "wasserstein": wasserstein_distance(a, b), "normed": wasserstein_distance(a, b) / np.std(a),
    "chi": chi.statistic, "chi_p": chi.pvalue,
    "js": jensenshannon(ref / ref.sum(), cur / cur.sum()),
}))
"#;

/// A deterministic normal-ish sample (sum of uniforms), shifted by `shift`.
fn sample(n: usize, seed: u64, shift: f64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| (0..6).map(|_| rng.f64()).sum::<f64>() - 3.0 + shift).collect()
}

#[test]
fn statistics_match_scipy() {
    let dir = tempfile::tempdir().unwrap();
    for (n, m, shift, seed) in
        [(300, 500, 0.0, 1), (800, 2000, 0.15, 2), (1000, 400, 0.6, 3), (50, 70, 0.05, 4)]
    {
        let (a, b) = (sample(n, seed, 0.0), sample(m, seed + 100, shift));
        let reference = [120.0, 80.0, 40.0, 10.0];
        let current = [100.0 + 40.0 * shift, 90.0, 35.0, 12.0 + 20.0 * shift];
        let path = dir.path().join("data.json");
        std::fs::write(&path, json!({"a": a, "b": b, "ref": reference, "cur": current}).to_string()).unwrap();
        let script = dir.path().join("s.py");
        std::fs::write(&script, SCRIPT).unwrap();
        let out = Command::new(python()).arg(&script).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let f = |k: &str| want[k].as_f64().unwrap();
        let (sa, sb) = (stats::sorted(&a), stats::sorted(&b));
        let (d, p) = stats::ks_2samp(&sa, &sb);
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() <= 1e-9 + 1e-7 * want.abs(),
                "{what} (n={n}, shift={shift}): {got} vs scipy {want}"
            );
        };
        close(d, f("ks"), "K-S statistic");
        close(p, f("ks_p"), "K-S p-value");
        close(stats::wasserstein(&sa, &sb), f("wasserstein"), "Wasserstein");
        close(stats::wasserstein(&sa, &sb) / stats::std_dev(&a), f("normed"), "normed Wasserstein");
        let (chi, chi_p) = stats::chi_squared(&reference, &current);
        close(chi, f("chi"), "chi-squared");
        close(chi_p, f("chi_p"), "chi-squared p-value");
        close(stats::jensen_shannon(&reference, &current), f("js"), "Jensen-Shannon");
    }
}
