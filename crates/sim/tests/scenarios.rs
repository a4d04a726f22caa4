//! Every scenario file under `scenarios/` loads, and a shortened run of each
//! completes with traffic reaching its backends.

use std::path::PathBuf;

use fulcrum_balance::{Algorithm, MILLISECOND};
use fulcrum_sim::{run, Scenario};

fn scenario_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/ at the repository root")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn scenario_files_all_load_with_documented_headers() {
    let files = scenario_files();
    assert!(
        files.len() >= 8,
        "expected the S1–S7 scenario set, found {files:?}"
    );
    for file in files {
        let s = Scenario::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
        let stem = file.file_stem().unwrap().to_string_lossy();
        assert_eq!(
            s.name,
            stem,
            "{}: `name` should match the file name",
            file.display()
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# S"),
            "{}: start with a comment naming the scenario",
            stem
        );
        assert!(
            text.contains("# Target"),
            "{}: document the target result",
            stem
        );
    }
}

#[test]
fn scenario_files_all_run_when_shortened() {
    for file in scenario_files() {
        let mut s = Scenario::from_file(&file).unwrap();
        // A short slice of each: enough to exercise every event kind it uses.
        s.duration = s.duration.min(300 * MILLISECOND);
        s.warmup = 0;
        let m = run(&s, Algorithm::RoundRobin, 0);
        assert!(m.requests > 0, "{}: no requests", s.name);
        let sent: f64 = m.backend_share.0.iter().map(|(_, x)| x).sum();
        assert!(
            sent > 0.99 || m.error_rate > 0.0,
            "{}: shares {sent}",
            s.name
        );
    }
}
