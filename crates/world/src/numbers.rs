//! Reading the numbers an answer states, in either language: digits with thousands
//! separators and decimals, scale words (million, billion, 万, 亿), and ordinals
//! (fourth, 第四), so the judge can compare them with the truth.

const ORDINALS: [&str; 10] = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
];
const HAN_DIGITS: [char; 10] = ['一', '二', '三', '四', '五', '六', '七', '八', '九', '十'];

/// Every number stated in `text`, in order.
pub fn numbers(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut s = String::new();
            while i < chars.len() {
                let d = chars[i];
                if d.is_ascii_digit() {
                    s.push(d);
                } else if d == ',' && group_follows(&chars, i + 1) {
                    // 1,000: a separator, not a list comma.
                } else if d == '.' && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()) {
                    s.push('.');
                } else {
                    break;
                }
                i += 1;
            }
            let mut v: f64 = s.parse().unwrap_or(0.0);
            let rest: String = chars[i..]
                .iter()
                .take(12)
                .collect::<String>()
                .trim_start()
                .to_lowercase();
            for (word, scale) in [
                ("million", 1e6),
                ("billion", 1e9),
                ("thousand", 1e3),
                ("万", 1e4),
                ("亿", 1e8),
            ] {
                if rest.starts_with(word) {
                    v *= scale;
                    break;
                }
            }
            out.push(v);
            continue;
        }
        if c == '第' {
            if let Some(k) = chars
                .get(i + 1)
                .and_then(|n| HAN_DIGITS.iter().position(|h| h == n))
            {
                out.push((k + 1) as f64);
                i += 2;
                continue;
            }
        }
        if c.is_ascii_alphabetic() && (i == 0 || !chars[i - 1].is_ascii_alphabetic()) {
            let word: String = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if let Some(k) = ORDINALS.iter().position(|o| word.eq_ignore_ascii_case(o)) {
                out.push((k + 1) as f64);
            }
            i += word.len();
            continue;
        }
        i += 1;
    }
    out
}

fn group_follows(chars: &[char], at: usize) -> bool {
    chars.len() >= at + 3
        && chars[at..at + 3].iter().all(|c| c.is_ascii_digit())
        && !chars.get(at + 3).is_some_and(|c| c.is_ascii_digit())
}

/// `a` is within relative `tol` of `b` (exactly equal when `tol` is 0).
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    if tol == 0.0 {
        (a - b).abs() < 1e-9
    } else {
        (a - b).abs() <= tol * b.abs().max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_in_both_languages() {
        assert_eq!(numbers("France has about 68 million people."), vec![68e6]);
        assert_eq!(numbers("about 1.4 billion"), vec![1.4e9]);
        assert_eq!(numbers("法国的人口约6800万。"), vec![6.8e7]);
        assert_eq!(numbers("中国的人口约14.1亿。"), vec![14.1e8]);
        assert_eq!(numbers("Mars is the fourth planet."), vec![4.0]);
        assert_eq!(numbers("火星是离太阳第四近的行星。"), vec![4.0]);
        assert_eq!(
            numbers("20 + 40 = 60, 3 + 5 = 8. 1,000 steps"),
            vec![20.0, 40.0, 60.0, 3.0, 5.0, 8.0, 1000.0]
        );
        assert!(numbers("No numbers firstly here.").is_empty());
    }
}
