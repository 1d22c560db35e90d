//! `${VAR}`, `${VAR:-default}` and `$${...}` substitution in every string value of a tree.

use serde_yaml_ng::Value;

use super::locate::{KeyPath, key_text};

/// The result of substituting one string.
#[derive(Debug, PartialEq)]
pub(crate) struct Substituted {
    /// The new text.
    pub(crate) text: String,
    /// Whether the whole string was one `${...}` expression (so the result may be re-read as a
    /// number or boolean where the field needs one).
    pub(crate) whole: bool,
}

/// Substitutes one string. The error says what is wrong, without the key path.
pub(crate) fn substitute_str(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut expressions = 0;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            // Escape: `$${X}` is the literal `${X}`.
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "unterminated `${{` in {input:?}; close it with `}}` or write `$${{` for a literal `${{`"
                ));
            };
            out.push_str(&expand(&after[..end], env)?);
            expressions += 1;
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    let whole = expressions == 1 && input.starts_with("${") && input.ends_with('}') && {
        // Exactly one expression spanning the whole input.
        input[2..].find('}') == Some(input.len() - 3)
    };
    Ok(Substituted { text: out, whole })
}

fn expand(expr: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (expr, None),
    };
    // Cursor and VS Code write `${env:NAME}`.
    let name = name.strip_prefix("env:").unwrap_or(name).trim();
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`${{{expr}}}` is not a valid substitution; write `${{NAME}}` or `${{NAME:-default}}` \
             with NAME made of letters, digits and `_` (or `$${{...}}` for a literal `${{...}}`)"
        ));
    }
    match (env(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_owned()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_owned()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set; set it, or write `${{{name}:-default}}` to give a default"
        )),
    }
}

/// Substitutes every string value of `tree` in place. Returns the paths of strings that were
/// one whole expression; on failure, the path and the message.
pub(crate) fn substitute_tree(
    tree: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<KeyPath>, (KeyPath, String)> {
    let mut whole = Vec::new();
    walk(tree, &KeyPath::root(), env, &mut whole)?;
    Ok(whole)
}

fn walk(
    node: &mut Value,
    path: &KeyPath,
    env: &dyn Fn(&str) -> Option<String>,
    whole: &mut Vec<KeyPath>,
) -> Result<(), (KeyPath, String)> {
    match node {
        Value::String(s) => {
            if s.contains('$') {
                let r = substitute_str(s, env).map_err(|m| (path.clone(), m))?;
                if r.whole {
                    whole.push(path.clone());
                }
                *s = r.text;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), env, whole)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                walk(v, &path.key(key_text(k)), env, whole)?;
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, env, whole)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        let s = |t: &str| substitute_str(t, &env).unwrap();
        assert_eq!(s("${HOME}/x").text, "/home/me/x");
        assert!(!s("${HOME}/x").whole);
        assert!(s("${HOME}").whole);
        assert!(!s("${HOME}${HOME}").whole);
        assert_eq!(s("${NOPE:-30}").text, "30");
        assert_eq!(s("${EMPTY:-d}").text, "d");
        assert_eq!(s("${EMPTY}").text, "");
        assert_eq!(s("${env:HOME}").text, "/home/me");
        assert_eq!(s("$${HOME} costs $5").text, "${HOME} costs $5");
    }

    #[test]
    fn reports_missing_and_malformed() {
        let e = substitute_str("a ${NOPE} b", &env).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        assert!(
            substitute_str("${HOME", &env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            substitute_str("${1X}", &env)
                .unwrap_err()
                .contains("not a valid")
        );
    }
}
