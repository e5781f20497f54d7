//! serde's error messages reworded for the people who wrote the JSON: a body's author
//! knows fields and JSON types, not Rust's type names (`struct SubmitBody`, `u64`) or
//! serde's phrasing (`missing field `code``).

use std::sync::LazyLock;

use regex::Regex;

/// Rewrites one of serde's data-error messages (`missing field `code``, `unknown field
/// `timeout`, expected one of …`, `invalid type: string "x", expected u64`, `unknown
/// variant …`) in the API's terms: field names without backticks, JSON types ("a JSON
/// object", "a whole number") instead of Rust ones (`struct SubmitBody`, `u64`), and no
/// "at line 1 column 9" (the body's path names the place). Any other message is
/// returned with only those substitutions.
pub fn api_terms(message: &str) -> String {
    static POSITION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r" at line \d+ column \d+$").expect("valid regex"));
    static MISSING: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^missing field `([^`]*)`$").expect("valid regex"));
    static UNKNOWN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^unknown (field|variant) `([^`]*)`, (?:expected(?: one of)? (.*)|there are no (?:fields|variants))$")
            .expect("valid regex")
    });
    static INVALID: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^invalid (type|value|length): (.*), expected (.*)$").expect("valid regex")
    });
    let message = POSITION.replace(message.trim(), "");
    if let Some(c) = MISSING.captures(&message) {
        return format!("{} is required", &c[1]);
    }
    if let Some(c) = UNKNOWN.captures(&message) {
        let name = &c[2];
        let allowed = c.get(3).map(|m| m.as_str().replace('`', ""));
        return match (&c[1], allowed) {
            ("field", Some(allowed)) => {
                format!("{name} is not a field of this body (allowed: {allowed})")
            }
            ("field", None) => format!("{name} is not a field of this body"),
            (_, Some(allowed)) => format!("\"{name}\" is not allowed here (allowed: {allowed})"),
            (_, None) => format!("\"{name}\" is not allowed here"),
        };
    }
    if let Some(c) = INVALID.captures(&message) {
        let found = c[2].replace('`', "");
        let wanted = json_terms(&c[3]);
        return match &c[1] {
            "length" => format!("has {}; expected {wanted}", json_terms(&found)),
            // A value of the right JSON type out of range: "-1", not "integer -1",
            // which would read as though integers were not allowed.
            "value" => {
                let found = found.strip_prefix("integer ").unwrap_or(&found);
                format!("must be {wanted}, not {}", json_terms(found))
            }
            _ => format!("must be {wanted}, not {}", json_terms(&found)),
        };
    }
    json_terms(&message)
}

/// Rust and serde type words as a JSON body's author knows them.
fn json_terms(text: &str) -> String {
    static STRUCT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(?:a )?(?:struct|tuple struct) [A-Za-z_][A-Za-z0-9_]*|\ba map\b|\bmap\b")
            .expect("valid regex")
    });
    static ENUM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(?:an? )?enum [A-Za-z_][A-Za-z0-9_]*|\bvariant identifier\b")
            .expect("valid regex")
    });
    static UNSIGNED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(?:a |an )?(?:u8|u16|u32|u64|usize)\b").expect("valid regex")
    });
    static INTEGER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(?:a |an )?(?:i8|i16|i32|i64|isize)\b").expect("valid regex")
    });
    let text = STRUCT.replace_all(text, "a JSON object");
    let text = ENUM.replace_all(&text, "one of the documented values");
    let text = UNSIGNED.replace_all(&text, "a whole number (0 or more)");
    let text = INTEGER.replace_all(&text, "a whole number");
    text.replace("a sequence", "a JSON array")
        .replace("sequence", "a JSON array")
        .replace("floating point", "a number")
        .replace("unit value", "null")
        .replace("a unit", "null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_phrases_become_api_terms() {
        for (serde, ours) in [
            ("missing field `code`", "code is required"),
            (
                "unknown field `timeout`, expected one of `code`, `timeout_secs` at line 1 column 9",
                "timeout is not a field of this body (allowed: code, timeout_secs)",
            ),
            ("unknown field `x`, there are no fields", "x is not a field of this body"),
            (
                "unknown variant `maybe`, expected `approve` or `deny`",
                "\"maybe\" is not allowed here (allowed: approve or deny)",
            ),
            (
                "invalid type: map, expected a sequence",
                "must be a JSON array, not a JSON object",
            ),
            (
                "invalid value: integer `-3`, expected u64",
                "must be a whole number (0 or more), not -3",
            ),
            (
                "invalid type: sequence, expected struct SubmitBody",
                "must be a JSON object, not a JSON array",
            ),
        ] {
            assert_eq!(api_terms(serde), ours, "{serde}");
        }
    }
}
