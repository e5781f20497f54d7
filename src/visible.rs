//! Text as it is, not as it displays ("Trojan Source"): characters that change how
//! text reads without being seen are shown as marks (`⟨U+202E⟩`).
//!
//! A reviewer approves what will run. A right-to-left override can make code read in
//! another order than it executes, a zero-width space can hide inside a word, and a NUL
//! or an escape sequence shows as nothing in a browser. Both surfaces show requester
//! and reviewer text through this module, so a request reads the same in Slack
//! (`crate::slack::text`, every piece of text it escapes) as on the review page (its
//! template escaper and the code before highlighting). It only makes characters
//! visible; escaping for a markup (mrkdwn, HTML) stays with each surface.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The longest mark [`push_mark`] writes, in characters: `⟨U+E007F⟩`. Every character
/// of a mark is in the Basic Multilingual Plane, so this is its length in UTF-16 code
/// units (what Slack's limits count) too.
pub const MARK_MAX_CHARS: usize = 9;

/// Whether `c` is shown as a mark instead of itself:
/// - control characters (NUL, ESC, DEL, the C1 controls…), except the line break, the
///   carriage return and the tab, which lay out text where every surface shows them;
/// - the bidirectional controls: embeddings and overrides (U+202A–U+202E), isolates
///   (U+2066–U+2069), and the marks U+061C, U+200E, U+200F;
/// - characters that take no space: the soft hyphen, the zero-width space, the word
///   joiner and invisible operators (U+2060–U+2064), the byte order mark, the
///   Mongolian vowel separator, interlinear annotation marks (U+FFF9–U+FFFB) and tag
///   characters (U+E0000–U+E007F, which can carry a whole hidden sentence);
/// - characters that print as blank space yet count as letters, so code can use them
///   as invisible names (`const ㅤ = …` in JavaScript): the Hangul fillers (U+115F,
///   U+1160, U+3164, U+FFA0), the combining grapheme joiner (U+034F) and the blank
///   braille pattern (U+2800).
///
/// The zero-width joiner and non-joiner (U+200D, U+200C) stay: emoji sequences and
/// several scripts need them, and they join what is visible rather than hide it.
pub fn is_hidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{00AD}'
                | '\u{180E}'
                | '\u{200B}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{3164}'
                | '\u{FFA0}'
                | '\u{2800}'
        )
}

/// Appends the mark of `c` to `out`: `⟨U+` and its code point in at least four
/// uppercase hex digits, then `⟩` (at most [`MARK_MAX_CHARS`] characters for any
/// character [`is_hidden`] admits).
pub fn push_mark(out: &mut String, c: char) {
    // Writing to a String cannot fail.
    let _ = write!(out, "⟨U+{:04X}⟩", u32::from(c));
}

/// `text` with every hidden character ([`is_hidden`]) replaced by its mark; borrowed
/// when there is none. Idempotent: a mark is made of visible characters.
pub fn visible(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(is_hidden) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        if is_hidden(c) {
            push_mark(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_invisible_characters_become_marks() {
        assert_eq!(
            visible("echo '\u{0000}\u{001b}[31m' \u{202e} evil"),
            "echo '⟨U+0000⟩⟨U+001B⟩[31m' ⟨U+202E⟩ evil"
        );
        assert_eq!(
            visible("r\u{200B}m \u{2066}x\u{2069} \u{7F}\u{9B}\u{E0041}"),
            "r⟨U+200B⟩m ⟨U+2066⟩x⟨U+2069⟩ ⟨U+007F⟩⟨U+009B⟩⟨U+E0041⟩"
        );
    }

    #[test]
    fn blank_letters_become_marks() {
        assert_eq!(
            visible("const \u{3164} = 1; x\u{115F}\u{1160}\u{FFA0}\u{034F}\u{2800}"),
            "const ⟨U+3164⟩ = 1; x⟨U+115F⟩⟨U+1160⟩⟨U+FFA0⟩⟨U+034F⟩⟨U+2800⟩"
        );
        // Ordinary Hangul stays.
        assert_eq!(visible("한글"), "한글");
    }

    #[test]
    fn layout_and_joiners_stay() {
        let text = "a\tb\r\nc 👨\u{200D}👩\u{200D}👧 ن\u{200C}ی e\u{0301} ⟨U+202E⟩";
        assert!(matches!(visible(text), Cow::Borrowed(_)));
        assert_eq!(visible(text), text);
    }

    #[test]
    fn marks_are_bounded_and_idempotent() {
        for c in ['\u{0}', '\u{202E}', '\u{FEFF}', '\u{E007F}'] {
            let mut mark = String::new();
            push_mark(&mut mark, c);
            assert!(mark.chars().count() <= MARK_MAX_CHARS, "{mark}");
            assert_eq!(mark.encode_utf16().count(), mark.chars().count());
            assert_eq!(visible(&mark), mark);
        }
        let once = visible("\u{202E}\u{0}x").into_owned();
        assert_eq!(visible(&once), once);
    }
}
