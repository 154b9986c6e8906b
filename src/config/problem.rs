//! What is wrong with a config file, and where: [`Problem`] (line, key path, message) and
//! [`ConfigError`] (the file and every problem in it). Every stage that checks part of the
//! config (this module's [`load`](fn@crate::config::load), the rule compiler, the template registry)
//! reports through these, so `check` prints one list in one shape.

use serde_saphyr::Spanned;
use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the config file, when known.
    pub(crate) line: Option<u64>,
    /// The dotted key path, e.g. `rules[new-lead].where[1].matches` or `destinations.front-desk.url`.
    pub key: String,
    /// What is wrong, in words a clinic's IT person understands.
    pub message: String,
}

impl Problem {
    /// A problem at a known line.
    pub(crate) fn at(
        line: Option<u64>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            line,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// The line a spanned value was written on.
pub fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    let line = s.defined.line();
    (line > 0).then_some(line)
}

/// A config that failed to load: the file and every problem found.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file.
    pub(crate) file: PathBuf,
    /// What is wrong, in file order where known.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The error for `problems` in `file`, sorted into file order (problems without a line
    /// first; the order they were found in is kept within a line).
    pub(crate) fn new(file: impl Into<PathBuf>, mut problems: Vec<Problem>) -> ConfigError {
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        ConfigError {
            file: file.into(),
            problems,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} has {} problem{}:",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            match p.line {
                Some(line) => write!(
                    f,
                    "\n  {}:{}: {}: {}",
                    self.file.display(),
                    line,
                    p.key,
                    p.message
                )?,
                None => write!(f, "\n  {}: {}: {}", self.file.display(), p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
