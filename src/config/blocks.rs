//! The config file cut into top-level pieces, so a reload can reuse the parsed checks whose
//! text did not change (see `validate::parse_reusing`).
//!
//! [`scan`] walks the TOML text once, tracking strings, comments and brackets, and finds
//! every table header at the start of a line. A `[[checks]]` header starts a *check block*,
//! which runs to the next header that is not one of its own sub-tables (`[checks.…]`,
//! `[[checks.…]]`). Everything else (the root keys, `[agent]`, `[[routes]]`, …) is *head*.
//! The scan never decides what is valid TOML: when it meets something it does not follow
//! (an unterminated string, an escaped quoted header key), it gives up and the caller
//! parses the whole file as usual.

use std::ops::Range;

/// What a piece of the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Not a check: root keys and every other table.
    Head,
    /// One `[[checks]]` entry with its sub-tables.
    Check,
}

/// The file as consecutive pieces, together covering all of it.
#[derive(Debug, Default)]
pub struct Layout {
    /// Each piece's kind and byte range, in file order.
    pub pieces: Vec<(Piece, Range<usize>)>,
}

impl Layout {
    /// The check blocks' ranges, in file order.
    pub fn checks(&self) -> impl Iterator<Item = &Range<usize>> {
        self.pieces
            .iter()
            .filter(|(p, _)| *p == Piece::Check)
            .map(|(_, r)| r)
    }

    /// The [`hash`] of each check block of `src` (the text this layout was scanned from),
    /// in file order.
    pub fn check_hashes(&self, src: &str) -> Vec<u128> {
        self.checks()
            .map(|r| hash(src[r.clone()].as_bytes()))
            .collect()
    }

    /// How many check blocks there are.
    pub fn check_count(&self) -> usize {
        self.checks().count()
    }
}

/// A 128-bit hash of a block's text: equal text, equal hash; a collision between two
/// different blocks is not a practical concern at this width.
pub fn hash(text: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text)
}

/// A map keyed by [`hash`] values, which are hashes already: no second hash is computed.
pub type ByHash<V> = std::collections::HashMap<u128, V, std::hash::BuildHasherDefault<Prehashed>>;

/// The [`std::hash::Hasher`] of [`ByHash`]: the low 64 bits of the key.
#[derive(Default)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here; anything else still spreads.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What a header line is about.
enum Header {
    /// `[[checks]]` exactly.
    CheckEntry,
    /// `[checks.…]` or `[[checks.…]]`: part of the entry before it.
    CheckPart,
    /// Any other table.
    Other,
}

/// Cuts `src` into pieces, or `None` if the text uses something the scan does not follow.
pub fn scan(src: &str) -> Option<Layout> {
    let b = src.as_bytes();
    let mut pieces: Vec<(Piece, Range<usize>)> = Vec::new();
    let mut current = (Piece::Head, 0usize);
    let mut depth = 0usize; // open `[`/`{` of values
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if line_start {
            // Skip indentation; a header may be indented.
            let mut j = i;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            line_start = false;
            if depth == 0 && j < b.len() && b[j] == b'[' {
                let (header, end) = header(b, j)?;
                let start = match header {
                    Header::CheckEntry => Some(Piece::Check),
                    Header::CheckPart if current.0 == Piece::Check => None,
                    _ if current.0 == Piece::Check => Some(Piece::Head),
                    _ => None,
                };
                if let Some(p) = start {
                    if i > current.1 {
                        pieces.push((current.0, current.1..i));
                    }
                    current = (p, i);
                }
                i = end;
                continue;
            }
            i = j;
            continue;
        }
        match c {
            b'\n' => {
                line_start = true;
                i += 1;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => i = skip_string(b, i)?,
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if depth != 0 {
        return None;
    }
    if b.len() > current.1 {
        pieces.push((current.0, current.1..b.len()));
    }
    Some(Layout { pieces })
}

/// Reads the header starting at `b[at] == b'['`; returns what it is and the offset after
/// its line (past the newline).
fn header(b: &[u8], at: usize) -> Option<(Header, usize)> {
    let array = b.get(at + 1) == Some(&b'[');
    let mut i = at + if array { 2 } else { 1 };
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        let key = match *b.get(i)? {
            q @ (b'"' | b'\'') => {
                let end = i + 1 + b[i + 1..].iter().position(|&x| x == q || x == b'\n')?;
                if b[end] != q || (q == b'"' && b[i + 1..end].contains(&b'\\')) {
                    return None;
                }
                let k = b[i + 1..end].to_vec();
                i = end + 1;
                k
            }
            _ => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'-')
                {
                    i += 1;
                }
                if i == s {
                    return None;
                }
                b[s..i].to_vec()
            }
        };
        keys.push(key);
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        match *b.get(i)? {
            b'.' => i += 1,
            b']' => break,
            _ => return None,
        }
    }
    i += 1;
    if array {
        if b.get(i) != Some(&b']') {
            return None;
        }
        i += 1;
    }
    // The rest of the line: blanks and an optional comment.
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    match b.get(i) {
        None | Some(b'\n') | Some(b'\r') | Some(b'#') => {}
        Some(_) => return None,
    }
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    if i < b.len() {
        i += 1;
    }
    let kind = match (keys[0].as_slice() == b"checks", keys.len(), array) {
        (true, 1, true) => Header::CheckEntry,
        (true, 1, false) => Header::Other,
        (true, _, _) => Header::CheckPart,
        _ => Header::Other,
    };
    Some((kind, i))
}

