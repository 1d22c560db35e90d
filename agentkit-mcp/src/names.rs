//! Tool names that every provider accepts: `[a-zA-Z0-9_-]`, at most 64 characters.

/// The longest tool name OpenAI and Anthropic accept.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// `server{sep}tool`, with invalid characters replaced by `_` and, when longer than
/// [`MAX_TOOL_NAME_LEN`], shortened deterministically: the head of the name is kept and an
/// 8-hex-digit FNV-1a hash of the full name is appended, so two long names stay distinct and the
/// same name always maps to the same result.
///
/// ```
/// use agentkit_mcp::qualified_tool_name;
/// assert_eq!(qualified_tool_name("fs", "read file", "__"), "fs__read_file");
/// let long = qualified_tool_name("server", &"x".repeat(100), "__");
/// assert_eq!(long.len(), 64);
/// assert_eq!(long, qualified_tool_name("server", &"x".repeat(100), "__"));
/// ```
#[must_use]
pub fn qualified_tool_name(server: &str, tool: &str, separator: &str) -> String {
    let full = format!("{server}{separator}{tool}");
    sanitize(&full)
}

/// Replace characters outside `[a-zA-Z0-9_-]` and shorten to [`MAX_TOOL_NAME_LEN`].
#[must_use]
pub fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = if clean.is_empty() {
        "tool".to_owned()
    } else {
        clean
    };
    if clean.len() <= MAX_TOOL_NAME_LEN && clean == name {
        return clean;
    }
    if clean.len() <= MAX_TOOL_NAME_LEN {
        return clean;
    }
    let hash = fnv1a(name.as_bytes());
    let suffix = format!("_{hash:08x}");
    let keep = MAX_TOOL_NAME_LEN - suffix.len();
    format!("{}{suffix}", &clean[..keep])
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_long_names_stay_distinct() {
        let a = qualified_tool_name("s", &format!("{}a", "x".repeat(80)), "__");
        let b = qualified_tool_name("s", &format!("{}b", "x".repeat(80)), "__");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_TOOL_NAME_LEN && b.len() <= MAX_TOOL_NAME_LEN);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn unicode_is_replaced() {
        assert_eq!(sanitize("café.read"), "caf__read");
    }
}
