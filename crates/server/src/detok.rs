//! Token ids to text as they come: each new token yields the text it completes, holding
//! back an unfinished UTF-8 character and anything that may be the start of a stop
//! string, and ending the text where a stop string begins (the stop string itself is
//! not part of the answer, as in the OpenAI API).
//!
//! Each token costs a decode of the last few tokens, not of the whole answer: the text is
//! grown by the difference between decoding a short window with and without its newest
//! tokens (the window starts a few tokens back, so decoders that treat a sequence's first
//! token specially, such as SentencePiece's leading space, see it in context).

use std::sync::Arc;

use ferrochat_tokenizer::Tokenizer;

pub struct Detokenizer {
    tok: Arc<Tokenizer>,
    stops: Arc<[String]>,
    ids: Vec<u32>,
    /// The text of every complete character decoded so far.
    decoded: String,
    /// `ids[prefix..read]` is the context window already part of `decoded`; `ids[read..]`
    /// are tokens whose text is not complete yet.
    prefix: usize,
    read: usize,
    /// The text handed out so far (a prefix of `decoded`).
    sent: String,
    stopped: bool,
}

/// Tokens of context decoded before the new ones.
const CONTEXT: usize = 4;

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
            decoded: String::new(),
            prefix: 0,
            read: 0,
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
        self.grow(false);
        self.release()
    }

    /// Hands out what the complete text lets out: up to where a stop string begins, or
    /// else all but a possible start of one.
    fn release(&mut self) -> Piece {
        let text = self.decoded.as_str();
        if let Some(end) = self.stop_at(text) {
            self.stopped = true;
            return Piece {
                text: self.advance(end),
                stopped: true,
            };
        }
        let mut safe = text.len();
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
            text: self.advance(safe),
            stopped: false,
        }
    }

    /// The rest of the text, held back until now; call when generation has ended.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        self.grow(true);
        let piece = self.release();
        if piece.stopped {
            return piece.text;
        }
        piece.text + &self.advance(self.decoded.len())
    }

    fn decode(&self, ids: &[u32]) -> String {
        // decoding never fails on ids the model produced; an error yields no text
        self.tok.decode(ids, false).unwrap_or_default()
    }

    /// Appends the text the unread tokens complete: all of it when `last`, otherwise
    /// only once it does not end inside a character.
    fn grow(&mut self, last: bool) {
        let before = self.decode(&self.ids[self.prefix..self.read]);
        let after = self.decode(&self.ids[self.prefix..]);
        let complete = last || !after.ends_with('\u{FFFD}');
        match after.strip_prefix(before.as_str()) {
            Some(new) if complete => {
                self.decoded.push_str(new);
                // the next window starts a few tokens back, for context
                self.prefix = self.prefix.max(self.ids.len().saturating_sub(CONTEXT));
                self.read = self.ids.len();
            }
            Some(_) => {}
            // the window's text changed under what it had given: decode it all again
            None => {
                let all = self.decode(&self.ids);
                if complete || !all.ends_with('\u{FFFD}') {
                    self.decoded = all;
                    self.prefix = self.ids.len().saturating_sub(CONTEXT);
                    self.read = self.ids.len();
                }
            }
        }
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

    /// Hands out the text up to byte `upto` beyond what was sent (nothing if the decoded
    /// text changed under what was sent, which byte-level decoding does not do).
    fn advance(&mut self, upto: usize) -> String {
        match self.decoded[..upto].strip_prefix(self.sent.as_str()) {
            Some(new) if !new.is_empty() => {
                let new = new.to_string();
                self.sent.push_str(&new);
                new
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrochat_tokenizer::TrainOptions;

    fn tokenizer() -> Arc<Tokenizer> {
        let text: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => format!("The river city {i} has a bridge, and the bridge is old."),
                1 => format!("What is {i} plus {}? It is {}. 🙂", i + 1, 2 * i + 1),
                _ => format!("第{i}个问题的答案是{}。河边的城市很美。", i * 3),
            })
            .collect();
        let opts = TrainOptions {
            vocab_size: 300,
            ..Default::default()
        };
        Arc::new(Tokenizer::train(text.into_iter(), &opts).unwrap())
    }

    /// Feeds `text`'s tokens one by one: the pieces, the finishing text, whether stopped.
    fn stream(tok: &Arc<Tokenizer>, text: &str, stops: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Arc<[String]> = stops.iter().map(|s| s.to_string()).collect();
        let mut d = Detokenizer::new(tok.clone(), stops);
        let mut pieces = Vec::new();
        for id in tok.encode_plain(text).unwrap() {
            let p = d.push(id);
            pieces.push(p.text);
            if p.stopped {
                break;
            }
        }
        let tail = d.finish();
        (pieces, tail, d.stopped())
    }

    #[test]
    fn pieces_add_up_to_the_text_and_split_no_character() {
        let tok = tokenizer();
        let text = "The river city 12 has a bridge. 第7个问题的答案是21。🙂🙂 What is 3 plus 4? \
                    It is 7. 河边的城市很美。"
            .repeat(20);
        let (pieces, tail, stopped) = stream(&tok, &text, &[]);
        assert!(!stopped);
        assert_eq!(pieces.concat() + &tail, text);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }

    #[test]
    fn a_stop_string_ends_the_text_where_it_begins() {
        let tok = tokenizer();
        let (pieces, tail, stopped) = stream(
            &tok,
            "It is 7. 河边的城市 is old. More text.",
            &["城市", "zzz"],
        );
        assert!(stopped);
        assert_eq!(pieces.concat() + &tail, "It is 7. 河边的");
        // a stop string that never completes is handed out at the end
        let (pieces, tail, stopped) = stream(&tok, "What is 3 plus", &["plus 4"]);
        assert!(!stopped);
        assert_eq!(pieces.concat() + &tail, "What is 3 plus");
    }
}
