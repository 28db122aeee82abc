//! Redis glob patterns (`*`, `?`, `[...]`, `\x`), matched exactly as Redis' `stringmatchlen` does,
//! so the memory backend and L1 invalidation agree with `SCAN MATCH` on Redis.

/// Whether `text` matches the Redis glob `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    matches(pattern, text, 0)
}

fn matches(pattern: &[u8], string: &[u8], depth: u32) -> bool {
    // A faithful port of Redis 7's `stringmatchlen` (case-sensitive), with its recursion guard.
    if depth > 1000 {
        return false;
    }
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if matches(&pattern[p + 1..], &string[s..], depth + 1) {
                        return true;
                    }
                    s += 1;
                }
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = pattern.get(p) == Some(&b'^');
                if not {
                    p += 1;
                }
                let mut matched = false;
                let c = string[s];
                loop {
                    if p >= pattern.len() {
                        // Unterminated class: the pattern's end closes it.
                        p -= 1;
                        break;
                    } else if pattern[p] == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        if pattern[p] == c {
                            matched = true;
                        }
                    } else if pattern[p] == b']' {
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut lo, mut hi) = (pattern[p], pattern[p + 2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p += 2;
                        if (lo..=hi).contains(&c) {
                            matched = true;
                        }
                    } else if pattern[p] == c {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            other => {
                let literal = if other == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    other
                };
                if literal != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == pattern.len() && s == string.len()
}

/// Escapes every glob metacharacter of `literal` so it matches only itself.
pub fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matcher agrees with Redis on the usual metacharacters.
    #[test]
    fn matches_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", false),
            ("a*", "a", true),
            ("*", "abc", true),
            ("a*", "abc", true),
            ("a*", "bac", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[ab]x", "bx", true),
            ("[^ab]x", "bx", false),
            ("[a-c]x", "bx", true),
            ("[c-a]x", "bx", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:mail", false),
            ("**a", "bba", true),
            ("[", "x", false),
            ("a\\", "a\\", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                *expected,
                "{pattern} ~ {text}"
            );
        }
    }

    /// An escaped literal matches itself and nothing else.
    #[test]
    fn escape_makes_literals() {
        for literal in ["plain", "a*b", "q?", "[x]", "back\\slash"] {
            let escaped = escape(literal);
            assert!(
                glob_match(escaped.as_bytes(), literal.as_bytes()),
                "{literal}"
            );
            assert!(!glob_match(escaped.as_bytes(), b"other"), "{literal}");
        }
    }
}
