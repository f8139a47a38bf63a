//! Glob patterns: `*` matches any run of characters (slashes included), `?` one character.
//!
//! Written here, not taken from wildmatch (which the model used before): wildmatch compiles
//! every pattern into an allocated state table before matching, and a policy runs in a
//! fresh instance per request, where the ~30 known-sidecar patterns are each matched once
//! or twice. Compiling them cost more than classifying the pod; this matcher allocates
//! nothing. Same semantics as wildmatch (a differential test keeps it so).

/// `registry:5000/org/app:1.2@sha256:…` → `registry:5000/org/app`.
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag follows the last ':' only when no '/' comes after it (a registry port does).
    match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    }
}

/// The checks every name and image pattern in settings passes (known sidecars, selectors,
/// resource defaults): something to match, no white space, and for an image no tag or
/// digest, since image patterns match the repository only.
pub fn validate_patterns(name: Option<&str>, image: Option<&str>) -> Result<(), String> {
    if let Some(name) = name {
        validate_pattern("name", name)?;
    }
    if let Some(image) = image {
        validate_pattern("image", image)?;
        if image_repository(image) != image {
            return Err(format!(
                "image pattern {image:?} names a tag or digest; image patterns match the repository only (e.g. \"*/proxyv2\")"
            ));
        }
    }
    Ok(())
}

fn validate_pattern(field: &str, pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err(format!("{field} pattern is empty"));
    }
    if pattern.chars().any(char::is_whitespace) {
        return Err(format!("{field} pattern {pattern:?} contains white space"));
    }
    Ok(())
}

pub fn matches(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// A pattern with its shape worked out: where its stars are, whether it has a `?`. The
/// known-sidecar defaults are analysed at compile time, so classifying a container of a
/// 200-container pod against them does not read each pattern again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glob<'p> {
    pattern: &'p str,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Exact,
    /// Positions of the first and the last `*`.
    Stars(usize, usize),
    Question,
}

