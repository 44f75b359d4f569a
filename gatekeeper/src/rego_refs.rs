//! A small Rego lexer, enough to reproduce the checks Gatekeeper's `regorewriter` applies to a
//! template's modules before compiling them (frameworks `constraint/pkg/regorewriter`):
//! every `data` reference in a rule must lie under `data.lib` or `data.inventory`, and every
//! import must be `data.lib...` or `future...`. It also tells whether a template is
//! referential (reads `data.inventory`).
//!
//! Why a lexer and not regorus' AST: the checks only need reference *paths*, which are fully
//! visible in the token stream (comments and strings skipped), and a lexer keeps us independent
//! of regorus' internal AST layout.

/// One component of a `data` reference: a literal key, or a computed one (`data[x]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefPart {
    Key(String),
    Computed,
}

/// What a module says about `data`.
#[derive(Debug, Default)]
pub(crate) struct ModuleRefs {
    /// Paths of `data` references inside rules (after `data`).
    pub data_refs: Vec<Vec<RefPart>>,
    /// Import paths, each as its dotted text (`data.lib.x`, `future.keywords.in`, `rego.v1`).
    pub imports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c == '#' {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
        } else if c.is_whitespace() {
            index += 1;
        } else if c == '"' {
            index += 1;
            let mut text = String::new();
            while index < chars.len() && chars[index] != '"' {
                if chars[index] == '\\' && index + 1 < chars.len() {
                    text.push(chars[index]);
                    index += 1;
                }
                text.push(chars[index]);
                index += 1;
            }
            index += 1;
            tokens.push(Token::Str(unescape(&text)));
        } else if c == '`' {
            index += 1;
            let start = index;
            while index < chars.len() && chars[index] != '`' {
                index += 1;
            }
            tokens.push(Token::Str(
                chars[start..index.min(chars.len())].iter().collect(),
            ));
            index += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = index;
            while index < chars.len() && (chars[index].is_alphanumeric() || chars[index] == '_') {
                index += 1;
            }
            tokens.push(Token::Ident(chars[start..index].iter().collect()));
        } else if c.is_ascii_digit() {
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '.')
            {
                // A number's `.` must not start a reference (`1.5`); stop at `..`-free text.
                if chars[index] == '.'
                    && !chars
                        .get(index + 1)
                        .is_some_and(|next| next.is_ascii_digit())
                {
                    break;
                }
                index += 1;
            }
            tokens.push(Token::Other);
        } else {
            tokens.push(Token::Punct(c));
            index += 1;
        }
    }
    tokens
}

fn unescape(text: &str) -> String {
    // JSON string escapes, as Rego strings use them.
    serde_json::from_str::<String>(&format!("\"{text}\"")).unwrap_or_else(|_| text.to_owned())
}

/// Scans one module's source.
pub(crate) fn scan(source: &str) -> ModuleRefs {
    let tokens = tokenize(source);
    let mut refs = ModuleRefs::default();
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            Token::Ident(word) if word == "package" => {
                // The package path is not a reference; skip its tokens.
                index += 1;
                index = skip_path(&tokens, index).0;
            }
            Token::Ident(word) if word == "import" && !preceded_by_dot(&tokens, index) => {
                index += 1;
                let (next, path) = skip_path(&tokens, index);
                refs.imports.push(path);
                index = next;
            }
            Token::Ident(word) if word == "data" && !preceded_by_dot(&tokens, index) => {
                index += 1;
                let mut path = Vec::new();
                loop {
                    match (
                        tokens.get(index),
                        tokens.get(index + 1),
                        tokens.get(index + 2),
                    ) {
                        (Some(Token::Punct('.')), Some(Token::Ident(key)), _) => {
                            path.push(RefPart::Key(key.clone()));
                            index += 2;
                        }
                        (
                            Some(Token::Punct('[')),
                            Some(Token::Str(key)),
                            Some(Token::Punct(']')),
                        ) => {
                            path.push(RefPart::Key(key.clone()));
                            index += 3;
                        }
                        (Some(Token::Punct('[')), _, _) => {
                            path.push(RefPart::Computed);
                            break;
                        }
                        _ => break,
                    }
                }
                refs.data_refs.push(path);
            }
            _ => index += 1,
        }
    }
    refs
}

