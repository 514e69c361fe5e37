//! Plain-text files (`.txt`, `.md`). A small file is one document, as written. A
//! large one is streamed and split on blank lines, because a multi-gigabyte dump
//! would not fit in memory and a paragraph is the natural unit such dumps share.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::{read_line_limited, utf8_error_at, CorpusOptions, Document, Position, Source};
use crate::error::{Result, TextError};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Streams the documents of one text file to `emit`; returns the records skipped
/// by the reader itself (none: empty documents are counted by the caller).
pub(super) fn read(
    path: &Arc<Path>,
    opts: &CorpusOptions,
    emit: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| TextError::read(path, e))?;
    // The size now, not at discovery: the file may have grown since.
    let size = file.metadata().map_err(|e| TextError::read(path, e))?.len();
    if size <= opts.split_text_above {
        whole(path, file, size, emit)?;
    } else {
        split(path, file, opts.split_text_above, emit)?;
    }
    Ok(0)
}

fn whole(
    path: &Arc<Path>,
    mut file: File,
    size: u64,
    emit: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| TextError::read(path, e))?;
    let read = bytes.len() as u64;
    let skip = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
    if let Some(at) = utf8_error_at(&bytes[skip..]) {
        return Err(not_utf8(path, &bytes[skip..], 1, skip as u64, at));
    }
    bytes.drain(..skip);
    let text = String::from_utf8(bytes).map_err(|e| {
        // Unreachable after the check above, but never worth a panic.
        TextError::NotUtf8 {
            path: path.to_path_buf(),
            line: 1,
            offset: e.utf8_error().valid_up_to() as u64,
        }
    })?;
    emit(Document {
        text,
        source: Source {
            path: path.clone(),
            position: Position::Line(1),
        },
        file_bytes_read: read,
    })
}

/// The error for invalid UTF-8 at `at` within `chunk`, a slice of the file that
/// starts at line `first_line`, byte `first_offset`.
fn not_utf8(path: &Path, chunk: &[u8], first_line: u64, first_offset: u64, at: usize) -> TextError {
    let newlines = chunk[..at].iter().filter(|&&b| b == b'\n').count() as u64;
    TextError::NotUtf8 {
        path: path.to_path_buf(),
        line: first_line + newlines,
        offset: first_offset + at as u64,
    }
}

/// A paragraph being gathered, with where it starts in the file.
struct Paragraph<'a> {
    path: &'a Arc<Path>,
    bytes: Vec<u8>,
    line: u64,
    offset: u64,
}

impl Paragraph<'_> {
    /// Emits the first `len` bytes as a document (without trailing line breaks)
    /// and keeps the rest, which then starts at (`next_line`, `next_offset`).
    fn emit(
        &mut self,
        len: usize,
        next_line: u64,
        next_offset: u64,
        file_bytes_read: u64,
        emit: &mut dyn FnMut(Document) -> Result<()>,
    ) -> Result<()> {
        let rest = self.bytes.split_off(len);
        let mut bytes = std::mem::replace(&mut self.bytes, rest);
        if let Some(at) = utf8_error_at(&bytes) {
            return Err(not_utf8(self.path, &bytes, self.line, self.offset, at));
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        let (line, offset) = (self.line, self.offset);
        self.line = next_line;
        self.offset = next_offset;
        if bytes.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8(bytes).map_err(|e| TextError::NotUtf8 {
            path: self.path.to_path_buf(),
            line,
            offset: offset + e.utf8_error().valid_up_to() as u64,
        })?;
        let position = Position::Line(line);
        emit(Document {
            text,
            source: Source {
                path: self.path.clone(),
                position,
            },
            file_bytes_read,
        })
    }
}

