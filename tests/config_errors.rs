//! Broken pipeline files each give their own clear message with file, line
//! and column: `weir validate` over the fixtures in tests/fixtures/pipelines,
//! compared with the `.expected` file beside each. And every example passes.

mod common;

use std::path::Path;

#[test]
fn each_broken_pipeline_gives_its_expected_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected_path = path.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        let out = common::run_in(&dir, &["validate", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if std::env::var_os("WEIR_BLESS").is_some() {
            // rewrite the expectations from the current output; review the diff
            std::fs::write(&expected_path, stderr.as_bytes()).unwrap();
            continue;
        }
        assert!(
            !out.status.success(),
            "{name} should be rejected\n{}",
            common::show(&out)
        );
        assert_eq!(
            stderr.trim_end(),
            expected.trim_end(),
            "diagnostics of {name}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} fixtures found");
}

#[test]
fn every_example_validates() {
    // examples/wasm.toml runs a guest that scripts/build-guests.sh builds
    common::wasm::guest("json-add-field");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let out = common::run_in(root, &["validate", &rel]);
        assert!(
            out.status.success(),
            "{rel} does not validate\n{}",
            common::show(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("ok: "),
            "{}",
            common::show(&out)
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn the_complete_example_in_the_configuration_reference_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let section = doc
        .split("## A complete example")
        .nth(1)
        .expect("section exists");
    let example = section
        .split("```toml")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml block");
    let dir = tempfile::tempdir().unwrap();
    common::write(dir.path(), "example.toml", example);
    let out = common::run_in(dir.path(), &["validate", "example.toml"]);
    assert!(out.status.success(), "{}", common::show(&out));
}
