//! "Did you mean" suggestions for misspelled names.

/// Largest edit distance at which a candidate is still suggested.
const MAX_DISTANCE: usize = 2;

/// Shortest text for which a prefix relation counts as a match.
const MIN_PREFIX: usize = 3;

/// The candidate `unknown` most likely meant, if any is close enough.
///
/// A candidate matches when its case-insensitive Levenshtein distance to
/// `unknown` is at most 2 (and smaller than `unknown`'s length, so that
/// very short names do not match everything), or when one of the two is a
/// prefix of the other (at least 3 characters long). The closest match
/// wins; prefix matches rank after distance matches; ties go to the
/// earliest candidate. An exact match is never suggested.
pub fn suggest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wanted: Vec<char> = unknown.to_lowercase().chars().collect();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == unknown {
            continue;
        }
        let Some(score) = score(&wanted, candidate) else {
            continue;
        };
        let better = match best {
            Some((best_score, _)) => score < best_score,
            None => true,
        };
        if better {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Ranking of `candidate` for the lower-cased `wanted`; lower is better,
/// `None` is no match.
fn score(wanted: &[char], candidate: &str) -> Option<usize> {
    let have: Vec<char> = candidate.to_lowercase().chars().collect();
    let distance = levenshtein(wanted, &have);
    if distance <= MAX_DISTANCE && distance < wanted.len() {
        return Some(distance);
    }
    let shorter = wanted.len().min(have.len());
    let is_prefix = wanted.starts_with(&have) || have.starts_with(wanted);
    (shorter >= MIN_PREFIX && is_prefix).then_some(MAX_DISTANCE + 1)
}

/// Edit distance (insertions, deletions, substitutions) between `a` and `b`.
fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Appends `; did you mean `x`?` to a serde "unknown field" or "unknown
/// variant" message (``unknown field `x`, expected one of `a`, `b` ``,
/// ``expected `a` or `b` ``, ``expected `a` ``) when a listed name is close.
/// Other messages are returned unchanged.
pub(crate) fn with_suggestion(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once("`, expected ") else {
        return message.to_string();
    };
    let candidates = expected.split('`').skip(1).step_by(2);
    match suggest(unknown, candidates) {
        Some(candidate) => format!("{message}; did you mean `{candidate}`?"),
        None => message.to_string(),
    }
}

/// Lists names the way serde does: `` `a` ``, `` `a` or `b` ``, or
/// ``one of `a`, `b`, `c` ``.
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_string(),
        [one] => format!("`{one}`"),
        [one, two] => format!("`{one}` or `{two}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

/// ``unknown WHAT `name`, expected ...`` with a suggestion when one of
/// `candidates` is close.
pub(crate) fn unknown_name(what: &str, name: &str, candidates: &[&str]) -> String {
    let mut message = format!("unknown {what} `{name}`, expected {}", one_of(candidates));
    if let Some(candidate) = suggest(name, candidates.iter().copied()) {
        message.push_str(&format!("; did you mean `{candidate}`?"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names() {
        assert_eq!(suggest("topics", ["topic", "group"]), Some("topic"));
        assert_eq!(suggest("sink", ["sources", "sinks"]), Some("sinks"));
        assert_eq!(suggest("shrads", ["name", "shards"]), Some("shards"));
        assert_eq!(suggest("Type", ["type"]), Some("type"));
        assert_eq!(suggest("nmae", ["name"]), Some("name"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            suggest("inbox", ["sink_max_events", "inbox_max_events"]),
            Some("inbox_max_events")
        );
        assert_eq!(suggest("listen_address", ["listen"]), Some("listen"));
        assert_eq!(suggest("in", ["inbox_max_events"]), None);
    }

    #[test]
    fn closest_and_first_wins() {
        assert_eq!(
            suggest("max_byte", ["max_bytes", "max_byte_"]),
            Some("max_bytes")
        );
        assert_eq!(suggest("abcd", ["abcx", "abcy"]), Some("abcx"));
        assert_eq!(suggest("kafak", ["kafka_x", "kafka"]), Some("kafka"));
    }

    #[test]
    fn nothing_close() {
        assert_eq!(suggest("zzzzzz", ["name", "shards"]), None);
        assert_eq!(suggest("x", ["id", "ab"]), None);
        assert_eq!(suggest("name", ["name"]), None);
        assert_eq!(suggest("", ["a"]), None);
        assert_eq!(suggest("a", std::iter::empty()), None);
    }

    #[test]
    fn levenshtein_distances() {
        let d = |a: &str, b: &str| {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            levenshtein(&a, &b)
        };
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("flaw", "lawn"), 2);
        assert_eq!(d("same", "same"), 0);
    }

    #[test]
    fn lists() {
        assert_eq!(one_of(&[]), "nothing");
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b"]), "`a` or `b`");
        assert_eq!(one_of(&["a", "b", "c"]), "one of `a`, `b`, `c`");
        assert_eq!(
            unknown_name("sink", "otu", &["out", "err"]),
            "unknown sink `otu`, expected `out` or `err`; did you mean `out`?"
        );
    }

    #[test]
    fn messages() {
        assert_eq!(
            with_suggestion("unknown field `topics`, expected one of `topic`, `group`, `x`"),
            "unknown field `topics`, expected one of `topic`, `group`, `x`; did you mean `topic`?"
        );
        assert_eq!(
            with_suggestion("unknown field `topics`, expected `topic` or `group`"),
            "unknown field `topics`, expected `topic` or `group`; did you mean `topic`?"
        );
        assert_eq!(
            with_suggestion("unknown variant `keys`, expected `partition` or `key`"),
            "unknown variant `keys`, expected `partition` or `key`; did you mean `key`?"
        );
        assert_eq!(
            with_suggestion("unknown field `zzz`, expected `topic`"),
            "unknown field `zzz`, expected `topic`"
        );
        assert_eq!(
            with_suggestion("unknown field `a`, there are no fields"),
            "unknown field `a`, there are no fields"
        );
        assert_eq!(with_suggestion("missing field `x`"), "missing field `x`");
    }
}
