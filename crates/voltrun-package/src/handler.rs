//! Lambda's `module.function` handler names for `files` and `zip` packages (SPEC §10).
//! Python: `pkg.mod.handler` is `handler` in `pkg/mod.py` (the last dot separates the
//! function; every part is an identifier). Node: `index.handler` is the `handler` export of
//! `index.js`, `index.mjs` or `index.cjs`; the module may sit in a directory
//! (`src/app.handler`), split at the first dot after the last `/`.

/// The language a handler name is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Python modules.
    Python,
    /// Node modules (CommonJS or ESM).
    Node,
    /// A custom runtime (SPEC §15): the package's executable `bootstrap` runs; the handler is
    /// only passed to it (`_HANDLER`), any name it understands.
    Provided,
}

/// The file a custom runtime's package must hold, executable, at its root.
pub const BOOTSTRAP_FILE: &str = "bootstrap";

impl Language {
    /// The handler a package gets when it names none.
    pub fn default_handler(self) -> &'static str {
        match self {
            Language::Python => "main.handler",
            Language::Node => "index.handler",
            Language::Provided => "function.handler",
        }
    }

    /// The files a module may be, relative to the package root, in the order they are tried.
    pub fn module_files(self, module: &str) -> Vec<String> {
        match self {
            Language::Python => {
                let base = module.replace('.', "/");
                vec![format!("{base}.py"), format!("{base}/__init__.py")]
            }
            Language::Node => ["js", "mjs", "cjs"].iter().map(|ext| format!("{module}.{ext}")).collect(),
            Language::Provided => vec![BOOTSTRAP_FILE.to_string()],
        }
    }
}

/// A parsed handler: the module and the function it exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Python: the dotted module (`pkg.mod`); Node: the file's path without extension.
    pub module: String,
    /// The function's name.
    pub function: String,
}

/// Why a handler name is refused: a phrase to follow "handler …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler {handler:?} {problem}")]
pub struct HandlerError {
    /// The name as given.
    pub handler: String,
    /// What is wrong with it.
    pub problem: String,
}

fn is_python_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic()) && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

fn is_js_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f == '_' || f == '$' || f.is_ascii_alphabetic()) && c.all(|ch| ch == '_' || ch == '$' || ch.is_ascii_alphanumeric())
}

/// Parses `handler` for `language`.
pub fn parse(handler: &str, language: Language) -> Result<Handler, HandlerError> {
    let err = |problem: &str| HandlerError { handler: handler.to_string(), problem: problem.to_string() };
    if handler.len() > 128 {
        return Err(err("is longer than 128 characters"));
    }
    match language {
        Language::Python => {
            let Some((module, function)) = handler.rsplit_once('.') else {
                return Err(err("must be module.function (e.g. main.handler)"));
            };
            if !module.split('.').all(is_python_identifier) {
                return Err(err("has a module that is not a dotted Python name (e.g. pkg.mod)"));
            }
            if !is_python_identifier(function) {
                return Err(err("has a function name that is not a Python identifier"));
            }
            Ok(Handler { module: module.to_string(), function: function.to_string() })
        }
        Language::Node => {
            let slash = handler.rfind('/').map(|i| i + 1).unwrap_or(0);
            let Some(dot) = handler[slash..].find('.').map(|i| i + slash) else {
                return Err(err("must be module.function (e.g. index.handler)"));
            };
            let (module, function) = (&handler[..dot], &handler[dot + 1..]);
            let parts_ok = module.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-.@".contains(ch)));
            if module.is_empty() || !parts_ok {
                return Err(err("has a module that is not a relative file name (e.g. index or src/app)"));
            }
            if !is_js_identifier(function) {
                return Err(err("has a function name that is not a JavaScript identifier"));
            }
            Ok(Handler { module: module.to_string(), function: function.to_string() })
        }
        // Lambda passes a custom runtime's handler through untouched; it ends up in an
        // environment variable, so it is printable ASCII without spaces.
        Language::Provided => {
            if handler.is_empty() || !handler.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err("must be 1 to 128 printable characters without spaces"));
            }
            Ok(Handler { module: BOOTSTRAP_FILE.to_string(), function: handler.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_runtime_takes_any_printable_handler_and_needs_its_bootstrap() {
        assert_eq!(parse("function.handler", Language::Provided).unwrap(), Handler { module: "bootstrap".into(), function: "function.handler".into() });
        assert!(parse("", Language::Provided).is_err());
        assert!(parse("a b", Language::Provided).is_err());
        assert!(parse("a\nb", Language::Provided).is_err());
        assert_eq!(Language::Provided.module_files("bootstrap"), ["bootstrap"]);
    }

    #[test]
    fn python_handlers_split_at_the_last_dot() {
        assert_eq!(parse("main.handler", Language::Python).unwrap(), Handler { module: "main".into(), function: "handler".into() });
        assert_eq!(parse("pkg.sub.mod.run_it", Language::Python).unwrap().module, "pkg.sub.mod");
        for bad in ["handler", "main.", ".handler", "my-mod.handler", "pkg..mod.h", "main.1x", "a/b.handler", "main.handler()"] {
            assert!(parse(bad, Language::Python).is_err(), "{bad}");
        }
        assert_eq!(Language::Python.module_files("pkg.mod"), ["pkg/mod.py", "pkg/mod/__init__.py"]);
    }

    #[test]
    fn node_handlers_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(parse("index.handler", Language::Node).unwrap(), Handler { module: "index".into(), function: "handler".into() });
        assert_eq!(parse("src/app.$main", Language::Node).unwrap(), Handler { module: "src/app".into(), function: "$main".into() });
        for bad in ["index", "index.", "../x.handler", "/abs.handler", "a//b.handler", "index.a.b", "index.1a", "./index.handler"] {
            assert!(parse(bad, Language::Node).is_err(), "{bad}");
        }
        let e = parse("index", Language::Node).unwrap_err().to_string();
        assert!(e.contains("\"index\"") && e.contains("module.function"), "{e}");
    }
}
