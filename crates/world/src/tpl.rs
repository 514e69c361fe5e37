//! Fill-in templates with named slots (`{e}`, `{v}`, ...), and the inverse: matching a text
//! against a template to recover what filled the slots. The inverse is what lets the judge
//! recognise any prompt the world wrote from its text alone.

/// Replace each `{key}` with its value.
pub fn render(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let key = &after[..close];
                match slots.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Split a template into literal pieces and slot names: `lits.len() == keys.len() + 1`.
fn pieces(template: &str) -> (Vec<&str>, Vec<&str>) {
    let mut lits = Vec::new();
    let mut keys = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        lits.push(&rest[..open]);
        keys.push(&rest[open + 1..open + close]);
        rest = &rest[open + close + 1..];
    }
    lits.push(rest);
    (lits, keys)
}

/// The literal text of a template, in pieces: what must never leak into training data
/// when the template is held out.
pub fn literals(template: &str) -> Vec<&str> {
    pieces(template).0
}

/// Match `text` against `template`; on success return each slot's captured text.
/// Slots are matched lazily left to right; every capture must be non-empty.
pub fn parse<'t>(template: &str, text: &'t str) -> Option<Vec<(String, &'t str)>> {
    let text = text.trim();
    let (lits, keys) = pieces(template);
    let mut rest = text.strip_prefix(lits[0])?;
    let mut caps = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let lit = lits[i + 1];
        let end = if i + 1 == keys.len() {
            // The last slot runs to the final literal, which must end the text.
            if !rest.ends_with(lit) || rest.len() < lit.len() {
                return None;
            }
            rest.len() - lit.len()
        } else if lit.is_empty() {
            return None;
        } else {
            rest.find(lit)?
        };
        let cap = rest[..end].trim();
        if cap.is_empty() {
            return None;
        }
        caps.push((key.to_string(), cap));
        rest = &rest[end + lit.len()..];
    }
    if keys.is_empty() && !rest.is_empty() {
        return None;
    }
    Some(caps)
}

/// The value captured for `key`.
pub fn get<'a>(caps: &'a [(String, &'a str)], key: &str) -> Option<&'a str> {
    caps.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Upper-case the first letter, for sentences that open with an element name ("iron").
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse_round_trip() {
        let t = "Why is {w} the capital of {e}?";
        let s = render(t, &[("w", "Lyon"), ("e", "France")]);
        assert_eq!(s, "Why is Lyon the capital of France?");
        let caps = parse(t, &s).unwrap();
        assert_eq!(get(&caps, "w"), Some("Lyon"));
        assert_eq!(get(&caps, "e"), Some("France"));
        assert!(parse(t, "Why is the sky blue?").is_none());
        assert_eq!(parse("Hello!", "Hello!").unwrap().len(), 0);
        assert!(parse("Hello!", "Hello! x").is_none());
        assert_eq!(
            get(
                &parse("{e}的首都是哪里？", "法国的首都是哪里？").unwrap(),
                "e"
            ),
            Some("法国")
        );
    }

    #[test]
    fn literals_split_on_slots() {
        assert_eq!(literals("a {x} b {y}"), vec!["a ", " b ", ""]);
        assert_eq!(capitalize("iron"), "Iron");
    }
}
