//! Pretraining corpora: finds input files under a list of paths and streams their
//! documents one at a time, so a corpus larger than memory can be tokenized.
//!
//! Formats, chosen by extension: `.txt`/`.md` plain text (a file is one document,
//! but a file above [`CorpusOptions::split_text_above`] is split on blank lines so
//! it never sits in memory whole), `.jsonl`/`.json` JSON lines (one object per line,
//! text in a configurable string field), `.parquet` (a configurable string column).

mod jsonl;
mod parquet;
mod plain;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, TextError};

/// How to read a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusOptions {
    /// The string field holding the text in JSON-lines records.
    pub json_field: String,
    /// The string column holding the text in Parquet files.
    pub parquet_column: String,
    /// Plain-text files larger than this many bytes are streamed and split into
    /// documents on blank lines; this is also the largest document such a file
    /// yields (a longer paragraph is cut at a line end, or mid-line if it must).
    pub split_text_above: u64,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        Self {
            json_field: "text".to_string(),
            parquet_column: "text".to_string(),
            split_text_above: 8 << 20,
        }
    }
}

/// The file formats the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PlainText,
    JsonLines,
    Parquet,
}

impl Format {
    /// The format a file's extension names (case-insensitive), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "md" => Some(Format::PlainText),
            "jsonl" | "json" => Some(Format::JsonLines),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// One input file, found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub format: Format,
    /// Size on disk, for progress bars.
    pub size: u64,
}

/// Where in its file a document starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a text or JSON-lines file.
    Line(u64),
    /// 0-based row of a Parquet file (counted across row groups, as pandas does).
    Row { row_group: usize, row: u64 },
}

/// The origin of a document, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Shared between the documents of one file, so a document costs no path copy.
    pub path: Arc<Path>,
    pub position: Position,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Position::Line(line) => write!(f, "{}:{line}", self.path.display()),
            Position::Row { row_group, row } => {
                write!(
                    f,
                    "{} row {row} (row group {row_group})",
                    self.path.display()
                )
            }
        }
    }
}

/// One document of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    pub source: Source,
    /// Bytes of the current file consumed so far, for progress bars. For Parquet
    /// it advances a row group at a time, by compressed size.
    pub file_bytes_read: u64,
}

/// Counts over a whole pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub documents: u64,
    /// UTF-8 bytes of document text handed to the callback.
    pub text_bytes: u64,
    /// Records skipped because they held no text: empty or whitespace-only
    /// documents, JSON `null` fields and Parquet nulls.
    pub skipped: u64,
}

/// Expands `inputs` (files or folders) into the input files, in a fixed order:
/// the inputs in the order given, each folder walked recursively in name order.
///
/// A file named directly must have a supported extension; inside folders, other
/// files and hidden entries (names starting with `.`) are passed over, so a
/// dataset folder may hold a README.
pub fn discover(inputs: &[PathBuf]) -> Result<Vec<InputFile>> {
    let mut found = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| TextError::read(input, e))?;
        if meta.is_dir() {
            walk(input, &mut found)?;
        } else {
            let format = Format::from_path(input).ok_or_else(|| TextError::UnknownExtension {
                path: input.clone(),
            })?;
            found.push(InputFile {
                path: input.clone(),
                format,
                size: meta.len(),
            });
        }
    }
    if found.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        let inputs = if names.is_empty() {
            "(no paths given)".to_string()
        } else {
            names.join(", ")
        };
        return Err(TextError::EmptyInput { inputs });
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<InputFile>) -> Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TextError::read(dir, e))? {
        let entry = entry.map_err(|e| TextError::read(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        entries.push(entry.path());
    }
    // read_dir order depends on the file system; sorting makes runs repeatable.
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(|e| TextError::read(&path, e))?;
        if meta.is_dir() {
            walk(&path, found)?;
        } else if let Some(format) = Format::from_path(&path) {
            found.push(InputFile {
                path,
                format,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

/// Streams every document of `inputs` (see [`discover`]) to `f`, in order.
/// Stops at the first error, from a reader or from `f`.
pub fn for_each_document(
    inputs: &[PathBuf],
    opts: &CorpusOptions,
    f: impl FnMut(Document) -> Result<()>,
) -> Result<Stats> {
    let files = discover(inputs)?;
    for_each_document_in(&files, opts, f)
}

/// [`for_each_document`] over files already found by [`discover`].
pub fn for_each_document_in(
    files: &[InputFile],
    opts: &CorpusOptions,
    mut f: impl FnMut(Document) -> Result<()>,
) -> Result<Stats> {
    // Below 4 bytes a single character might not fit in a document.
    if opts.split_text_above < 4 {
        return Err(TextError::InvalidOption(
            "split_text_above must be at least 4 bytes".to_string(),
        ));
    }
    let mut stats = Stats::default();
    for file in files {
        let path: Arc<Path> = Arc::from(file.path.as_path());
        let mut emit = |doc: Document| -> Result<()> {
            if doc.text.trim().is_empty() {
                stats.skipped += 1;
                return Ok(());
            }
            stats.documents += 1;
            stats.text_bytes += doc.text.len() as u64;
            f(doc)
        };
        let skipped = match file.format {
            Format::PlainText => plain::read(&path, opts, &mut emit)?,
            Format::JsonLines => jsonl::read(&path, &opts.json_field, &mut emit)?,
            Format::Parquet => parquet::read(&path, &opts.parquet_column, &mut emit)?,
        };
        stats.skipped += skipped;
        stats.files += 1;
    }
    Ok(stats)
}

/// Reads lines of at most `limit` bytes (the newline included), so one enormous
/// line cannot exhaust memory; returns 0 at end of file.
fn read_line_limited(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    limit: u64,
) -> std::io::Result<usize> {
    use std::io::Read;
    buf.clear();
    std::io::BufRead::read_until(&mut reader.by_ref().take(limit), b'\n', buf)
}

/// The byte offset within `bytes` where UTF-8 decoding fails, if it does.
fn utf8_error_at(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes).err().map(|e| e.valid_up_to())
}
