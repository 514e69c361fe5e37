//! The facts of the world, parsed once from the TSV tables shipped in `data/`, as generic
//! entities (a name in both languages plus attribute values) so that every generator and
//! the judge treat countries, elements, planets and units alike.

use std::sync::OnceLock;

/// What sort of thing an entity is; it decides which attributes it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Country,
    Element,
    Planet,
    Unit,
}

/// An attribute one can ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    Capital,
    Continent,
    Population,
    Language,
    Symbol,
    Number,
    Order,
    Moons,
    Class,
    Size,
}

impl Attr {
    pub fn kind(self) -> Kind {
        match self {
            Attr::Capital | Attr::Continent | Attr::Population | Attr::Language => Kind::Country,
            Attr::Symbol | Attr::Number => Kind::Element,
            Attr::Order | Attr::Moons | Attr::Class => Kind::Planet,
            Attr::Size => Kind::Unit,
        }
    }

    pub fn of_kind(kind: Kind) -> &'static [Attr] {
        match kind {
            Kind::Country => &[
                Attr::Capital,
                Attr::Continent,
                Attr::Population,
                Attr::Language,
            ],
            Kind::Element => &[Attr::Symbol, Attr::Number],
            Kind::Planet => &[Attr::Order, Attr::Moons, Attr::Class],
            Kind::Unit => &[Attr::Size],
        }
    }
}

/// A value in both languages: `show` is how prose states it, `key` what an answer must
/// contain for the judge to accept it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text {
        show: [String; 2],
        key: [String; 2],
    },
    /// An exact count (atomic number, moons, units).
    Int(i64),
    /// A position counted from 1 (planets from the Sun).
    Ordinal(i64),
    /// People, in millions.
    Millions(f64),
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: Kind,
    /// `[english, chinese]`. Chinese element names carry 元素 so that a single character
    /// (金, 铁) is never mistaken for part of another word.
    pub name: [String; 2],
    pub attrs: Vec<(Attr, Value)>,
    /// A large city that is not the capital (for false premises), countries only.
    pub city: Option<[String; 2]>,
    /// Units only: the smaller unit, plural, `[english, chinese]`.
    pub small: Option<[String; 2]>,
}

impl Entity {
    pub fn get(&self, attr: Attr) -> Option<&Value> {
        self.attrs.iter().find(|(a, _)| *a == attr).map(|(_, v)| v)
    }
}

pub struct World {
    pub entities: Vec<Entity>,
}

const COUNTRIES: &str = include_str!("../data/countries.tsv");
const ELEMENTS: &str = include_str!("../data/elements.tsv");
const PLANETS: &str = include_str!("../data/planets.tsv");
const UNITS: &str = include_str!("../data/units.tsv");

pub const CONTINENTS: [(&str, [&str; 2]); 6] = [
    ("europe", ["Europe", "欧洲"]),
    ("asia", ["Asia", "亚洲"]),
    ("africa", ["Africa", "非洲"]),
    ("north_america", ["North America", "北美洲"]),
    ("south_america", ["South America", "南美洲"]),
    ("oceania", ["Oceania", "大洋洲"]),
];

pub const CLASSES: [(&str, [&str; 2], [&str; 2]); 3] = [
    ("rocky", ["a rocky planet", "岩质行星"], ["rocky", "岩质"]),
    (
        "gas_giant",
        ["a gas giant", "气态巨行星"],
        ["gas giant", "气态巨行星"],
    ),
    (
        "ice_giant",
        ["an ice giant", "冰巨星"],
        ["ice giant", "冰巨星"],
    ),
];

fn text(en: &str, zh: &str) -> Value {
    Value::Text {
        show: [en.into(), zh.into()],
        key: [en.into(), zh.into()],
    }
}

fn rows(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::trim).collect())
}

