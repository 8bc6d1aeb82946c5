//! Topic patterns of pm2-axon's `sub-emitter` (docs/protocols.md §2.3).
//!
//! JS turns a pattern into a regex: escape it, replace every `*` with a
//! greedy `(.+)`, anchor with `^…$`. So `*` matches one or more characters
//! (crossing `:`), but not line terminators, and each capture is handed to
//! the listener before the message arguments. This is the same matcher
//! without a regex engine: literal pieces between stars, greedy stars with
//! backtracking, which gives the same captures as the regex.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    /// Literal pieces around the stars; `pieces.len() == stars + 1`.
    pieces: Vec<String>,
}

impl Pattern {
    pub fn new(pattern: &str) -> Self {
        Pattern {
            source: pattern.to_owned(),
            pieces: pattern.split('*').map(str::to_owned).collect(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The captures if `topic` matches (empty for a pattern without `*`).
    pub fn captures(&self, topic: &str) -> Option<Vec<String>> {
        let first = &self.pieces[0];
        let rest = topic.strip_prefix(first.as_str())?;
        let mut caps = Vec::with_capacity(self.pieces.len() - 1);
        if self.match_from(1, rest, &mut caps) {
            Some(caps)
        } else {
            None
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.captures(topic).is_some()
    }

    fn match_from(&self, piece: usize, input: &str, caps: &mut Vec<String>) -> bool {
        if piece == self.pieces.len() {
            return input.is_empty();
        }
        let literal = &self.pieces[piece];
        // The star before `literal` takes 1.. chars, no line terminators,
        // longest first (greedy), backtracking on failure.
        let limit = input.find(is_line_terminator).unwrap_or(input.len());
        let ends: Vec<usize> = input[..limit]
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .collect();
        for &end in ends.iter().rev() {
            if let Some(after) = input[end..].strip_prefix(literal.as_str()) {
                caps.push(input[..end].to_owned());
                if self.match_from(piece + 1, after, caps) {
                    return true;
                }
                caps.pop();
            }
        }
        false
    }
}

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, t: &str) -> Option<Vec<String>> {
        Pattern::new(p).captures(t)
    }

    #[test]
    fn measured_semantics() {
        assert_eq!(caps("*", "log:out"), Some(vec!["log:out".into()]));
        assert_eq!(caps("log:*", "log:out"), Some(vec!["out".into()]));
        assert_eq!(caps("process:event", "process:event"), Some(vec![]));
        assert_eq!(caps("a.b", "axb"), None);
        assert_eq!(caps("log:*", "log:"), None, "star needs one char");
        assert_eq!(caps("*", ""), None);
    }

    #[test]
    fn greedy_like_the_regex() {
        // /^(.+):(.+)$/.exec('a:b:c') → ['a:b', 'c']
        assert_eq!(caps("*:*", "a:b:c"), Some(vec!["a:b".into(), "c".into()]));
        assert_eq!(caps("*x*x", "axbxcx"), Some(vec!["axb".into(), "c".into()]));
        assert_eq!(caps("a*", "a\nb"), None, "no line terminators");
        assert_eq!(caps("é*", "éè"), Some(vec!["è".into()]));
        assert_eq!(caps("**", "ab"), Some(vec!["a".into(), "b".into()]));
    }
}
