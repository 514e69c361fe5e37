//! JSON-lines records that people write by hand or export from other tools: chat
//! dialogues and preference records (pairs or ranked lists). A bad record is never passed over in
//! silence: it is either reported with its line number and skipped, or it stops the run,
//! as the caller chooses.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Conversation, Message, RankedComparison, Result, Role, TextError};

/// What to do with a record that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBad {
    /// Report it (line and reason) and go on without it.
    #[default]
    Skip,
    /// Stop with an error naming the line.
    Fail,
}

/// A record left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub line: u64,
    pub reason: String,
}

/// The usable records of a file, each with its 1-based line number, and the bad ones.
#[derive(Debug, Clone)]
pub struct Records<T> {
    pub path: PathBuf,
    pub items: Vec<(u64, T)>,
    pub bad: Vec<BadRecord>,
}

impl<T> Records<T> {
    /// One line per bad record, for the user (at most `max` lines, then a count).
    pub fn bad_report(&self, max: usize) -> String {
        let mut s = String::new();
        for b in self.bad.iter().take(max) {
            s.push_str(&format!(
                "{}:{}: {}\n",
                self.path.display(),
                b.line,
                b.reason
            ));
        }
        if self.bad.len() > max {
            s.push_str(&format!("... and {} more\n", self.bad.len() - max));
        }
        s
    }
}

/// Reads a JSON-lines file, turning each non-blank line into a `T` with `parse`.
/// Lines that are not JSON, or that `parse` rejects, are bad records.
pub fn read_records<T>(
    path: &Path,
    on_bad: OnBad,
    mut parse: impl FnMut(Value) -> std::result::Result<T, String>,
) -> Result<Records<T>> {
    let file = std::fs::File::open(path).map_err(|e| TextError::read(path, e))?;
    let mut out = Records {
        path: path.to_path_buf(),
        items: Vec::new(),
        bad: Vec::new(),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| TextError::read(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let result = match std::str::from_utf8(&buf) {
            Err(e) => Err(format!(
                "not valid UTF-8 (byte offset {} in the file)",
                offset + e.valid_up_to() as u64
            )),
            Ok(text) if text.trim().is_empty() => {
                offset += n as u64;
                continue;
            }
            Ok(text) => serde_json::from_str::<Value>(text)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(&mut parse),
        };
        offset += n as u64;
        match result {
            Ok(v) => out.items.push((line, v)),
            Err(reason) if on_bad == OnBad::Fail => {
                return Err(TextError::BadRecord {
                    path: path.to_path_buf(),
                    line,
                    reason: format!("{reason} (pass --on-bad skip to leave bad records out)"),
                })
            }
            Err(reason) => out.bad.push(BadRecord { line, reason }),
        }
    }
    if out.items.is_empty() {
        return Err(TextError::NoRecords {
            path: path.to_path_buf(),
            bad: out.bad.len(),
        });
    }
    Ok(out)
}

/// Reads dialogues in the common chat format, one per line:
/// `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`.
/// A usable dialogue has non-empty contents, a system message only first, and at least
/// one assistant message (there is nothing to learn from otherwise).
pub fn read_conversations(path: &Path, on_bad: OnBad) -> Result<Records<Conversation>> {
    read_records(path, on_bad, parse_conversation)
}

/// Checks one chat record.
pub fn parse_conversation(v: Value) -> std::result::Result<Conversation, String> {
    let out = check_messages(&v)?;
    if !out.iter().any(|m| m.role == Role::Assistant) {
        return Err("no assistant message: nothing to learn from".into());
    }
    Ok(Conversation::new(out))
}

/// The `messages` list of a record: known roles, non-empty contents, system only first.
fn check_messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let Some(msgs) = v.get("messages") else {
        return Err(
            "no \"messages\" field (expected {\"messages\": [{\"role\": ..., \"content\": ...}]})"
                .into(),
        );
    };
    let Some(msgs) = msgs.as_array() else {
        return Err("\"messages\" is not a list".into());
    };
    if msgs.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let n = i + 1;
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(r) => {
                return Err(format!(
                    "message {n}: unknown role \"{r}\" (expected system, user or assistant)"
                ))
            }
            None => return Err(format!("message {n}: no \"role\" string")),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) => s,
            Some(_) => return Err(format!("message {n}: \"content\" is not a string")),
            None => return Err(format!("message {n}: no \"content\"")),
        };
        if content.trim().is_empty() {
            return Err(format!("message {n} ({}): empty content", role.as_str()));
        }
        if role == Role::System && i > 0 {
            return Err(format!("message {n}: a system message may only come first"));
        }
        out.push(Message::new(role, content.clone()));
    }
    Ok(out)
}

/// Reads preference records: pairs (`{"prompt": [...], "chosen": "...", "rejected": "..."}`)
/// and ranked lists (`{"prompt": [...], "ranked": ["best", ..., "worst"]}`) in one file
/// or mixed; a pair becomes a ranked list of two.
pub fn read_preferences(path: &Path, on_bad: OnBad) -> Result<Records<RankedComparison>> {
    read_records(path, on_bad, parse_preference)
}

