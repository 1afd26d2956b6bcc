//! The `wasm` step end to end through `weir run`, with real components
//! built from `wasm/guests` for wasm32-wasip2: the same output as the
//! native step, a filter, and a guest that panics, loops or grows past its
//! memory cap on some events — those events are dead-lettered with the
//! reason and every other event is delivered; modules that are corrupt or
//! implement another interface are refused at load with a clear error.

mod common;

use std::path::Path;

use common::wasm::guest;
use common::{read_envelopes, read_lines, run_in, show, write};

/// Runs `file in.jsonl → STEPS → out.jsonl` (dead letters to dlq.jsonl) in `dir`.
fn run_pipeline(dir: &Path, input: &str, steps: &str, batch: usize) -> std::process::Output {
    common::run_file_pipeline(dir, input, steps, batch, "")
}

/// What the native `json-add-field` step (field `env` = `"prod"`) makes of `input`, sorted.
fn native_json_add_field(input: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = run_pipeline(
        dir.path(),
        input,
        "[[steps]]\ntype = \"json-add-field\"\nfield = \"env\"\nvalue = \"prod\"\n",
        64,
    );
    assert!(out.status.success(), "{}", show(&out));
    sorted(read_lines(&dir.path().join("out.jsonl")))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn json_add_field_in_wasm_writes_what_the_native_step_writes() {
    let module = guest("json-add-field");
    let input: String = (0..3000)
        .map(|i| format!("{{\"n\":{i},\"name\":\"u\\\"{i}\",\"env\":\"dev\",\"tags\":[1, 2]}}\n"))
        .chain(std::iter::once("{}\n".to_string()))
        .collect();
    let wasm_dir = tempfile::tempdir().unwrap();
    let out = run_pipeline(
        wasm_dir.path(),
        &input,
        &format!(
            r#"
[[steps]]
type = "wasm"
name = "add"
module = "{}"
config = {{ field = "env", value = "prod" }}
"#,
            module.display()
        ),
        64,
    );
    assert!(out.status.success(), "{}", show(&out));
    let from_wasm = read_lines(&wasm_dir.path().join("out.jsonl"));
    assert_eq!(from_wasm.len(), 3001);
    assert!(
        from_wasm.contains(&"{\"env\":\"prod\"}".to_string()),
        "an empty object gets the field"
    );
    assert_eq!(sorted(from_wasm), native_json_add_field(&input));
    // the compiled module was cached by hash, beside the kept version
    let cache: Vec<String> = std::fs::read_dir(wasm_dir.path().join(".weir/wasm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cache.iter().any(|f| f.ends_with(".plain.cwasm")),
        "{cache:?}"
    );
    assert!(
        cache
            .iter()
            .any(|f| f.len() == 64 + 5 && f.ends_with(".wasm")),
        "{cache:?}"
    );
}

#[test]
fn a_filter_keeps_matching_events_and_dead_letters_what_is_not_json() {
    let module = guest("filter");
    let mut input = String::new();
    for i in 0..1000 {
        if i == 500 {
            input.push_str("not json\n");
        }
        input.push_str(&format!(
            "{{\"n\":{i},\"kind\":\"{}\"}}\n",
            if i % 4 == 0 { "a" } else { "b" }
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        "[[steps]]\ntype = \"wasm\"\nname = \"only-a\"\nmodule = \"{}\"\nconfig = {{ field = \"kind\", equals = \"a\" }}\n",
        module.display()
    );
    let out = run_pipeline(dir.path(), &input, &steps, 100);
    assert!(out.status.success(), "{}", show(&out));
    let kept = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(kept.len(), 250);
    assert!(kept.iter().all(|l| l.contains("\"kind\":\"a\"")));
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["value"], "not json");
    assert_eq!(dead[0]["headers"]["weir.stage"], "only-a");
    assert!(
        dead[0]["headers"]["weir.error"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{dead:?}"
    );
}

/// A batch with a panicking, a looping and a memory-hungry event: each is
/// dead-lettered with its own reason, all the others are delivered, and
/// the run (shard, lanes) carries on.
#[test]
fn a_guest_that_traps_loops_or_grows_harms_only_its_events() {
    let module = guest("testkit");
    let mut input = String::new();
    for i in 0..600 {
        let v = match i {
            100 => "\"please panic\"".to_string(),
            250 => "\"spin forever\"".to_string(),
            400 => "\"hog memory\"".to_string(),
            _ => format!("{i}"),
        };
        input.push_str(&v);
        input.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        r#"
[[steps]]
type = "wasm"
name = "kit"
module = "{}"
config = {{ tag = "v1" }}
deadline = "200ms"
max_memory = "16MiB"
"#,
        module.display()
    );
    let out = run_pipeline(dir.path(), &input, &steps, 50);
    assert!(out.status.success(), "{}", show(&out));
    let delivered = read_lines(&dir.path().join("out.jsonl"));
    assert_eq!(delivered.len(), 597, "every other event is delivered");
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    let reason = |needle: &str| -> String {
        let d = dead
            .iter()
            .find(|d| d["value"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no dead letter for {needle}: {dead:#?}"));
        d["headers"]["weir.error"].as_str().unwrap().to_string()
    };
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let panic = reason("panic");
    assert!(panic.contains("testkit was told to panic"), "{panic}");
    let spin = reason("spin");
    assert!(spin.contains("deadline of 200ms exceeded"), "{spin}");
    let hog = reason("hog");
    assert!(
        hog.contains("memory cap of 16777216 bytes exceeded"),
        "{hog}"
    );
    assert!(dead.iter().all(|d| d["headers"]["weir.stage"] == "kit"));
}

#[test]
fn fuel_bounds_a_call_when_configured() {
    let module = guest("testkit");
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        "[[steps]]\ntype = \"wasm\"\nname = \"kit\"\nmodule = \"{}\"\nfuel = 5000000\ndeadline = \"10s\"\n",
        module.display()
    );
    let out = run_pipeline(dir.path(), "1\n\"spin\"\n2\n", &steps, 10);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read_lines(&dir.path().join("out.jsonl")).len(), 2);
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 1);
    let why = dead[0]["headers"]["weir.error"].as_str().unwrap();
    assert!(why.contains("fuel of 5000000 exhausted"), "{why}");
}

#[test]
fn corrupt_and_wrong_interface_modules_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(guest("filter")).unwrap();
    std::fs::write(dir.path().join("corrupt.wasm"), &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("text.wasm"), b"hello").unwrap();
    let cases = [
        (
            "corrupt.wasm".to_string(),
            "is not a WebAssembly component weir can run",
        ),
        (
            "core.wasm".to_string(),
            "core module, not a component: build with `--target wasm32-wasip2`",
        ),
        (
            "text.wasm".to_string(),
            "does not start with the WebAssembly magic bytes",
        ),
        (
            guest("wrong-interface").display().to_string(),
            "does not implement weir:function/function@0.1.0",
        ),
        ("missing.wasm".to_string(), "cannot read `missing.wasm`"),
    ];
    for (module, expected) in cases {
        let pipeline = write(
            dir.path(),
            "p.toml",
            &format!(
                "[pipeline]\nname = \"bad\"\n[sources.in]\ntype = \"generator\"\ncount = 1\n\n[[steps]]\ntype = \"wasm\"\nmodule = \"{module}\"\n[sinks.out]\ntype = \"blackhole\"\n"
            ),
        );
        let out = run_in(dir.path(), &["validate", pipeline.to_str().unwrap()]);
        assert!(!out.status.success(), "{module} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{module}: {stderr}");
        // the error names the file, line and column of the `module` key
        assert!(stderr.contains("p.toml:9:"), "{module}: {stderr}");
    }
}

#[test]
fn an_init_that_refuses_stops_the_pipeline_at_start_with_the_reason() {
    let module = guest("testkit");
    let dir = tempfile::tempdir().unwrap();
    let steps = format!(
        "[[steps]]\ntype = \"wasm\"\nname = \"kit\"\nmodule = \"{}\"\nconfig = {{ refuse = \"no database configured\" }}\n",
        module.display()
    );
    let out = run_pipeline(dir.path(), "1\n", &steps, 10);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("init refused: no database configured"),
        "{stderr}"
    );
}

#[test]
fn weir_test_runs_a_wasm_step_offline() {
    let module = guest("json-add-field");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        &format!(
            "[pipeline]\nname = \"t\"\n[sources.in]\ntype = \"stdin\"\n[[steps]]\ntype = \"wasm\"\nname = \"add\"\nmodule = \"{}\"\nconfig = {{ field = \"env\", value = \"prod\" }}\n[sinks.out]\ntype = \"stdout\"\n",
            module.display()
        ),
    );
    let input = write(dir.path(), "in.jsonl", "{\"a\":1}\n[1,2]\n");
    let out = run_in(
        dir.path(),
        &[
            "test",
            pipeline.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--allow-failures",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("out {\"a\":1,\"env\":\"prod\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fail line 2 step add: not a JSON object"),
        "{stdout}"
    );
}

/// The Python example (componentize-py bundles CPython into the
/// component) writes what the native step writes.
#[test]
fn a_python_function_writes_what_the_native_step_writes() {
    let module = guest("python-json-add-field");
    let input: String = (0..500)
        .map(|i| format!("{{\"n\":{i},\"env\":\"dev\",\"tags\":[1,2]}}\n"))
        .chain(std::iter::once("[1]\n".to_string()))
        .collect();
    let py_dir = tempfile::tempdir().unwrap();
    let out = run_pipeline(
        py_dir.path(),
        &input,
        &format!(
            "[[steps]]\ntype = \"wasm\"\nname = \"py\"\nmodule = \"{}\"\nconfig = {{ field = \"env\", value = \"prod\" }}\nmax_memory = \"256MiB\"\ndeadline = \"10s\"\n",
            module.display()
        ),
        64,
    );
    assert!(out.status.success(), "{}", show(&out));
    let from_python = read_lines(&py_dir.path().join("out.jsonl"));
    assert_eq!(from_python.len(), 500);
    assert_eq!(sorted(from_python), native_json_add_field(&input));
    let dead = read_envelopes(&py_dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["headers"]["weir.error"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));
}
