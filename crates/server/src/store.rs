//! The feedback store: conversations from the chat page, thumbs up/down ratings of
//! answers, and side-by-side comparisons, in SQLite (WAL, synchronous=FULL: a write
//! is on disk before it is acknowledged, so a killed server loses nothing it confirmed).
//!
//! [`Store::export`] turns comparisons, and pairs of an up-rated and a down-rated
//! answer to the same prompt, into preference records that `ferrochat reward` and
//! `ferrochat dpo` read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ferrochat_text::Message;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    system TEXT NOT NULL DEFAULT '',
    messages TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer TEXT NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer_a TEXT NOT NULL,
    answer_b TEXT NOT NULL,
    preferred INTEGER CHECK (preferred IN (0, 1)),
    comment TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL
);
";

/// A conversation as the chat page keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConversation {
    pub id: String,
    pub title: String,
    pub model: String,
    #[serde(default)]
    pub system: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub updated: u64,
}

/// A conversation in the list: no messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationSummary {
    pub id: String,
    pub title: String,
    pub model: String,
    pub updated: u64,
}

/// A thumbs up or down on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    pub conversation_id: Option<String>,
    pub model: String,
    /// The prompt: every message before the answer.
    pub messages: Vec<Message>,
    pub answer: String,
    /// true for up.
    pub up: bool,
    pub comment: String,
}

/// Two answers to one prompt, and which one a person preferred (`None`: a tie).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub conversation_id: Option<String>,
    pub model: String,
    pub messages: Vec<Message>,
    pub answers: [String; 2],
    pub preferred: Option<u8>,
    pub comment: String,
}

/// Counts of what an export wrote and passed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    /// Pairs from comparisons with a winner.
    pub from_comparisons: usize,
    /// Ties, which say nothing about which is better.
    pub ties: usize,
    /// Pairs of an up-rated and a down-rated answer to the same prompt.
    pub from_ratings: usize,
    /// Ratings with no opposite rating of the same prompt to pair with.
    pub unpaired_ratings: usize,
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

fn now() -> i64 {
    crate::openai::unix_now() as i64
}

fn to_json(m: &[Message]) -> String {
    serde_json::to_string(m).expect("messages serialise")
}

