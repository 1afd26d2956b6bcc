//! A pipeline file: `${...}` substitution, TOML, the sections and their
//! checks, and the rendering of every diagnostic (file, line, column). Any
//! text must give a pipeline or diagnostics, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // a few variables are set, so substitution has values to put in
    let env = |name: &str| match name {
        "BROKERS" => Some("127.0.0.1:9092".to_string()),
        "EMPTY" => Some(String::new()),
        "MULTI" => Some("a\nb = \"c\"".to_string()),
        _ => None,
    };
    if let Err(diagnostics) = weir_config::parse_str(text, Path::new("fuzz.toml"), &env) {
        let _ = diagnostics.to_string();
    }
});
