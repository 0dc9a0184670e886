//! The one convention every `--json` document follows.
//!
//! A document is one JSON object: `{"version": 1, "kind": "<kind>", …}`. `kind` names the shape of the
//! rest (kebab-case, the command it comes from: `roots-list`, `diff`, `restore-plan`, …); `version`
//! changes only when a shape changes incompatibly. Every field name and every enum value inside is
//! snake_case (enums derive `Serialize` with `#[serde(rename_all = "snake_case")]`); the only kebab-case
//! strings are `kind` itself and refusal rule names (`rule`), which are the names messages print too.
//!
//! The body is any `Serialize` struct; its fields are flattened next to `version` and `kind`, so a body
//! must not have fields of those names.

use std::io::Write;

use serde::Serialize;

/// The version every document carries today.
pub const VERSION: u32 = 1;

/// Every kind a command prints (the README's "JSON output" table lists who prints which).
pub const KINDS: &[&str] = &[
    "init",
    "rollback",
    "roots-list",
    "roots-show",
    "roots-prune",
    "diff",
    "restore-plan",
    "restore",
    "persist-plan",
    "persist",
    "persist-add-plan",
    "persist-add",
    "persist-sync-plan",
    "persist-sync",
    "status",
    "advise",
    "orphans",
    "blank-list",
];

/// A document: the envelope around a command's output.
#[derive(Debug, Serialize)]
pub struct Document<'a, T: ?Sized> {
    /// Always [`VERSION`].
    pub version: u32,
    /// The shape of `body` (kebab-case).
    pub kind: &'a str,
    /// The command's output; its fields become the document's.
    #[serde(flatten)]
    pub body: &'a T,
}

impl<'a, T: Serialize + ?Sized> Document<'a, T> {
    /// `body` as a document of `kind`.
    pub fn new(kind: &'a str, body: &'a T) -> Self {
        debug_assert!(KINDS.contains(&kind), "not a listed kind: {kind:?}");
        Document {
            version: VERSION,
            kind,
            body,
        }
    }

    /// The document as a JSON value (for tests and callers that inspect it).
    pub fn to_value(&self) -> serde_json::Result<serde_json::Value> {
        self.debug_check_body();
        serde_json::to_value(self)
    }

    /// Writes the document, pretty-printed, and a newline.
    pub fn write_to(&self, mut out: impl Write) -> std::io::Result<()> {
        self.debug_check_body();
        serde_json::to_writer_pretty(&mut out, self)?;
        writeln!(out)
    }

    /// Debug builds (the tests) catch a body field named `version` or `kind`: flattened, it would
    /// write the key twice and a reader would keep whichever came last.
    fn debug_check_body(&self) {
        if cfg!(debug_assertions)
            && let Ok(serde_json::Value::Object(m)) = serde_json::to_value(self.body)
        {
            for key in ["version", "kind"] {
                debug_assert!(
                    !m.contains_key(key),
                    "the body of a '{}' document has its own '{key}'",
                    self.kind
                );
            }
        }
    }
}

/// Whether `kind` is a valid kind: lowercase words joined by `-`.
pub fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Serialize)]
    struct Body {
        items: Vec<u32>,
        state: State,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum State {
        InPlace,
    }

    #[test]
    fn envelope_comes_first_and_flattens_the_body() {
        let body = Body {
            items: vec![1],
            state: State::InPlace,
        };
        let mut out = Vec::new();
        Document::new("roots-list", &body)
            .write_to(&mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\n  \"version\": 1,\n  \"kind\": \"roots-list\",\n  \"items\""),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        let v = Document::new("roots-list", &body).to_value().unwrap();
        assert_eq!(v["state"], "in_place");
    }

    #[test]
    #[should_panic(expected = "has its own 'kind'")]
    fn a_body_cannot_bring_its_own_kind() {
        #[derive(Serialize)]
        struct Clash {
            kind: &'static str,
        }
        let _ = Document::new("persist-add-plan", &Clash { kind: "directory" }).to_value();
    }

    #[test]
    fn listed_kinds_are_kebab_case_and_unique() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(is_kind(k), "{k}");
            assert!(!KINDS[..i].contains(k), "{k} twice");
        }
    }

    #[test]
    fn kinds_are_kebab_case() {
        for ok in ["diff", "roots-list", "persist-sync-plan"] {
            assert!(is_kind(ok), "{ok}");
        }
        for bad in ["", "roots_list", "Roots", "-diff", "diff-", "a--b", "v2"] {
            assert!(!is_kind(bad), "{bad}");
        }
    }
}
