//! Text for Slack: escaped, then cut to fit Slack's limits.
//!
//! Slack refuses a whole message (`invalid_blocks`) when a single text in it is over
//! its limit, and the limits apply to what Slack receives: *after* escaping, where one
//! `&` is the five characters `&amp;`. A reason of 581 `&` fits a 3,000-character
//! section before escaping and is 2,905 characters after. So every piece of text a
//! requester or reviewer chose goes through [`fit`], which escapes and cuts in one
//! pass: each source character becomes its escaped unit (`&amp;`, `⟨U+202E⟩`, …) and
//! units are kept whole while they fit, so an entity is never cut in half, and a cut
//! ends with `…`. [`split`] does the same for code that is shown in several pieces.
//!
//! Lengths are measured by [`slack_len`] in UTF-16 code units. Slack documents limits
//! in "characters" without saying which; an emoji outside the Basic Multilingual Plane
//! is one code point but two UTF-16 units, so counting units is never below Slack's
//! count, whichever it is, and a text measured here always fits.
//!
//! The limits are in [`limits`], each with where it comes from.

use crate::visible;

/// Slack's documented limits. Most are in `shared/docs/slack-platform.md` ("Block Kit
/// limits"); the few it does not list are from Slack's Block Kit and Web API reference
/// pages, as noted on each.
pub mod limits {
    /// Blocks in one message ("50 blocks per message").
    pub const MESSAGE_BLOCKS: usize = 50;
    /// Blocks in one modal ("100 per modal").
    pub const MODAL_BLOCKS: usize = 100;
    /// A section's `text` ("Section text 1–3000 chars").
    pub const SECTION_TEXT: usize = 3000;
    /// Fields in one section ("`fields` ≤ 10 × 2000").
    pub const SECTION_FIELDS: usize = 10;
    /// One field's text ("`fields` ≤ 10 × 2000").
    pub const FIELD_TEXT: usize = 2000;
    /// A header's plain text ("Header: plain_text, ≤ 150 chars").
    pub const HEADER_TEXT: usize = 150;
    /// A button's text ("Button text ≤ 75").
    pub const BUTTON_TEXT: usize = 75;
    /// A button's `action_id` ("`action_id` ≤ 255").
    pub const ACTION_ID: usize = 255;
    /// A button's `value` ("`value` ≤ 2000").
    pub const BUTTON_VALUE: usize = 2000;
    /// A confirm dialog's title ("title ≤ 100").
    pub const CONFIRM_TITLE: usize = 100;
    /// A confirm dialog's text ("text ≤ 300").
    pub const CONFIRM_TEXT: usize = 300;
    /// A confirm dialog's confirm and deny labels ("confirm/deny labels ≤ 30").
    pub const CONFIRM_LABEL: usize = 30;
    /// A modal's `private_metadata` ("max 3000 chars").
    pub const PRIVATE_METADATA: usize = 3000;
    /// Elements in a context block: 10 (Block Kit reference, "Context block").
    pub const CONTEXT_ELEMENTS: usize = 10;
    /// A text object inside a context block: 3000, like any text object (Block Kit
    /// reference, "Text object").
    pub const CONTEXT_TEXT: usize = 3000;
    /// A modal's title, and its submit and close labels: 24 (Block Kit reference,
    /// "View object").
    pub const MODAL_TITLE: usize = 24;
    /// An input block's label: 2000 (Block Kit reference, "Input block").
    pub const INPUT_LABEL: usize = 2000;
    /// A plain-text input's placeholder: 150 (Block Kit reference, "Plain-text
    /// input").
    pub const PLACEHOLDER: usize = 150;
    /// A message's top-level `text`: Slack truncates past 40,000 characters and
    /// refuses with `msg_too_long` (Web API reference, `chat.postMessage`).
    pub const MESSAGE_TEXT: usize = 40_000;
}

