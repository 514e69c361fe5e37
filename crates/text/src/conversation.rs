//! Conversations and preference records, in the JSON-lines formats the field shares:
//! `{"messages":[{"role":"user","content":"..."}]}` for dialogues and
//! `{"prompt":..,"chosen":..,"rejected":..}` for comparisons.

use serde::{Deserialize, Serialize};

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A dialogue: the unit of supervised fine-tuning and of chat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<Message>,
}

impl Conversation {
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages }
    }
}

/// A pairwise preference: for this prompt (a conversation ending in a user turn),
/// people preferred `chosen` over `rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    pub prompt: Vec<Message>,
    pub chosen: String,
    pub rejected: String,
}

/// A ranked list of K answers to one prompt, best first (the InstructGPT form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedComparison {
    pub prompt: Vec<Message>,
    pub ranked: Vec<String>,
}

impl RankedComparison {
    /// All K*(K-1)/2 ordered pairs implied by the ranking.
    pub fn pairs(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        for i in 0..self.ranked.len() {
            for j in i + 1..self.ranked.len() {
                out.push(Comparison {
                    prompt: self.prompt.clone(),
                    chosen: self.ranked[i].clone(),
                    rejected: self.ranked[j].clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_json_matches_the_common_format() {
        let c = Conversation::new(vec![Message::user("hi"), Message::assistant("hello")]);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(
            s,
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}"#
        );
        let back: Conversation = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ranking_expands_to_pairs() {
        let r = RankedComparison {
            prompt: vec![Message::user("q")],
            ranked: vec!["a".into(), "b".into(), "c".into()],
        };
        let p = r.pairs();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].chosen.as_str(), p[0].rejected.as_str()), ("a", "b"));
        assert_eq!((p[2].chosen.as_str(), p[2].rejected.as_str()), ("b", "c"));
    }
}