fn split(
    path: &Arc<Path>,
    file: File,
    cap: u64,
    emit: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<()> {
    let cap_bytes = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let mut para = Paragraph {
        path,
        bytes: Vec::new(),
        line: 1,
        offset: 0,
    };
    // Where `line` starts in the file, and its 1-based number.
    let mut line_no = 1u64;
    let mut offset = 0u64;
    loop {
        let n =
            read_line_limited(&mut reader, &mut line, cap).map_err(|e| TextError::read(path, e))?;
        if n == 0 {
            break;
        }
        let complete = line.last() == Some(&b'\n');
        let end = offset + n as u64;
        if offset == 0 && line.starts_with(BOM) {
            line.drain(..BOM.len());
            para.offset = BOM.len() as u64;
        }
        if complete && line.iter().all(|b| b.is_ascii_whitespace()) {
            // A blank line ends the paragraph; the next one starts after it.
            let len = para.bytes.len();
            para.emit(len, line_no + 1, end, end, emit)?;
        } else {
            if !para.bytes.is_empty() && para.bytes.len() + line.len() > cap_bytes {
                let len = para.bytes.len();
                para.emit(len, line_no, offset, offset, emit)?;
            }
            para.bytes.extend_from_slice(&line);
            if para.bytes.len() >= cap_bytes {
                // One line longer than the cap: cut it at a character boundary and
                // carry the tail (still on this line) into the next document.
                let cut = char_boundary_before(&para.bytes, cap_bytes);
                let tail = (para.bytes.len() - cut) as u64;
                let (next_line, next_offset) = if complete && tail == 0 {
                    (line_no + 1, end)
                } else {
                    (line_no, end - tail)
                };
                para.emit(cut, next_line, next_offset, end, emit)?;
            }
        }
        if complete {
            line_no += 1;
        }
        offset = end;
    }
    let len = para.bytes.len();
    para.emit(len, line_no, offset, offset, emit)
}

/// The largest index `<= at` that does not split a UTF-8 sequence (falling back to
/// `at` itself when the bytes are not UTF-8, which validation then reports).
fn char_boundary_before(bytes: &[u8], at: usize) -> usize {
    let is_continuation = |i: usize| i < bytes.len() && (bytes[i] & 0b1100_0000) == 0b1000_0000;
    let at = at.min(bytes.len());
    let mut i = at;
    // A UTF-8 sequence has at most three continuation bytes.
    while i > 0 && at - i < 3 && is_continuation(i) {
        i -= 1;
    }
    if i == 0 || is_continuation(i) {
        at
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_of(content: &[u8], cap: u64) -> Result<Vec<(String, Position)>> {
        let dir = tempfile::tempdir().map_err(|e| TextError::read(Path::new("tmp"), e))?;
        let path = dir.path().join("a.txt");
        std::fs::write(&path, content).map_err(|e| TextError::write(&path, e))?;
        let path: Arc<Path> = Arc::from(path.as_path());
        let opts = CorpusOptions {
            split_text_above: cap,
            ..CorpusOptions::default()
        };
        let mut out = Vec::new();
        read(&path, &opts, &mut |d| {
            out.push((d.text, d.source.position));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn small_file_is_one_document() -> Result<()> {
        let docs = docs_of(b"\xEF\xBB\xBFone\n\ntwo\n", 1 << 20)?;
        assert_eq!(docs, vec![("one\n\ntwo\n".to_string(), Position::Line(1))]);
        Ok(())
    }

    #[test]
    fn large_file_splits_on_blank_lines() -> Result<()> {
        let docs = docs_of(b"a1\na2\n\n \r\nb1\r\n\nc1\n", 8)?;
        let want = [("a1\na2", 1), ("b1", 5), ("c1", 7)];
        let want: Vec<_> = want
            .iter()
            .map(|(t, l)| (t.to_string(), Position::Line(*l)))
            .collect();
        assert_eq!(docs, want);
        Ok(())
    }

    #[test]
    fn long_lines_are_cut_on_char_boundaries() -> Result<()> {
        let text = "ééééé\nxy\n"; // é is two bytes
        let docs = docs_of(text.as_bytes(), 4)?;
        let joined: String = docs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(joined, "éééééxy");
        assert!(docs.iter().all(|(t, _)| t.len() <= 4));
        Ok(())
    }

    #[test]
    fn bad_utf8_names_line_and_offset() {
        for cap in [1 << 20, 4] {
            let err = docs_of(b"ok\nfine\nbad \xFF here\n", cap).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("a.txt:3"), "{msg}");
            assert!(msg.contains("byte offset 12"), "{msg}");
        }
    }
}