/// How a text is escaped before it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// mrkdwn: `&`, `<`, `>` become entities, so requester text cannot mention
    /// anyone, ping `<!channel>` or inject a link; control, bidirectional and
    /// invisible characters become visible (`⟨U+202E⟩`, [`crate::visible`]) so text
    /// cannot read differently from what it is ("Trojan Source").
    Mrkdwn,
    /// mrkdwn inside a block quote: as [`Escape::Mrkdwn`], and every line break
    /// continues the quote (`\n> `).
    Quote,
    /// mrkdwn inside a ``` block: as [`Escape::Mrkdwn`], and a zero-width space before
    /// every third backtick of a run, so the code cannot close its own block.
    Code,
    /// plain_text (headers, titles, labels): Slack shows it literally, so only the
    /// hidden characters are made visible ([`crate::visible`]).
    Plain,
}

/// The length Slack measures, counted so that it never comes out below Slack's own
/// count: UTF-16 code units (see the module documentation).
pub fn slack_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` escaped for `escape`, whole.
pub fn escape(text: &str, escape: Escape) -> String {
    let mut units = Units::new(escape);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        out.push_str(units.of(c));
    }
    out
}

/// `text` escaped for `escape` and cut to at most `max` ([`slack_len`]): the one way
/// requester- and reviewer-supplied text enters a Slack surface. Whole escaped
/// characters are kept while they fit (never half an entity); a cut is marked with a
/// final `…`, which counts toward `max`. `max` 0 gives an empty string.
pub fn fit(text: &str, escape: Escape, max: usize) -> String {
    let mut units = Units::new(escape);
    let mut out = String::new();
    let mut used = 0;
    // Whether everything fits is only known at the end, so remember where the text
    // would have to be cut for the ellipsis (one unit less room) on the way.
    let mut cut_at: Option<usize> = None;
    for c in text.chars() {
        let unit = units.of(c);
        let len = slack_len(unit);
        if cut_at.is_none() && used + len > max.saturating_sub(1) {
            cut_at = Some(out.len());
        }
        if used + len > max {
            let at = cut_at.unwrap_or(out.len());
            out.truncate(at);
            if max > 0 {
                out.push('…');
            }
            return out;
        }
        out.push_str(unit);
        used += len;
    }
    out
}

/// `text` escaped for `escape` and split into pieces of at most `max` each
/// ([`slack_len`]), at character boundaries and never inside an entity; nothing is
/// dropped and no ellipsis is added. For one long line of code shown over several
/// sections. Empty text gives no pieces.
pub fn split(text: &str, escape: Escape, max: usize) -> Vec<String> {
    let max = max.max(ESCAPED_UNIT_MAX);
    let mut units = Units::new(escape);
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut used = 0;
    for c in text.chars() {
        let unit = units.of(c);
        let len = slack_len(unit);
        if used + len > max {
            pieces.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push_str(unit);
        used += len;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The longest escaped form of one character (a mark such as `⟨U+E007F⟩`; a
/// surrogate pair after a zero-width space is 3), so [`split`] always makes progress.
const ESCAPED_UNIT_MAX: usize = visible::MARK_MAX_CHARS;

/// Turns characters into their escaped units, one at a time (code escaping needs to
/// remember the current run of backticks).
struct Units {
    escape: Escape,
    backticks: usize,
    buf: String,
}

impl Units {
    fn new(escape: Escape) -> Self {
        Self {
            escape,
            backticks: 0,
            buf: String::with_capacity(16),
        }
    }

    fn of(&mut self, c: char) -> &str {
        self.buf.clear();
        if visible::is_hidden(c) {
            self.backticks = 0;
            visible::push_mark(&mut self.buf, c);
            return &self.buf;
        }
        if self.escape == Escape::Plain {
            self.buf.push(c);
            return &self.buf;
        }
        if c == '`' && self.escape == Escape::Code {
            self.backticks += 1;
            if self.backticks == 3 {
                self.buf.push('\u{200B}');
                self.backticks = 1;
            }
        } else {
            self.backticks = 0;
        }
        match c {
            '&' => self.buf.push_str("&amp;"),
            '<' => self.buf.push_str("&lt;"),
            '>' => self.buf.push_str("&gt;"),
            '\n' if self.escape == Escape::Quote => self.buf.push_str("\n> "),
            c => self.buf.push(c),
        }
        &self.buf
    }
}

