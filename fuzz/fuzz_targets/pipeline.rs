//! `cairn.yaml` comes from Git. Parsing never panics, and no accepted stage has an output
//! that is absolute, leaves the repository or is one of Git's or Cairn's own paths.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let params = serde_json::json!({"train": {"lr": 0.1, "items": [1, 2]}});
    let Ok(pipeline) = cairn_pipeline::spec::parse(text, std::path::Path::new("cairn.yaml"), &params) else {
        return;
    };
    for stage in &pipeline.stages {
        for out in &stage.outs {
            assert!(!out.path.starts_with('/'), "{}", out.path);
            assert!(out.path.split('/').all(|p| p != ".." && p != "."), "{}", out.path);
            assert!(cairn_pipeline::spec::check_output_path(&out.path).is_ok(), "{}", out.path);
        }
    }
});