/// Checks one preference record: a prompt that is a conversation ending in a user turn,
/// and two or more distinct non-empty answers.
pub fn parse_preference(v: Value) -> std::result::Result<RankedComparison, String> {
    let Some(prompt) = v.get("prompt") else {
        return Err(
            "no \"prompt\" field (expected {\"prompt\": [messages], \"chosen\": ..., \"rejected\": ...} or {\"prompt\": [...], \"ranked\": [...]})".into(),
        );
    };
    let prompt = match prompt {
        Value::String(s) => vec![Message::user(s.clone())],
        other => {
            let conv = serde_json::json!({ "messages": other });
            check_messages(&conv)?
        }
    };
    if prompt.last().map(|m| m.role) != Some(Role::User) {
        return Err("the prompt must end with a user message".into());
    }
    let text = |field: &str, x: &Value| -> std::result::Result<String, String> {
        match x.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
            Some(_) => Err(format!("\"{field}\" is empty")),
            None => Err(format!("\"{field}\" is not a string")),
        }
    };
    let ranked = match (v.get("ranked"), v.get("chosen"), v.get("rejected")) {
        (Some(r), _, _) => {
            let list = r.as_array().ok_or("\"ranked\" is not a list")?;
            list.iter()
                .map(|x| text("ranked", x))
                .collect::<std::result::Result<Vec<_>, _>>()?
        }
        (None, Some(c), Some(r)) => vec![text("chosen", c)?, text("rejected", r)?],
        _ => return Err("needs \"chosen\" and \"rejected\", or \"ranked\"".into()),
    };
    if ranked.len() < 2 {
        return Err("a ranking needs at least two answers".into());
    }
    for (i, a) in ranked.iter().enumerate() {
        if ranked[..i].contains(a) {
            return Err(format!("answer {} repeats an earlier one", i + 1));
        }
    }
    Ok(RankedComparison { prompt, ranked })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), body).unwrap();
        f
    }

    #[test]
    fn bad_records_are_reported_by_line_or_fail_the_read() {
        let f = file(concat!(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#,
            "\n\n",
            "not json\n",
            r#"{"messages":[{"role":"bot","content":"x"},{"role":"assistant","content":"y"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"  "},{"role":"assistant","content":"y"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"q"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"q"},{"role":"system","content":"s"},{"role":"assistant","content":"a"}]}"#,
            "\n",
        ));
        let r = read_conversations(f.path(), OnBad::Skip).unwrap();
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].0, 1);
        let lines: Vec<u64> = r.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7]);
        assert!(r.bad[0].reason.starts_with("not JSON"), "{:?}", r.bad[0]);
        assert!(r.bad[1].reason.contains("unknown role \"bot\""));
        assert!(r.bad[2].reason.contains("empty content"));
        assert!(r.bad[3].reason.contains("no assistant message"));
        assert!(r.bad[4]
            .reason
            .contains("system message may only come first"));
        assert!(r.bad_report(2).contains("... and 3 more"));

        let err = read_conversations(f.path(), OnBad::Fail)
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3: not JSON"), "{err}");
    }

    #[test]
    fn preference_pairs_and_rankings_read_together_with_bad_lines_named() {
        let f = file(concat!(
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"good","rejected":"bad"}"#,
            "\n",
            r#"{"prompt":"q2","ranked":["a","b","c"]}"#,
            "\n",
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"same","rejected":"same"}"#,
            "\n",
            r#"{"prompt":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"chosen":"x","rejected":"y"}"#,
            "\n",
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":"x"}"#,
            "\n",
            r#"{"prompt":[{"role":"user","content":"q"}],"ranked":["only"]}"#,
            "\n",
            r#"{"prompt":[{"role":"robot","content":"q"}],"chosen":"x","rejected":"y"}"#,
            "\n",
        ));
        let r = read_preferences(f.path(), OnBad::Skip).unwrap();
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[0].1.ranked, vec!["good", "bad"]);
        assert_eq!(r.items[1].1.prompt, vec![Message::user("q2")]);
        let reasons: Vec<(u64, &str)> = r.bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].1.contains("repeats"), "{reasons:?}");
        assert!(reasons[1].1.contains("end with a user"), "{reasons:?}");
        assert!(reasons[2].1.contains("needs \"chosen\""), "{reasons:?}");
        assert!(reasons[3].1.contains("at least two"), "{reasons:?}");
        assert!(reasons[4].1.contains("unknown role"), "{reasons:?}");
    }

    #[test]
    fn a_file_with_nothing_usable_is_an_error() {
        let f = file("{}\n[1]\n");
        let err = read_conversations(f.path(), OnBad::Skip)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no usable records (2 bad ones were skipped)"),
            "{err}"
        );
    }

    #[test]
    fn invalid_utf8_is_a_bad_record_with_its_offset() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut body =
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#
                .to_vec();
        body.extend_from_slice(b"\n\xff\xfe\n");
        std::fs::write(f.path(), body).unwrap();
        let r = read_conversations(f.path(), OnBad::Skip).unwrap();
        assert_eq!(r.bad[0].line, 2);
        assert!(r.bad[0].reason.contains("UTF-8"));
    }
}
