//! The records the world exchanges with the rest of ferrochat: languages, skills, the
//! expectations a prompt carries, held-out evaluation items and the judge's verdicts.
//! They are plain serde types so that `heldout.jsonl` can be read back (or written by
//! hand for a user's own evaluation set) and judged without the generator.

use ferrochat_text::Message;
use serde::{Deserialize, Serialize};

/// The two languages of the world; every item exists in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    pub fn as_str(&self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// Index into `[english, chinese]` pairs used throughout the tables.
    pub(crate) fn idx(self) -> usize {
        match self {
            Lang::En => 0,
            Lang::Zh => 1,
        }
    }

    /// What stands between two sentences: a space in English, nothing in Chinese.
    pub(crate) fn sentence_gap(self) -> &'static str {
        self.of((" ", ""))
    }

    /// This language's side of an `(english, chinese)` pair.
    pub(crate) fn of<T>(self, pair: (T, T)) -> T {
        match self {
            Lang::En => pair.0,
            Lang::Zh => pair.1,
        }
    }
}

/// What a prompt tests. The judge reports one [`SkillScore`] per skill an answer is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skill {
    SmallTalk,
    Fact,
    FollowUp,
    FalsePremise,
    Refusal,
    Benign,
    Poem,
    Code,
    Arithmetic,
    Unknown,
    Tone,
}

impl Skill {
    pub const ALL: [Skill; 11] = [
        Skill::SmallTalk,
        Skill::Fact,
        Skill::FollowUp,
        Skill::FalsePremise,
        Skill::Refusal,
        Skill::Benign,
        Skill::Poem,
        Skill::Code,
        Skill::Arithmetic,
        Skill::Unknown,
        Skill::Tone,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Skill::SmallTalk => "small_talk",
            Skill::Fact => "fact",
            Skill::FollowUp => "follow_up",
            Skill::FalsePremise => "false_premise",
            Skill::Refusal => "refusal",
            Skill::Benign => "benign",
            Skill::Poem => "poem",
            Skill::Code => "code",
            Skill::Arithmetic => "arithmetic",
            Skill::Unknown => "unknown",
            Skill::Tone => "tone",
        }
    }
}

/// A requested register. `Brief` is a length limit rather than a mood, but people ask for
/// it the same way ("be brief"), so it lives here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    Formal,
    Friendly,
    Brief,
}

/// The shape a poem must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoemSpec {
    /// Number of lines (4 for a quatrain).
    pub lines: usize,
    /// Chinese forms: Han characters per line (5 or 7). `None` for English rhymes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chars_per_line: Option<usize>,
    /// English rhymes: lines 1-2 and 3-4 must rhyme (AABB).
    #[serde(default)]
    pub rhyme: bool,
    /// Any of these must appear in the poem (the theme).
    pub theme: Vec<String>,
}

/// The line a fix must contain and the line it must no longer contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSpec {
    pub fixed: String,
    pub buggy: String,
}

/// Everything the judge needs to know about the right answer to one prompt. A field left
/// at its default asks nothing, so a hand-written record only states what matters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    /// The answer must contain at least one of these (case-insensitive substring, or
    /// whole case-sensitive words when `cased`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<String>,
    /// The answer must contain none of these: the wrong values a guesser would list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub none_of: Vec<String>,
    /// Match `any_of`/`none_of` as case-sensitive whole words (chemical symbols).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cased: bool,
    /// A number the answer must state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Relative tolerance on `number` (populations are approximate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tolerance: f64,
    /// Only the last number counts (step-by-step arithmetic shows its working);
    /// otherwise every number stated must agree with `number`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub final_number: bool,
    /// The answer must refuse.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refuse: bool,
    /// The answer must say the premise is wrong.
    #[serde(default, skip_serializing_if = "is_false")]
    pub correction: bool,
    /// The answer must admit it does not know (the thing does not exist).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignorance: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poem: Option<PoemSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone: Option<Tone>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// One evaluation prompt with what the judge needs to score any answer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    pub id: String,
    pub skill: Skill,
    pub lang: Lang,
    /// The prompt conversation, ending in a user turn.
    pub messages: Vec<Message>,
    /// The world entity the prompt is about, if any (English name), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub expect: Expect,
}

/// The judge's finding on one skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillScore {
    pub skill: Skill,
    pub passed: bool,
    pub reason: String,
}

/// The judge's verdict on one answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 0..1. 0.6..1 when every skill passed (less for rudeness or rambling), 0..0.3 for
    /// an honest miss, and 0 for empty answers, repeated questions, wrongful refusals,
    /// harmful compliance and answers in the wrong language.
    pub score: f64,
    pub skills: Vec<SkillScore>,
    pub rude: bool,
    pub rambling: bool,
    /// Why the answer scored zero outright, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zeroed: Option<String>,
}

impl Verdict {
    /// Every skill the answer was held to passed.
    pub fn passed(&self) -> bool {
        !self.skills.is_empty() && self.skills.iter().all(|s| s.passed)
    }
}
