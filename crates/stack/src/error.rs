//! `StackError`: what is wrong with a stack file, and where.

use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// A stack file that cannot be read or is not valid. A valid file yields the whole [`Stack`];
/// an invalid one yields only this error (nothing partial).
///
/// [`Stack`]: crate::Stack
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The file could not be read at all.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid YAML, does not fit the schema, or fails validation.
    #[error("{}:{line}:{column}: {object}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: u64,
        /// 1-based column (in characters) of the offending key or value.
        column: u64,
        /// The object at fault: `stack`, `zones.a`, `listeners[0]`,
        /// `security_groups.proxy-sg.ingress[1]`, `target_groups.proxies.targets[0]`, ...
        object: String,
        message: String,
    },
}

impl StackError {
    pub(crate) fn invalid(path: &Path, at: Pos, object: &str, message: String) -> Self {
        StackError::Invalid {
            path: path.to_path_buf(),
            line: at.line,
            column: at.column,
            object: object.to_string(),
            message,
        }
    }

    /// The file named in the message.
    pub fn path(&self) -> &Path {
        match self {
            StackError::Read { path, .. } | StackError::Invalid { path, .. } => path,
        }
    }

    /// 1-based line; 0 when the file could not be read.
    pub fn line(&self) -> u64 {
        match self {
            StackError::Read { .. } => 0,
            StackError::Invalid { line, .. } => *line,
        }
    }

    /// 1-based column; 0 when the file could not be read.
    pub fn column(&self) -> u64 {
        match self {
            StackError::Read { .. } => 0,
            StackError::Invalid { column, .. } => *column,
        }
    }

    /// The object at fault (`stack` when the whole file could not be read).
    pub fn object(&self) -> &str {
        match self {
            StackError::Read { .. } => "stack",
            StackError::Invalid { object, .. } => object,
        }
    }

    /// What is wrong, without the position and object.
    pub fn message(&self) -> String {
        match self {
            StackError::Read { source, .. } => source.to_string(),
            StackError::Invalid { message, .. } => message.clone(),
        }
    }
}

/// A 1-based line and column in the stack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    /// Where a YAML node was used (for an alias: the alias, not its anchor). serde-saphyr
    /// reports line 0 when it knows no location; the start of the document is then the
    /// honest answer.
    pub fn of(location: Location) -> Pos {
        if location.line() == 0 {
            Pos { line: 1, column: 1 }
        } else {
            Pos {
                line: location.line(),
                column: location.column().max(1),
            }
        }
    }

    /// The position of byte `offset` of `text`, counting columns in characters as
    /// serde-saphyr does.
    pub fn at_byte(text: &str, offset: usize) -> Pos {
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: before.matches('\n').count() as u64 + 1,
            column: before[line_start..].chars().count() as u64 + 1,
        }
    }
}
