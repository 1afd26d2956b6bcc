//! `load` reads a real file (in a temporary directory) and the process
//! environment.

use std::io::Write;

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.toml");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(b"[sources.gen]\ntype = \"generator\"\n\n[sinks.out]\ntype = \"${WEIR_CONFIG_TEST_SURELY_UNSET:-stdout}\"\n")
        .expect("write");
    let config = weir_config::load(&path).expect("valid");
    assert_eq!(config.path, path);
    assert_eq!(config.sinks[0].kind, "stdout");
}

#[test]
fn load_reports_errors_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sources.gen]\ntype = \"generator\"\n\n[sinks.out]\ntype = \"${WEIR_CONFIG_TEST_SURELY_UNSET}\"\n")
        .expect("write");
    let err = weir_config::load(&path).expect_err("unset variable");
    assert_eq!(err.len(), 1);
    assert_eq!(
        err.to_string(),
        format!(
            "error: {}:5:9: environment variable `WEIR_CONFIG_TEST_SURELY_UNSET` is not set, expected it to be set or a default like `${{WEIR_CONFIG_TEST_SURELY_UNSET:-value}}`",
            path.display()
        )
    );
}

#[test]
fn load_reports_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let err = weir_config::load(&path).expect_err("missing");
    assert_eq!(err.len(), 1);
    assert!(err.0[0].location.is_none());
    assert!(
        err.to_string().starts_with(&format!(
            "error: cannot read config file `{}`: ",
            path.display()
        )),
        "{err}"
    );
}
