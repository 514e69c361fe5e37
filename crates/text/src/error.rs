//! The one error type of this crate. Every variant names the file (and where it
//! helps, the line, row or field) at fault, because the person reading the message
//! usually has a folder of thousands of files and needs to know which one to open.

use std::path::{Path, PathBuf};

/// Extensions the corpus readers accept, listed in error messages.
pub const SUPPORTED_EXTENSIONS: &str =
    ".txt, .md (plain text), .jsonl, .json (JSON lines), .parquet";

/// Errors from reading corpora and reading or writing token shards.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}:{line}: not valid UTF-8 (byte offset {offset} in the file); text inputs must be UTF-8",
        path.display()
    )]
    NotUtf8 {
        path: PathBuf,
        line: u64,
        offset: u64,
    },

    #[error("{}:{line}: malformed JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error("{}:{line}: no field \"{field}\" in this record (fields present: {present})", path.display())]
    MissingField {
        path: PathBuf,
        line: u64,
        field: String,
        present: String,
    },

    #[error("{}:{line}: field \"{field}\" is {found}, expected a string", path.display())]
    FieldNotString {
        path: PathBuf,
        line: u64,
        field: String,
        found: &'static str,
    },

    #[error("{}: no top-level column \"{column}\" (columns: {available})", path.display())]
    ParquetNoColumn {
        path: PathBuf,
        column: String,
        available: String,
    },

    #[error(
        "{}: column \"{column}\" holds {found}, expected a (non-repeated) UTF-8 string column",
        path.display()
    )]
    ParquetColumnType {
        path: PathBuf,
        column: String,
        found: String,
    },

    #[error(
        "{}: column \"{column}\", row group {row_group}, row {row}: not valid UTF-8 (byte {offset} of the value)",
        path.display()
    )]
    ParquetNotUtf8 {
        path: PathBuf,
        column: String,
        row_group: usize,
        row: u64,
        offset: usize,
    },

    #[error("{}: cannot read Parquet{}: {message}", path.display(), row_group.map(|g| format!(" (row group {g})")).unwrap_or_default())]
    Parquet {
        path: PathBuf,
        row_group: Option<usize>,
        message: String,
    },

    #[error("{}: unsupported file type; supported extensions: {SUPPORTED_EXTENSIONS}", path.display())]
    UnknownExtension { path: PathBuf },

    #[error("no input files found in {inputs} (looked for {SUPPORTED_EXTENSIONS})")]
    EmptyInput { inputs: String },

    #[error("{}: not a ferrochat token shard (magic bytes {found:?}, expected \"FCTOKENS\")", path.display())]
    BadMagic { path: PathBuf, found: String },

    #[error("{}: token shard format version {found}, this build reads version {expected}", path.display())]
    BadVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },

    #[error(
        "{}: truncated or corrupt token shard: its header says {tokens} tokens, so the file should be {expected} bytes, but it is {actual} bytes",
        path.display()
    )]
    ShardLength {
        path: PathBuf,
        tokens: u64,
        expected: u64,
        actual: u64,
    },

    #[error("{}: {message}", path.display())]
    ShardInvalid { path: PathBuf, message: String },

    #[error("{}: invalid manifest: {message}", path.display())]
    Manifest { path: PathBuf, message: String },

    #[error(
        "split \"{split}\" in {} holds {tokens} tokens, fewer than the {needed} needed for one window of seq + 1 tokens",
        dir.display()
    )]
    TooFewTokens {
        dir: PathBuf,
        split: String,
        tokens: u64,
        needed: u64,
    },

    #[error("tokens {start}..{end} are outside split \"{split}\", which holds {len} tokens")]
    OutOfRange {
        split: String,
        start: u64,
        end: u64,
        len: u64,
    },

    #[error(
        "token id {id} is outside the vocabulary (size {vocab_size}); document from {source_doc}"
    )]
    TokenOutOfRange {
        id: u32,
        vocab_size: u32,
        source_doc: String,
    },

    #[error("the tokenizer failed on the documents starting at {source_doc}: {message}")]
    Encode { source_doc: String, message: String },

    #[error("invalid option: {0}")]
    InvalidOption(String),

    #[error("{}:{line}: {reason}", path.display())]
    BadRecord {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("{}: no usable records{}", path.display(), if *bad > 0 { format!(" ({bad} bad ones were skipped)") } else { String::new() })]
    NoRecords { path: PathBuf, bad: usize },
}

/// Result with [`TextError`].
pub type Result<T> = std::result::Result<T, TextError>;

impl TextError {
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        TextError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        TextError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}