/// The offset after the string (basic, literal, or either multi-line form) at `b[at]`.
fn skip_string(b: &[u8], at: usize) -> Option<usize> {
    let q = b[at];
    let triple = b.get(at + 1) == Some(&q) && b.get(at + 2) == Some(&q);
    if !triple && b.get(at + 1) == Some(&q) {
        return Some(at + 2); // ""
    }
    let mut i = at + if triple { 3 } else { 1 };
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            b'\n' if !triple => return None,
            x if x == q => {
                if !triple {
                    return Some(i + 1);
                }
                if b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q) {
                    // Up to two more quotes belong to the content: `"""a""""`.
                    let mut end = i + 3;
                    let mut extra = 0;
                    while extra < 2 && b.get(end) == Some(&q) {
                        end += 1;
                        extra += 1;
                    }
                    return Some(end);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(src: &str) -> Vec<(Piece, &str)> {
        scan(src)
            .expect("scans")
            .pieces
            .into_iter()
            .map(|(p, r)| (p, &src[r]))
            .collect()
    }

    #[test]
    fn cuts_checks_from_the_rest() {
        let src = "a = 1\n[agent]\nx = 2\n[[checks]]\nname = \"a\"\n[checks.labels]\nt = \"1\"\n\
                   [[checks]]\nname = \"b\"\n[[routes]]\nr = 1\n[[checks]]\nname = \"c\"\n";
        assert_eq!(
            pieces(src),
            vec![
                (Piece::Head, "a = 1\n[agent]\nx = 2\n"),
                (
                    Piece::Check,
                    "[[checks]]\nname = \"a\"\n[checks.labels]\nt = \"1\"\n"
                ),
                (Piece::Check, "[[checks]]\nname = \"b\"\n"),
                (Piece::Head, "[[routes]]\nr = 1\n"),
                (Piece::Check, "[[checks]]\nname = \"c\"\n"),
            ]
        );
        let l = scan(src).unwrap();
        assert_eq!(l.check_count(), 3);
        let all: String = l.pieces.iter().map(|(_, r)| &src[r.clone()]).collect();
        assert_eq!(all, src, "the pieces cover the file exactly");
    }

    #[test]
    fn headers_inside_strings_arrays_and_comments_are_not_headers() {
        let src = "[[checks]]\nname = \"a\"\nbody = \"\"\"\n[[checks]]\n\"\"\"\n\
                   lit = '''\n[agent]\n'''\nports = [\n  [1, 2],\n  [3],\n]\n\
                   # [[checks]]\nq = \"[[checks]]\"\n[[checks]]\nname = \"b\"\n";
        let p = pieces(src);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].1.starts_with("[[checks]]\nname = \"b\""));
    }

    #[test]
    fn quoted_and_spaced_header_keys() {
        let p = pieces(
            "[[ \"checks\" ]] # one\nname = \"a\"\n[ 'checks' . labels ]\nx = \"1\"\n[ agent ]\n",
        );
        assert_eq!(
            p.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![Piece::Check, Piece::Head]
        );
        // A plain `[checks]` table is head (the TOML parser reports the clash).
        assert_eq!(pieces("[checks]\na = 1\n")[0].0, Piece::Head);
    }

    #[test]
    fn multi_line_strings_with_quotes_at_the_end() {
        let src = "[[checks]]\na = \"\"\"x\"\"\"\"\"\nb = 'it''s'\nc = \"\\\"[\"\n[[checks]]\n";
        let p = pieces(src);
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn gives_up_on_what_it_does_not_follow() {
        assert!(scan("a = \"open\n").is_none());
        assert!(scan("a = [1, 2\n").is_none());
        assert!(scan("[\"che\\u0063ks\"]\n").is_none());
        assert!(scan("a = ]\n").is_none());
    }

    #[test]
    fn equal_text_equal_hash() {
        assert_eq!(hash(b"[[checks]]\n"), hash(b"[[checks]]\n"));
        assert_ne!(hash(b"[[checks]]\na=1\n"), hash(b"[[checks]]\na=2\n"));
    }
}
