//! Text the page cannot show as it is ("Trojan Source"): control characters (NUL,
//! ESC), bidirectional controls and invisible characters in a request reach the page
//! as visible marks (`⟨U+202E⟩`), as they do in Slack, wherever request text appears.

use reqwest::StatusCode;
use serde_json::json;

use super::server::{hidden_value, link_form, link_token, page, post_form, post_link, WebServer};

/// Characters that must never reach the page raw: control characters other than
/// line breaks and tabs, and the ones this test sends that reorder or hide text.
fn raw_hidden(html: &str) -> Vec<String> {
    html.chars()
        .filter(|&c| {
            (c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
                || matches!(c, '\u{202E}' | '\u{2066}' | '\u{2069}' | '\u{200B}')
        })
        .map(|c| format!("U+{:04X}", u32::from(c)))
        .collect()
}

#[tokio::test]
async fn hidden_characters_in_a_request_show_as_marks_on_the_page() {
    let server = WebServer::start(&[]).await;
    let base = server.url("");
    let token = link_token(&server.printed_link());
    let form = link_form(&server.http, &base, &token).await.expect("link");
    let (_, session) = post_link(&server.http, &base, &form, &token).await;
    let session = session.expect("session");
    // The trial's request, and the same characters in the agent's context, with BEL
    // where the trial had NUL (which the API refuses: no database stores it alike).
    let (nul, nul_mark) = ("\u{0007}", "⟨U+0007⟩");
    let id = server
        .submit(json!({
            "code": format!("echo '{nul}\u{001b}[31m' \u{202e} evil"),
            "title": format!("t{nul}itle\u{001b}[2J\u{202e}"),
            "context": { "why": "\u{2066}hidden\u{2069} r\u{200B}m" },
        }))
        .await;
    let title = format!("t{nul_mark}itle⟨U+001B⟩[2J⟨U+202E⟩");
    // The same with a language: the highlighted code is syntect's HTML, not the
    // template's, and must not let them through either.
    let highlighted = server
        .submit(json!({
            "code": "echo '\u{001b}[31m' \u{202e} evil",
            "language": "bash",
            "title": "bash\u{202e}",
        }))
        .await;

    let (status, html) = page(
        &server.http,
        &base,
        &format!("/web/requests/{id}"),
        &session,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw_hidden(&html), Vec::<String>::new(), "{html}");
    assert!(html.contains(&format!("<h1>{title}</h1>")), "{html}");
    assert!(
        html.contains(&format!(
            "echo &#39;{nul_mark}⟨U+001B⟩[31m&#39; ⟨U+202E⟩ evil"
        )),
        "{html}"
    );
    assert!(html.contains("⟨U+2066⟩hidden⟨U+2069⟩ r⟨U+200B⟩m"), "{html}");

    let (_, html) = page(
        &server.http,
        &base,
        &format!("/web/requests/{highlighted}"),
        &session,
    )
    .await;
    assert_eq!(raw_hidden(&html), Vec::<String>::new(), "{html}");
    assert!(html.contains("<span style="), "highlighted: {html}");
    assert!(
        html.contains("⟨U+001B⟩") && html.contains("⟨U+202E⟩"),
        "{html}"
    );

    // A reviewer's reason is shown as it is too.
    let denied = post_form(
        &server.http,
        &base,
        &format!("/web/requests/{highlighted}/deny"),
        &session,
        &hidden_value(&html, "csrf"),
        &[("reason", "no\u{202E}pe")],
    )
    .await;
    assert_eq!(denied.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(
        &server.http,
        &base,
        &format!("/web/requests/{highlighted}"),
        &session,
    )
    .await;
    assert_eq!(raw_hidden(&html), Vec::<String>::new(), "{html}");
    assert!(
        html.contains("<p id=\"outcome\">no⟨U+202E⟩pe</p>"),
        "{html}"
    );

    // The lists show titles and reasons too.
    for path in ["/web", "/web/history"] {
        let (_, html) = page(&server.http, &base, path, &session).await;
        assert_eq!(raw_hidden(&html), Vec::<String>::new(), "{path}: {html}");
        assert!(html.contains(&title), "{path}: {html}");
    }
    let (_, html) = page(&server.http, &base, "/web/history", &session).await;
    assert!(html.contains("no⟨U+202E⟩pe"), "{html}");
}
