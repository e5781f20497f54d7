//! Server-side syntax highlighting of the code under review, by syntect (Sublime Text
//! syntaxes bundled in the crate): one HTML fragment per source line, so the page can
//! number lines. syntect escapes the code's text itself; nothing here writes markup.
//! Its HTML reaches the page as it is, past the templates' escaper, so hidden
//! characters are shown as marks (`⟨U+202E⟩`, [`crate::visible`]) before the code is
//! highlighted: a reviewer reads the code as it will run.
//!
//! Highlighting is bounded ([`MAX_HIGHLIGHTED_BYTES`]): past it the code is shown as
//! plain text (escaped by the template), because a megabyte of minified code would
//! otherwise keep a worker thread busy for seconds.

use std::sync::OnceLock;

use syntect::{
    easy::HighlightLines,
    highlighting::{Theme, ThemeSet},
    html::{styled_line_to_highlighted_html, IncludeBackground},
    parsing::SyntaxSet,
    util::LinesWithEndings,
};

/// Code longer than this is shown without colours.
pub const MAX_HIGHLIGHTED_BYTES: usize = 64 * 1024;

/// One line of code, ready for the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// HTML from syntect (`<span style=…>` around escaped text): rendered as is.
    Highlighted(String),
    /// Plain text: escaped by the template engine.
    Plain(String),
}

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn theme() -> &'static Theme {
    static THEME: OnceLock<Theme> = OnceLock::new();
    THEME.get_or_init(|| {
        let mut themes = ThemeSet::load_defaults().themes;
        // A light theme with enough contrast on white; bundled with syntect.
        themes
            .remove("InspiredGitHub")
            .or_else(|| themes.into_values().next())
            .unwrap_or_default()
    })
}

/// The code's lines, hidden characters shown as marks, highlighted for `language` (a
/// name or file extension such as `python`, `bash`, `rs`) when syntect knows it and the
/// code is not too long; plain otherwise. Never empty: empty code is one empty line.
pub fn lines(code: &str, language: Option<&str>) -> Vec<Line> {
    let code = &*crate::visible::visible(code);
    let plain = || -> Vec<Line> {
        let mut lines: Vec<Line> = code.lines().map(|l| Line::Plain(l.to_owned())).collect();
        if lines.is_empty() {
            lines.push(Line::Plain(String::new()));
        }
        lines
    };
    if code.len() > MAX_HIGHLIGHTED_BYTES {
        return plain();
    }
    let set = syntaxes();
    let Some(syntax) = language.and_then(|lang| {
        let lang = lang.trim().to_ascii_lowercase();
        let token = match lang.as_str() {
            "shell" | "sh" | "zsh" => "bash",
            "python3" | "py" => "python",
            "javascript" | "node" => "js",
            other => other,
        };
        set.find_syntax_by_token(token)
    }) else {
        return plain();
    };
    let mut highlighter = HighlightLines::new(syntax, theme());
    let mut out = Vec::new();
    for line in LinesWithEndings::from(code) {
        let Ok(ranges) = highlighter.highlight_line(line, set) else {
            return plain();
        };
        match styled_line_to_highlighted_html(&ranges, IncludeBackground::No) {
            Ok(html) => out.push(Line::Highlighted(
                html.trim_end_matches(['\n', '\r']).to_owned(),
            )),
            Err(_) => return plain(),
        }
    }
    if out.is_empty() {
        out.push(Line::Plain(String::new()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_languages_are_coloured_and_escaped() {
        let lines = lines(
            "x = '<script>alert(1)</script>'\nprint(x)\n",
            Some("python"),
        );
        assert_eq!(lines.len(), 2);
        let Line::Highlighted(first) = &lines[0] else {
            panic!("not highlighted: {lines:?}");
        };
        assert!(first.contains("<span style="), "{first}");
        assert!(!first.contains("<script>"), "{first}");
        assert!(first.contains("&lt;script&gt;"), "{first}");
    }

    #[test]
    fn hidden_characters_are_marked_before_highlighting() {
        let code = "echo '\u{1b}[31m' \u{202E} evil\u{0}";
        for language in [Some("bash"), None] {
            let shown = match &lines(code, language)[0] {
                Line::Highlighted(html) => html.clone(),
                Line::Plain(text) => text.clone(),
            };
            assert!(
                !shown.chars().any(crate::visible::is_hidden),
                "{language:?}: {shown:?}"
            );
            assert!(
                shown.contains("⟨U+001B⟩")
                    && shown.contains("⟨U+202E⟩")
                    && shown.contains("⟨U+0000⟩"),
                "{language:?}: {shown}"
            );
        }
    }

    #[test]
    fn unknown_languages_and_long_code_stay_plain() {
        assert_eq!(
            lines("a\nb", Some("no-such-language")),
            vec![Line::Plain("a".into()), Line::Plain("b".into())]
        );
        assert_eq!(lines("", None), vec![Line::Plain(String::new())]);
        let long = "x = 1\n".repeat(MAX_HIGHLIGHTED_BYTES);
        assert!(matches!(lines(&long, Some("python"))[0], Line::Plain(_)));
    }
}
