//! Diagnostics for mapping files: `file:line:col: reason`, as editors and CI logs expect.

use super::node::Loc;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub col: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The file being compiled, to stamp diagnostics with.
#[derive(Clone, Debug)]
pub struct FileCtx {
    pub file: String,
}

impl FileCtx {
    pub fn new(file: impl Into<String>) -> Self {
        Self { file: file.into() }
    }

    pub fn at(&self, loc: Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: self.file.clone(), line: loc.line, col: loc.col, message: message.into() }
    }

    /// Turns a YAML/serde error into a diagnostic, keeping its location.
    pub fn from_yaml(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let text = e.without_snippet().to_string();
        // The location is already in front; keep the reason only.
        let message = match text.rfind(" at line ") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        Diagnostic { file: self.file.clone(), line, col, message: message.trim().to_string() }
    }
}
