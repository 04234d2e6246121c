//! Decoding of the line-oriented fuzz inputs.

use std::str::FromStr;

/// The first `N` lines of `data` (without their `\n`; missing ones empty) and everything after them.
pub(crate) fn split_lines<const N: usize>(data: &[u8]) -> ([&[u8]; N], &[u8]) {
    let mut lines: [&[u8]; N] = [&[]; N];
    let mut rest = data;
    for line in lines.iter_mut() {
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => {
                *line = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *line = rest;
                rest = &[];
            }
        }
    }
    (lines, rest)
}

/// The bytes as text, the way an HTTP library hands out a header value: `None` unless valid UTF-8.
pub(crate) fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// The whitespace-separated words of a line, each parsed as `T`, `None` where a word is missing or does not
/// parse, so a mutated parameter line still checks something with defaults.
pub(crate) fn words<T: FromStr, const N: usize>(line: &[u8]) -> [Option<T>; N] {
    let mut out: [Option<T>; N] = std::array::from_fn(|_| None);
    let mut words = text(line).unwrap_or_default().split_ascii_whitespace();
    for slot in out.iter_mut() {
        *slot = words.next().and_then(|w| w.parse().ok());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_fills_missing_lines_with_empty_ones() {
        let ([a, b, c], rest) = split_lines::<3>(b"one\ntwo");
        assert_eq!((a, b, c, rest), (&b"one"[..], &b"two"[..], &b""[..], &b""[..]));
        let ([a], rest) = split_lines::<1>(b"one\ntwo\nthree");
        assert_eq!((a, rest), (&b"one"[..], &b"two\nthree"[..]));
    }

    #[test]
    fn words_parse_each_word_or_leave_it_out() {
        let [a, b, c] = words::<i64, 3>(b" 5 x 7 9");
        assert_eq!((a, b, c), (Some(5), None, Some(7)));
    }
}
