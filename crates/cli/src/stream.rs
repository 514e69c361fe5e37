//! Model output printed as it is generated.

use std::io::Write;

use anyhow::Result;
use ferrochat_tokenizer::Tokenizer;

/// Prints a token stream as text as it arrives. The answer so far is decoded whole each
/// time; a trailing U+FFFD may be a character whose remaining bytes are in tokens still to
/// come, so it is held back, and everything before it is final.
pub struct Stream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
    /// Show control characters as U+FFFD, so model output cannot drive the terminal.
    clean: bool,
}

impl<'a> Stream<'a> {
    pub fn new(tok: &'a Tokenizer, clean: bool) -> Self {
        Self {
            tok,
            ids: Vec::new(),
            printed: 0,
            clean,
        }
    }

    pub fn push(&mut self, id: u32, out: &mut impl Write) -> std::io::Result<()> {
        self.ids.push(id);
        if let Ok(text) = self.tok.decode(&self.ids, false) {
            let done = text.strip_suffix('\u{FFFD}').unwrap_or(&text);
            if let Some(new) = done.get(self.printed..).filter(|s| !s.is_empty()) {
                self.write(new, out)?;
                out.flush()?;
                self.printed = done.len();
            }
        }
        Ok(())
    }

    fn write(&self, text: &str, out: &mut impl Write) -> std::io::Result<()> {
        if self.clean {
            out.write_all(shown(text).as_bytes())
        } else {
            out.write_all(text.as_bytes())
        }
    }

    /// Prints whatever is still held back and returns the whole answer.
    pub fn finish(self, out: &mut impl Write) -> Result<String> {
        let text = self.tok.decode(&self.ids, false)?;
        if let Some(rest) = text.get(self.printed..) {
            self.write(rest, out)?;
        }
        Ok(text)
    }
}

/// Text for the terminal: control characters other than newline and tab become U+FFFD.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if text.contains(bad) {
        text.replace(bad, "\u{FFFD}").into()
    } else {
        text.into()
    }
}
