//! Token ids to text as they come: each new token yields the text it completes, holding
//! back an unfinished UTF-8 character and anything that may be the start of a stop
//! string, and ending the text where a stop string begins (the stop string itself is
//! not part of the answer, as in the OpenAI API).

use std::sync::Arc;

use ferrochat_tokenizer::Tokenizer;

pub struct Detokenizer {
    tok: Arc<Tokenizer>,
    stops: Arc<[String]>,
    ids: Vec<u32>,
    /// The text handed out so far.
    sent: String,
    stopped: bool,
}

/// What one token adds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// A stop string was reached: the answer ends here.
    pub stopped: bool,
}

impl Detokenizer {
    pub fn new(tok: Arc<Tokenizer>, stops: Arc<[String]>) -> Self {
        Self {
            tok,
            stops,
            ids: Vec::new(),
            sent: String::new(),
            stopped: false,
        }
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.sent
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds a generated token (special tokens such as `<|end|>` add no text).
    pub fn push(&mut self, token: u32) -> Piece {
        if self.stopped {
            return Piece::default();
        }
        self.ids.push(token);
        let text = self.decoded();
        if let Some(end) = self.stop_at(&text) {
            self.stopped = true;
            return Piece {
                text: self.advance(&text[..end]),
                stopped: true,
            };
        }
        // hold back an unfinished character and a possible start of a stop string
        let mut safe = text.trim_end_matches('\u{FFFD}').len();
        for s in self.stops.iter() {
            // the longest proper prefix of `s` that the text ends with
            for (i, _) in s
                .char_indices()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if text[..safe].ends_with(&s[..i]) {
                    safe = safe.min(text[..safe].len() - i);
                    break;
                }
            }
        }
        Piece {
            text: self.advance(&text[..safe]),
            stopped: false,
        }
    }

    /// The rest of the text, held back until now; call when generation has ended.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let text = self.decoded();
        self.advance(&text)
    }

    fn decoded(&self) -> String {
        // decoding never fails on ids the model produced; an error yields no text
        self.tok.decode(&self.ids, false).unwrap_or_default()
    }

    /// Where the first stop string starts, searching from just before the text already
    /// sent.
    fn stop_at(&self, text: &str) -> Option<usize> {
        let longest = self.stops.iter().map(|s| s.len()).max()?;
        let mut from = self.sent.len().saturating_sub(longest);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        self.stops
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Hands out `upto` beyond what was sent (nothing if the decoded text changed under
    /// what was sent, which byte-level decoding does not do).
    fn advance(&mut self, upto: &str) -> String {
        match upto.strip_prefix(self.sent.as_str()) {
            Some(new) if !new.is_empty() => {
                let new = new.to_string();
                self.sent.push_str(&new);
                new
            }
            _ => String::new(),
        }
    }
}
