//! No input makes the loader panic: every fixture is truncated and mutated
//! at every position and parsed again; valid results have their options
//! and locations read too.

use std::collections::BTreeMap;
use std::path::Path;

use weir_config::{parse_str, ComponentConfig};

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("v\"}${".to_string()),
        _ => None,
    }
}

fn exercise(text: &str) {
    match parse_str(text, Path::new("m.toml"), &env) {
        Ok(config) => {
            let all = config
                .sources
                .iter()
                .chain(&config.steps)
                .chain(&config.sinks);
            for component in all {
                touch(component);
            }
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty());
            for diagnostic in &diagnostics {
                let location = diagnostic
                    .location
                    .as_ref()
                    .expect("parse errors have a location");
                assert!(location.line >= 1 && location.column >= 1);
                assert!(
                    location.line <= text.lines().count() + 1,
                    "{diagnostic} in {text:?}"
                );
            }
        }
    }
}

fn touch(component: &ComponentConfig) {
    let _ = component.options::<BTreeMap<String, toml::Value>>();
    let _ = component.options::<BTreeMap<String, u8>>();
    let _ = component.location();
    let _ = component.type_location();
    let _ = component.option_error("x", "m");
}

#[test]
fn mutated_fixtures_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &i in &boundaries {
            exercise(&text[..i]);
            for insert in [
                "\"", "'", "[", "]", "${", "$${", "${SET}", "{", "}", "=", "\n", "é", "#", "\\",
                "[[", "0",
            ] {
                let mut mutated = text.clone();
                mutated.insert_str(i, insert);
                exercise(&mutated);
                count += 1;
            }
            if let Some(&next) = boundaries.iter().find(|&&j| j > i) {
                let mut deleted = text.clone();
                deleted.replace_range(i..next, "");
                exercise(&deleted);
            }
        }
    }
    assert!(count > 1000);
}

#[test]
fn odd_inputs() {
    for text in [
        "", "\n", "\r\n", "\u{feff}", "${", "$", "$$", "${}", "${A", "${A:-", "${A:-}}", "[", "[[", "a=1\r\nb=",
        "[sources.a]\ntype='x'\n[sinks.b]\ntype='y'\n[[steps]]\n[[steps]]\ntype=1",
        "[sources.a]\ntype=\"x\"\nbatch=1\n[sinks.b]\ntype=\"y\"\nbatch={max_wait=\"99999999999999999999999h\"}",
    ] {
        exercise(text);
    }
}