// The tables are compiled into the crate and checked by tests, so a malformed row is a
// programming error caught before release; still, skip rather than panic.
fn num(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

fn load() -> World {
    let mut entities = Vec::new();
    for r in rows(COUNTRIES).filter(|r| r.len() == 10) {
        let continent = CONTINENTS
            .iter()
            .find(|c| c.0 == r[4])
            .map(|c| c.1)
            .unwrap_or(["?", "?"]);
        let city = (r[8] != "-").then(|| [r[8].to_string(), r[9].to_string()]);
        entities.push(Entity {
            kind: Kind::Country,
            name: [r[0].into(), r[1].into()],
            attrs: vec![
                (Attr::Capital, text(r[2], r[3])),
                (Attr::Continent, text(continent[0], continent[1])),
                (Attr::Population, Value::Millions(num(r[5]) as f64)),
                (Attr::Language, text(r[6], r[7])),
            ],
            city,
            small: None,
        });
    }
    for r in rows(ELEMENTS).filter(|r| r.len() == 4) {
        entities.push(Entity {
            kind: Kind::Element,
            name: [r[2].to_lowercase(), format!("{}元素", r[3])],
            attrs: vec![
                (Attr::Symbol, text(r[1], r[1])),
                (Attr::Number, Value::Int(num(r[0]))),
            ],
            city: None,
            small: None,
        });
    }
    for r in rows(PLANETS).filter(|r| r.len() == 5) {
        let (_, show, key) = CLASSES
            .iter()
            .find(|c| c.0 == r[4])
            .copied()
            .unwrap_or(CLASSES[0]);
        entities.push(Entity {
            kind: Kind::Planet,
            name: [r[0].into(), r[1].into()],
            attrs: vec![
                (Attr::Order, Value::Ordinal(num(r[2]))),
                (Attr::Moons, Value::Int(num(r[3]))),
                (
                    Attr::Class,
                    Value::Text {
                        show: [show[0].into(), show[1].into()],
                        key: [key[0].into(), key[1].into()],
                    },
                ),
            ],
            city: None,
            small: None,
        });
    }
    for r in rows(UNITS).filter(|r| r.len() == 5) {
        entities.push(Entity {
            kind: Kind::Unit,
            name: [r[0].into(), r[1].into()],
            attrs: vec![(Attr::Size, Value::Int(num(r[2])))],
            city: None,
            small: Some([r[3].into(), r[4].into()]),
        });
    }
    World { entities }
}

/// The world's facts, parsed on first use.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(load)
}

impl World {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = (usize, &Entity)> {
        self.entities
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.kind == kind)
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.entities
            .iter()
            .position(|e| e.name.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }
}

/// FNV-1a: a hash that is the same on every platform and release, unlike std's hasher,
/// so a seed picks the same held-out split everywhere.
pub fn fnv(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// Which entities are held out for a seed: about a sixth of each kind (at least one),
/// chosen by hash so the choice is stable and independent of table order. Units are too
/// few and too basic to hold out; arithmetic and made-up names have their own split.
pub fn heldout_entities(seed: u64) -> Vec<bool> {
    let w = world();
    let mut held = vec![false; w.entities.len()];
    for kind in [Kind::Country, Kind::Element, Kind::Planet] {
        let mut ids: Vec<(u64, usize)> = w
            .of_kind(kind)
            .map(|(i, e)| (fnv(seed, &e.name[0]), i))
            .collect();
        ids.sort();
        let n = (ids.len() as f64 * 0.17).round().max(1.0) as usize;
        for &(_, i) in ids.iter().take(n) {
            held[i] = true;
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_completely() {
        let w = world();
        assert_eq!(w.of_kind(Kind::Country).count(), rows(COUNTRIES).count());
        assert_eq!(w.of_kind(Kind::Element).count(), rows(ELEMENTS).count());
        assert_eq!(w.of_kind(Kind::Planet).count(), 8);
        assert!(w.of_kind(Kind::Country).count() >= 100);
        assert!(w.of_kind(Kind::Element).count() >= 50);
        for e in &w.entities {
            for (_, v) in &e.attrs {
                match v {
                    Value::Int(n) | Value::Ordinal(n) => assert!(*n >= 0, "{:?}", e.name),
                    Value::Millions(m) => assert!(*m >= 1.0, "{:?}", e.name),
                    Value::Text { show, .. } => assert!(!show[0].contains('?'), "{:?}", e.name),
                }
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let w = world();
        for l in 0..2 {
            let mut names: Vec<&str> = w.entities.iter().map(|e| e.name[l].as_str()).collect();
            names.sort();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len());
        }
    }

    #[test]
    fn heldout_is_a_stable_sixth() {
        let a = heldout_entities(7);
        assert_eq!(a, heldout_entities(7));
        let n = a.iter().filter(|h| **h).count();
        assert!(n > 15 && n < 40, "{n}");
        assert_ne!(a, heldout_entities(8));
    }
}