/// Does `text` end inside an entity (`&amp`, `&l`, …) or a made-visible control
/// (`⟨U+20`)? For tests that check no cut broke one.
#[cfg(test)]
pub(crate) fn ends_inside_an_entity(text: &str) -> bool {
    let tail_amp = text.rfind('&').map(|at| &text[at..]);
    let open_amp = tail_amp.is_some_and(|tail| !tail.contains(';'));
    let tail_angle = text.rfind('⟨').map(|at| &text[at..]);
    let open_angle = tail_angle.is_some_and(|tail| !tail.contains('⟩'));
    open_amp || open_angle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_581_ampersands_fit_after_escaping() {
        let reason = "&".repeat(581);
        assert_eq!(slack_len(&escape(&reason, Escape::Mrkdwn)), 2905);
        let fitted = fit(&reason, Escape::Mrkdwn, 2900);
        assert!(slack_len(&fitted) <= 2900);
        assert!(
            fitted.ends_with("&amp;…"),
            "{}",
            &fitted[fitted.len() - 12..]
        );
    }

    #[test]
    fn fits_whole_when_it_can() {
        assert_eq!(fit("a<b", Escape::Mrkdwn, 6), "a&lt;b");
        assert_eq!(fit("a<b", Escape::Mrkdwn, 5), "a…");
        assert_eq!(fit("abc", Escape::Plain, 3), "abc");
        assert_eq!(fit("abcd", Escape::Plain, 3), "ab…");
        assert_eq!(fit("abcd", Escape::Plain, 0), "");
        assert_eq!(fit("", Escape::Plain, 0), "");
    }

    #[test]
    fn never_cuts_an_entity_or_a_surrogate_pair() {
        for max in 0..40 {
            for text in [
                "&&&&&&&&&&",
                "<<>>&&<>",
                "\u{202E}\u{202E}\u{202E}",
                "😀😀😀😀😀😀😀",
            ] {
                let fitted = fit(text, Escape::Mrkdwn, max);
                assert!(slack_len(&fitted) <= max, "{text:?} {max}: {fitted:?}");
                assert!(
                    !ends_inside_an_entity(&fitted),
                    "{text:?} {max}: {fitted:?}"
                );
            }
        }
    }

    #[test]
    fn quote_continues_on_every_line() {
        assert_eq!(escape("a\nb<", Escape::Quote), "a\n> b&lt;");
        let fitted = fit(&"\n".repeat(2000), Escape::Quote, 100);
        assert!(slack_len(&fitted) <= 100);
    }

    #[test]
    fn code_breaks_backtick_runs_and_shows_bidi_controls() {
        assert_eq!(escape("````", Escape::Code), "``\u{200B}``");
        assert_eq!(escape("a\u{202E}b", Escape::Code), "a⟨U+202E⟩b");
        assert_eq!(escape("a\u{202E}<", Escape::Plain), "a⟨U+202E⟩<");
    }

    #[test]
    fn controls_and_invisible_characters_are_made_visible_in_every_escape() {
        let text = "echo '\u{0000}\u{001b}[31m' \u{202e} r\u{200B}m";
        let shown = "echo '⟨U+0000⟩⟨U+001B⟩[31m' ⟨U+202E⟩ r⟨U+200B⟩m";
        for how in [Escape::Mrkdwn, Escape::Quote, Escape::Code, Escape::Plain] {
            assert_eq!(escape(text, how), shown, "{how:?}");
        }
        // The longest mark still splits into pieces that fit.
        let tags = "\u{E007F}".repeat(50);
        for piece in split(&tags, Escape::Code, 1) {
            assert_eq!(piece, "⟨U+E007F⟩");
        }
    }

    #[test]
    fn split_keeps_everything_in_pieces_that_fit() {
        let text = "a&<>`\u{2066}😀".repeat(300);
        let pieces = split(&text, Escape::Code, 100);
        assert!(pieces.len() > 10);
        for piece in &pieces {
            assert!(slack_len(piece) <= 100, "{piece}");
            assert!(!ends_inside_an_entity(piece), "{piece}");
        }
        assert_eq!(pieces.concat(), escape(&text, Escape::Code));
        assert!(split("", Escape::Code, 10).is_empty());
    }
}
