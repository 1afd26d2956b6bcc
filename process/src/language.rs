//! The languages a worker runs: their interpreter, the worker shim weir
//! ships for them, and the load-time check of a handler (interpreter
//! present, syntax, a `handler` defined) that `weir validate` reports with
//! the file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A language functions can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// CPython 3.9+ (tested on 3.11).
    Python,
    /// Node.js 18+ (tested on 20).
    Node,
}

/// The Python worker shim, shipped inside weir.
const PYTHON_SHIM: &str = include_str!("../shim/python_worker.py");
/// The Node.js worker shim, shipped inside weir.
const NODE_SHIM: &str = include_str!("../shim/node_worker.js");

/// Checks a Python handler: the interpreter's version, the syntax, a
/// top-level `handler`. Prints `LINE:COLUMN:MESSAGE` and exits 3 on a
/// problem in the file, 4 on one with the interpreter.
const PYTHON_CHECK: &str = r#"
import ast, sys
if sys.version_info < (3, 9):
    print("0:0:Python %d.%d is too old: weir's worker needs 3.9 or later" % sys.version_info[:2]); sys.exit(4)
path = sys.argv[1]
try:
    tree = ast.parse(open(path, "rb").read(), path)
except SyntaxError as e:
    print("%s:%s:SyntaxError: %s" % (e.lineno or 0, e.offset or 0, e.msg)); sys.exit(3)
names = set()
for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(node.name)
    elif isinstance(node, ast.Assign):
        names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        names.update((a.asname or a.name).split(".")[0] for a in node.names)
if "handler" not in names:
    print("0:0:no top-level `handler`: define def handler(context, event) or def handler(context, events)"); sys.exit(3)
"#;

impl Language {
    /// The step type's name.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
        }
    }

    /// The interpreter on the `PATH` when none is configured.
    pub fn default_interpreter(self) -> &'static str {
        match self {
            Language::Python => "python3",
            Language::Node => "node",
        }
    }

    /// The extension versions are kept under.
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::Node => "js",
        }
    }

    /// The worker shim's source and file name.
    pub fn shim(self) -> (&'static str, &'static str) {
        match self {
            Language::Python => (PYTHON_SHIM, "python_worker.py"),
            Language::Node => (NODE_SHIM, "node_worker.js"),
        }
    }

    /// Arguments before the shim's path (unbuffered output for Python, so
    /// printed lines reach weir's log as they are printed).
    pub fn interpreter_flags(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["-u"],
            Language::Node => &[],
        }
    }

    /// Checks `handler` with `interpreter`: `Err` says what is wrong and
    /// where (`file:line: …`).
    pub fn check(self, interpreter: &Path, handler: &Path) -> Result<(), String> {
        let shown = handler.display();
        let output = match self {
            Language::Python => Command::new(interpreter)
                .arg("-c")
                .arg(PYTHON_CHECK)
                .arg(handler)
                .output(),
            Language::Node => Command::new(interpreter)
                .arg("--check")
                .arg(handler)
                .output(),
        }
        .map_err(|e| self.missing_interpreter(interpreter, &e))?;
        if output.status.success() {
            return match self {
                Language::Node => node_has_handler(handler),
                Language::Python => Ok(()),
            };
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        match self {
            Language::Python => {
                let line = stdout.lines().next().unwrap_or("");
                let mut parts = line.splitn(3, ':');
                match (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    output.status.code(),
                ) {
                    (Some("0"), Some(_), Some(message), _) => Err(format!("{shown}: {message}")),
                    (Some(l), Some(c), Some(message), Some(3)) => {
                        Err(format!("{shown}:{l}:{c}: {message}"))
                    }
                    _ => Err(format!(
                        "{shown}: checking with {} failed: {}",
                        interpreter.display(),
                        stderr.trim()
                    )),
                }
            }
            Language::Node => Err(node_syntax_error(handler, &stderr)),
        }
    }

    fn missing_interpreter(self, interpreter: &Path, error: &std::io::Error) -> String {
        let hint = match self {
            Language::Python => {
                "install Python 3.9+ (3.11 is tested) or set `interpreter` or `venv`"
            }
            Language::Node => "install Node.js 18+ (20 is tested) or set `interpreter`",
        };
        format!("cannot run `{}`: {error}; {hint}", interpreter.display())
    }

    /// Where the shim is written (once per weir version and process user).
    pub fn shim_path(self) -> Result<PathBuf, String> {
        let (source, name) = self.shim();
        let dir = std::env::temp_dir().join(format!(
            "weir-shims-{}-{}",
            user_id(),
            &weir_versions::store::sha256_hex(source.as_bytes())[..16]
        ));
        let path = dir.join(name);
        if !path.exists() {
            weir_versions::store::write_atomically(&path, source.as_bytes())
                .map_err(|e| format!("cannot write the worker shim {}: {e}", path.display()))?;
        }
        Ok(path)
    }
}

/// The real user id, so users on one machine do not share shim files.
fn user_id() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `node --check` prints `FILE:LINE`, the code, a caret, then
/// `SyntaxError: …`; this makes it one line naming file and line.
fn node_syntax_error(handler: &Path, stderr: &str) -> String {
    let shown = handler.display().to_string();
    let line = stderr
        .lines()
        .find_map(|l| {
            l.rsplit_once(':').filter(|(f, n)| {
                f.ends_with(&*shown) || f.ends_with(".js") && n.parse::<u32>().is_ok()
            })
        })
        .and_then(|(_, n)| n.trim().parse::<u32>().ok());
    let message = stderr
        .lines()
        .find(|l| l.contains("Error:"))
        .unwrap_or_else(|| stderr.lines().next().unwrap_or("node --check failed"))
        .trim();
    match line {
        Some(n) => format!("{shown}:{n}: {message}"),
        None => format!("{shown}: {message}"),
    }
}

/// A static look for a `handler` export (the worker checks for real when it starts).
fn node_has_handler(handler: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(handler)
        .map_err(|e| format!("cannot read `{}`: {e}", handler.display()))?;
    if source.contains("handler") {
        Ok(())
    } else {
        Err(format!(
            "{}: no `handler` export: exports.handler = async (context, event) => … or (context, events)",
            handler.display()
        ))
    }
}
