//! jq programs, compiled once and run on many values: the engine of the
//! `jq`, `route` and `key-by` steps, and the CLI's single-threaded jq
//! baseline in `weir bench`.
//!
//! Programs are jaq (a Rust implementation of jq) with its standard
//! library. A [`JqProgram`] holds reference-counted values, so it is neither
//! `Send` nor `Sync`: compile it on the thread that runs it (a step
//! compiles once in its builder to report errors, then once per instance).
//!
//! ```
//! use weir_functions::jq::{compile, parse_json, write_json};
//!
//! let program = compile("select(.amount > 100) | .flag = true").unwrap();
//! let input = parse_json(br#"{"amount": 150}"#).unwrap();
//! let mut out = bytes::BytesMut::new();
//! for value in program.run(input) {
//!     write_json(&value.unwrap(), &mut out);
//! }
//! assert_eq!(&out[..], br#"{"amount":150,"flag":true}"#);
//! ```

mod errors;
mod json;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Native, RcIter};

pub use jaq_json::Val;
pub use json::{parse_json, write_json};

pub use crate::scan::MAX_DEPTH;

/// The (empty) stream of extra inputs a program sees through `input`.
type NoInputs = RcIter<std::iter::Empty<Result<Val, String>>>;

/// A compiled jq program.
pub struct JqProgram {
    /// The compiled filter.
    filter: jaq_core::Filter<Native<Val>>,
    /// `input` and `inputs` yield nothing.
    inputs: NoInputs,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqProgram").finish_non_exhaustive()
    }
}

/// Compiles a jq program with jaq's standard library (`map`, `select`,
/// `test`, `tostring`, …). Errors are readable and say where, e.g.
/// ``expected term but found `)` at column 9`` or
/// ``undefined filter `foo/0` ``; several errors are joined with `; `.
pub fn compile(expr: &str) -> Result<JqProgram, String> {
    let loader = Loader::new(jaq_std::defs().chain(jaq_json::defs()));
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: expr,
                path: (),
            },
        )
        .map_err(|errors| errors::load(expr, errors))?;
    let filter = Compiler::default()
        .with_funs(jaq_std::funs().chain(jaq_json::funs()))
        .compile(modules)
        .map_err(|errors| errors::compile(expr, errors))?;
    Ok(JqProgram {
        filter,
        inputs: RcIter::new(std::iter::empty()),
    })
}

impl JqProgram {
    /// Runs the program on `input`, yielding its outputs lazily. An error
    /// (from `error(…)`, a type error, …) is an `Err` with jq's message
    /// (a string raised with `error` is given as is) and, as in jq, ends
    /// the stream.
    pub fn run(&self, input: Val) -> impl Iterator<Item = Result<Val, String>> + '_ {
        let mut outputs = self.filter.run((Ctx::new([], &self.inputs), input));
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match outputs.next()? {
                Ok(val) => Some(Ok(val)),
                Err(error) => {
                    failed = true;
                    Some(Err(error_message(error)))
                }
            }
        })
    }

    /// Whether the program yields a truthy value (neither `false` nor
    /// `null`) for `input`: outputs are taken in order until one is truthy;
    /// an error before that is returned.
    pub fn matches(&self, input: Val) -> Result<bool, String> {
        for out in self.run(input) {
            if is_truthy(&out?) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// jq's truthiness: everything but `false` and `null`.
pub fn is_truthy(val: &Val) -> bool {
    !matches!(val, Val::Null | Val::Bool(false))
}

/// The message of a runtime error: a string value as is, anything else
/// as JSON.
fn error_message(error: jaq_core::Error<Val>) -> String {
    match error.into_val() {
        Val::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