fn preceded_by_dot(tokens: &[Token], index: usize) -> bool {
    index > 0 && tokens[index - 1] == Token::Punct('.')
}

/// Reads `a.b["c"].d` from `index`; returns the index after it and its dotted text.
fn skip_path(tokens: &[Token], mut index: usize) -> (usize, String) {
    let mut text = String::new();
    if let Some(Token::Ident(first)) = tokens.get(index) {
        text.push_str(first);
        index += 1;
    }
    loop {
        match (
            tokens.get(index),
            tokens.get(index + 1),
            tokens.get(index + 2),
        ) {
            (Some(Token::Punct('.')), Some(Token::Ident(key)), _) => {
                text.push('.');
                text.push_str(key);
                index += 2;
            }
            (Some(Token::Punct('[')), Some(Token::Str(key)), Some(Token::Punct(']'))) => {
                text.push('.');
                text.push_str(key);
                index += 3;
            }
            _ => break,
        }
    }
    (index, text)
}

impl ModuleRefs {
    /// Whether any rule reads `data.inventory` (or all of `data`, which includes it).
    pub(crate) fn reads_inventory(&self) -> bool {
        self.data_refs.iter().any(|path| {
            matches!(path.first(), None | Some(RefPart::Computed))
                || path.first() == Some(&RefPart::Key("inventory".to_owned()))
        })
    }

    /// The first reference or import Gatekeeper's regorewriter refuses, as its message.
    pub(crate) fn first_violation(&self) -> Option<String> {
        for import in &self.imports {
            let root = import.split('.').next().unwrap_or_default();
            if root == "input" {
                return Some(format!("invalid import: cannot import input: {import:?}"));
            }
            let allowed =
                root == "future" || import == "data.lib" || import.starts_with("data.lib.");
            if !allowed {
                return Some(format!("invalid import: bad import: {import:?}"));
            }
        }
        for path in &self.data_refs {
            let allowed = matches!(path.first(), Some(RefPart::Key(root)) if root == "lib" || root == "inventory");
            if !allowed {
                return Some(format!(
                    "invalid data references: disallowed ref {}",
                    display_ref(path)
                ));
            }
        }
        None
    }
}

fn display_ref(path: &[RefPart]) -> String {
    let mut text = "data".to_owned();
    for part in path {
        match part {
            RefPart::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            RefPart::Computed => text.push_str("[_]"),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_data_refs_outside_strings_and_comments() {
        let refs = scan(
            "package x\nimport data.lib.helpers\n# data.secret\nviolation[{\"msg\": \"data.no\"}] {\n  data.inventory.namespace[ns]\n  y := data[\"lib\"].z\n  input.data.q\n}\n",
        );
        assert_eq!(refs.imports, vec!["data.lib.helpers".to_owned()]);
        assert_eq!(
            refs.data_refs,
            vec![
                vec![
                    RefPart::Key("inventory".into()),
                    RefPart::Key("namespace".into()),
                    RefPart::Computed
                ],
                vec![RefPart::Key("lib".into()), RefPart::Key("z".into())],
            ]
        );
        assert!(refs.reads_inventory());
        assert_eq!(refs.first_violation(), None);
    }

    #[test]
    fn refuses_refs_and_imports_gatekeeper_refuses() {
        assert!(
            scan("package x\nviolation[r] { r := data.other.x }")
                .first_violation()
                .unwrap()
                .contains("disallowed ref data.other.x")
        );
        assert!(
            scan("package x\nviolation[r] { r := data[k] }")
                .first_violation()
                .is_some()
        );
        assert!(
            scan("package x\nimport input.review\n")
                .first_violation()
                .unwrap()
                .contains("cannot import input")
        );
        assert!(
            scan("package x\nimport data.inventory\n")
                .first_violation()
                .unwrap()
                .contains("bad import")
        );
        assert_eq!(
            scan("package x\nimport future.keywords.in\n").first_violation(),
            None
        );
        assert!(!scan("package x\nviolation[r] { r := 1.5 }").reads_inventory());
    }
}