impl<'p> Glob<'p> {
    pub const fn new(pattern: &'p str) -> Self {
        let bytes = pattern.as_bytes();
        let mut shape = Shape::Exact;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'?' => {
                    return Glob {
                        pattern,
                        shape: Shape::Question,
                    };
                }
                b'*' => {
                    shape = match shape {
                        Shape::Stars(first, _) => Shape::Stars(first, i),
                        _ => Shape::Stars(i, i),
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Glob { pattern, shape }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self.shape {
            Shape::Exact => self.pattern == text,
            Shape::Stars(first, last) => stars_only(self.pattern, text, first, last),
            Shape::Question => backtracking(self.pattern, text),
        }
    }
}

/// The usual shapes (`*/proxyv2`, `pay-*`, `*collector*`): the text must start with what
/// precedes the first `*`, end with what follows the last, and hold the pieces between in
/// order; finding each leftmost is enough when `*` is the only wildcard.
fn stars_only(pattern: &str, text: &str, first_star: usize, last_star: usize) -> bool {
    let (prefix, suffix) = (&pattern[..first_star], &pattern[last_star + 1..]);
    let Some(rest) = text.strip_prefix(prefix) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(suffix) else {
        return false;
    };
    if first_star == last_star {
        return true;
    }
    for piece in pattern[first_star + 1..last_star]
        .split('*')
        .filter(|p| !p.is_empty())
    {
        // A plain scan, not `str::find`: its searcher's set-up outweighs the search on
        // texts as short as an image name. A byte match of a whole UTF-8 piece starts and
        // ends on character boundaries.
        match rest
            .as_bytes()
            .windows(piece.len())
            .position(|w| w == piece.as_bytes())
        {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn backtracking(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is currently assumed to stretch to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += char_len(t[ti]);
            }
            Some(&b) if b == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again from there.
                Some((sp, st)) => {
                    let next = st + char_len(t[st]);
                    star = Some((sp, next));
                    pi = sp + 1;
                    ti = next;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether some text matches both patterns: two sets may only inject a container of one
/// name when no namespace can match both of their patterns (`team-?` and `team-a` can).
/// A walk over pairs of pattern positions, as the product of the two patterns' automata:
/// a `*` may match nothing or take a character the other pattern's step matches; two
/// other steps advance together when some character matches both.
pub fn overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut todo = vec![(0, 0)];
    while let Some((i, j)) = todo.pop() {
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some('*') {
            todo.push((i + 1, j));
            if y.is_some_and(|y| y != '*') {
                todo.push((i, j + 1));
            }
        }
        if y == Some('*') {
            todo.push((i, j + 1));
            if x.is_some_and(|x| x != '*') {
                todo.push((i + 1, j));
            }
        }
        if let (Some(x), Some(y)) = (x, y)
            && x != '*'
            && y != '*'
            && (x == y || x == '?' || y == '?')
        {
            todo.push((i + 1, j + 1));
        }
    }
    false
}

/// Bytes of the UTF-8 character that starts with `lead` (`?` and `*` step by characters).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_drops_tag_and_digest_but_keeps_ports() {
        assert_eq!(image_repository("nginx"), "nginx");
        assert_eq!(image_repository("nginx:1.27"), "nginx");
        assert_eq!(
            image_repository("registry:5000/org/app:1.2@sha256:abc"),
            "registry:5000/org/app"
        );
        assert_eq!(
            image_repository("registry:5000/org/app"),
            "registry:5000/org/app"
        );
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("*/proxyv2", "docker.io/istio/proxyv2", true),
            ("*/proxyv2", "proxyv2", false),
            ("*linkerd*-proxy", "cr.l5d.io/linkerd/linkerd2-proxy", true),
            ("istio-proxy", "istio-proxy", true),
            ("istio-proxy", "istio-proxy2", false),
            ("pay-*", "pay-eu", true),
            ("pay-*", "pay", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("**x", "abx", true),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("é*", "équipe", true),
        ] {
            assert_eq!(matches(pattern, text), expected, "{pattern:?} {text:?}");
        }
    }

    /// Every word of up to `max` characters from `chars`.
    fn words(max: usize, chars: &[char]) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|w| chars.iter().map(move |c| format!("{w}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// Every pattern over a small alphabet against every text, compared with wildmatch.
    #[test]
    fn agrees_with_wildmatch() {
        let alphabet = ['a', 'b', '/', '*', '?'];
        let patterns = words(4, &alphabet);
        let texts = words(5, &alphabet[..3]);
        for p in &patterns {
            let reference = wildmatch::WildMatch::new(p);
            for t in &texts {
                assert_eq!(matches(p, t), reference.matches(t), "{p:?} {t:?}");
            }
        }
    }

    #[test]
    fn overlaps() {
        for (a, b, expected) in [
            ("team-?", "team-a", true),
            ("team-?", "team-ab", false),
            ("team-*", "*-a", true),
            ("pay-*", "shop", false),
            ("a*", "*b", true),
            ("a*", "b*", false),
            ("*", "", true),
            ("?", "", false),
            ("é?", "?é", true),
        ] {
            assert_eq!(overlap(a, b), expected, "{a:?} {b:?}");
            assert_eq!(overlap(b, a), expected, "{b:?} {a:?}");
        }
    }

    /// Every pair of short patterns: they overlap exactly when some short text matches
    /// both (a shortest common text is never longer than the two patterns together, and
    /// a letter neither names stands for any other).
    #[test]
    fn overlap_agrees_with_a_search_for_a_common_text() {
        let patterns = words(3, &['a', 'b', '*', '?']);
        let texts = words(6, &['a', 'b', 'c']);
        let matched: Vec<Vec<bool>> = patterns
            .iter()
            .map(|p| texts.iter().map(|t| matches(p, t)).collect())
            .collect();
        for (i, a) in patterns.iter().enumerate() {
            for (j, b) in patterns.iter().enumerate() {
                let common = matched[i].iter().zip(&matched[j]).any(|(x, y)| *x && *y);
                assert_eq!(overlap(a, b), common, "{a:?} {b:?}");
            }
        }
    }
}
