//! One error type for the whole engine. Every variant carries the context a user needs
//! to act (the file, the tensor, the field) and prints as a single line.

use std::path::PathBuf;

/// The engine's error. `Display` is one line, suitable for `peregrine: error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: field `{field}`: {msg}")]
    Config { path: PathBuf, field: String, msg: String },
    #[error("{file}: tensor `{tensor}`: {msg}")]
    Tensor { file: PathBuf, tensor: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Msg(String),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A plain one-line message.
    pub fn msg(s: impl Into<String>) -> Self {
        Error::Msg(s.into())
    }
    /// A bad user input (ids, prompt, flag value).
    pub fn input(s: impl Into<String>) -> Self {
        Error::Input(s.into())
    }
    /// A device-level failure (driver missing, out of memory, kernel failure).
    pub fn device(s: impl Into<String>) -> Self {
        Error::Device(s.into())
    }
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// A problem with one field of a configuration file.
    pub fn config(path: impl Into<PathBuf>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { path: path.into(), field: field.into(), msg: msg.into() }
    }
    /// A problem with one tensor of a checkpoint file.
    pub fn tensor(file: impl Into<PathBuf>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { file: file.into(), tensor: tensor.into(), msg: msg.into() }
    }
    /// A problem with a whole file (corrupt header, unsupported format).
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
}
