//! The built-in world (see issue: seeded bilingual data and a judge).