fn from_json(s: &str) -> rusqlite::Result<Vec<Message>> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the feedback database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("{}: journal mode is {mode}, not WAL", path.display());
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("{} is not a ferrochat feedback database", path.display()))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces a conversation.
    pub fn put_conversation(&self, c: &StoredConversation) -> Result<u64> {
        let t = now();
        self.conn().execute(
            "INSERT INTO conversations (id, title, model, system, messages, created, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(id) DO UPDATE SET title = ?2, model = ?3, system = ?4,
                 messages = ?5, updated = ?6",
            params![c.id, c.title, c.model, c.system, to_json(&c.messages), t],
        )?;
        Ok(t as u64)
    }

    pub fn conversation(&self, id: &str) -> Result<Option<StoredConversation>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, title, model, system, messages, updated FROM conversations WHERE id = ?1",
                [id],
                |r| {
                    Ok(StoredConversation {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        model: r.get(2)?,
                        system: r.get(3)?,
                        messages: from_json(&r.get::<_, String>(4)?)?,
                        updated: r.get::<_, i64>(5)? as u64,
                    })
                },
            )
            .optional()?)
    }

    /// Newest first.
    pub fn conversations(&self, limit: usize) -> Result<Vec<ConversationSummary>> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT id, title, model, updated FROM conversations ORDER BY updated DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = q.query_map([limit as i64], |r| {
            Ok(ConversationSummary {
                id: r.get(0)?,
                title: r.get(1)?,
                model: r.get(2)?,
                updated: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// True when there was one to delete.
    pub fn delete_conversation(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM conversations WHERE id = ?1", [id])?
            > 0)
    }

    /// Stores a rating; returns its id once it is on disk.
    pub fn add_rating(&self, r: &Rating) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO ratings (conversation_id, model, messages, answer, rating, comment, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.conversation_id,
                r.model,
                to_json(&r.messages),
                r.answer,
                if r.up { "up" } else { "down" },
                r.comment,
                now()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Stores a comparison; returns its id once it is on disk.
    pub fn add_comparison(&self, c: &Comparison) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO comparisons (conversation_id, model, messages, answer_a, answer_b, preferred, comment, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.conversation_id,
                c.model,
                to_json(&c.messages),
                c.answers[0],
                c.answers[1],
                c.preferred.map(i64::from),
                c.comment,
                now()
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The ids of every stored rating, in order.
    pub fn rating_ids(&self) -> Result<Vec<i64>> {
        let conn = self.conn();
        let mut q = conn.prepare("SELECT id FROM ratings ORDER BY id")?;
        let ids = q.query_map([], |r| r.get(0))?;
        Ok(ids.collect::<rusqlite::Result<_>>()?)
    }

    /// (ratings, comparisons) stored.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let conn = self.conn();
        let n = |t: &str| -> Result<u64> {
            Ok(
                conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })? as u64,
            )
        };
        Ok((n("ratings")?, n("comparisons")?))
    }

    /// Preference records (`{"prompt": [...], "chosen": ..., "rejected": ...}`, one JSON
    /// object per line) from every comparison with a winner and every pair of an up-rated
    /// and a down-rated answer to the same prompt, in the order they were given.
    pub fn export(&self) -> Result<(Vec<serde_json::Value>, ExportCounts)> {
        let conn = self.conn();
        let mut counts = ExportCounts::default();
        let mut out = Vec::new();
        let record =
            |prompt: &str, chosen: &str, rejected: &str| -> rusqlite::Result<serde_json::Value> {
                Ok(serde_json::json!({
                    "prompt": from_json(prompt)?,
                    "chosen": chosen,
                    "rejected": rejected,
                }))
            };
        let mut q = conn.prepare(
            "SELECT messages, answer_a, answer_b, preferred FROM comparisons ORDER BY id",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let (m, a, b): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            match r.get::<_, Option<i64>>(3)? {
                Some(0) if a != b => out.push(record(&m, &a, &b)?),
                Some(1) if a != b => out.push(record(&m, &b, &a)?),
                _ => counts.ties += 1,
            }
        }
        counts.from_comparisons = out.len();
        // ratings: per prompt, every up-rated answer over every down-rated one
        let mut by_prompt: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut q = conn.prepare("SELECT messages, answer, rating FROM ratings ORDER BY id")?;
        let mut rows = q.query([])?;
        let mut order = Vec::new();
        while let Some(r) = rows.next()? {
            let m: String = r.get(0)?;
            let (answer, rating): (String, String) = (r.get(1)?, r.get(2)?);
            let e = by_prompt.entry(m.clone()).or_insert_with(|| {
                order.push(m.clone());
                Default::default()
            });
            let list = if rating == "up" { &mut e.0 } else { &mut e.1 };
            if !list.contains(&answer) {
                list.push(answer);
            }
        }
        for m in order {
            let (ups, downs) = &by_prompt[&m];
            let mut paired = 0;
            for u in ups {
                for d in downs.iter().filter(|d| *d != u) {
                    out.push(record(&m, u, d)?);
                    paired += 1;
                }
            }
            counts.from_ratings += paired;
            if paired == 0 {
                counts.unpaired_ratings += ups.len() + downs.len();
            }
        }
        Ok((out, counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_round_trips_and_exports_preference_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("f.db")).unwrap();
        let q = vec![Message::user("2+2?")];
        let rate = |a: &str, up| Rating {
            conversation_id: Some("c1".into()),
            model: "chat".into(),
            messages: q.clone(),
            answer: a.into(),
            up,
            comment: String::new(),
        };
        s.add_rating(&rate("4", true)).unwrap();
        s.add_rating(&rate("5", false)).unwrap();
        s.add_rating(&Rating {
            messages: vec![Message::user("alone")],
            ..rate("x", true)
        })
        .unwrap();
        let cmp = |p| Comparison {
            conversation_id: None,
            model: "chat".into(),
            messages: q.clone(),
            answers: ["four".into(), "three".into()],
            preferred: p,
            comment: "".into(),
        };
        s.add_comparison(&cmp(Some(1))).unwrap();
        s.add_comparison(&cmp(None)).unwrap();
        assert_eq!(s.counts().unwrap(), (3, 2));
        let (recs, counts) = s.export().unwrap();
        assert_eq!(
            counts,
            ExportCounts {
                from_comparisons: 1,
                ties: 1,
                from_ratings: 1,
                unpaired_ratings: 1
            }
        );
        assert_eq!(recs[0]["chosen"], "three");
        assert_eq!(recs[0]["rejected"], "four");
        assert_eq!(recs[1]["chosen"], "4");
        assert_eq!(recs[1]["rejected"], "5");
        // the records read back as preferences
        let text: String = recs.iter().map(|r| format!("{r}\n")).collect();
        for (i, line) in text.lines().enumerate() {
            ferrochat_text::parse_preference(serde_json::from_str(line).unwrap())
                .unwrap_or_else(|e| panic!("record {i} does not parse: {e}"));
        }

        let c = StoredConversation {
            id: "c1".into(),
            title: "sums".into(),
            model: "chat".into(),
            system: "be brief".into(),
            messages: vec![Message::user("2+2?"), Message::assistant("4")],
            updated: 0,
        };
        s.put_conversation(&c).unwrap();
        let back = s.conversation("c1").unwrap().unwrap();
        assert_eq!(back.messages, c.messages);
        assert_eq!(s.conversations(10).unwrap().len(), 1);
        assert!(s.delete_conversation("c1").unwrap());
        assert!(s.conversation("c1").unwrap().is_none());
    }
}
