//! What a stdio MCP server's process starts with: a scrubbed environment and, optionally,
//! resource limits.
//!
//! A stdio server is a program agentkit starts, often fetched from a package registry a
//! moment before (`npx -y …`, `uvx …`). It gets only what it is given: the variables its
//! entry declares (`env:`), the ones it is allowed to inherit by name (`inherit_env:`), and
//! [`BASE_ENV`] — never agentkit's own secrets (provider keys, the server's admin key, the
//! database URL). With `limits:` set, the program is started by `/bin/sh` after `ulimit`, so
//! the limits hold from its first instruction and for everything it starts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use agentkit_core::McpProcessLimits;

/// The variables every stdio server inherits (when set): what the official MCP SDKs pass to
/// the servers they start, so programs find their home, tools and terminal.
#[cfg(not(windows))]
pub const BASE_ENV: &[&str] = &["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

/// The variables every stdio server inherits (when set): what the official MCP SDKs pass to
/// the servers they start, so programs find their home, tools and terminal.
#[cfg(windows)]
pub const BASE_ENV: &[&str] = &[
    "APPDATA",
    "HOMEDRIVE",
    "HOMEPATH",
    "LOCALAPPDATA",
    "PATH",
    "PROCESSOR_ARCHITECTURE",
    "SYSTEMDRIVE",
    "SYSTEMROOT",
    "TEMP",
    "USERNAME",
    "USERPROFILE",
    "PROGRAMFILES",
];

/// How to start one stdio server.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SpawnSpec<'a> {
    /// The program.
    pub command: &'a str,
    /// Its arguments.
    pub args: &'a [String],
    /// Its declared variables.
    pub env: &'a BTreeMap<String, String>,
    /// Names or `PREFIX*` patterns of variables it inherits.
    pub inherit_env: &'a [String],
    /// Its resource limits.
    pub limits: McpProcessLimits,
    /// Its working directory.
    pub cwd: Option<&'a Path>,
}

/// Whether `name` matches an `inherit_env` entry: equal, or starting with the part before a
/// trailing `*`.
fn inherits(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The complete environment of a stdio server started from a process whose environment is
/// `parent`: [`BASE_ENV`] and the variables `inherit_env` matches (values that start with
/// `()`, shell functions, are skipped as the official SDKs skip them), then `env` over them.
#[must_use]
pub fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    inherit_env: &[String],
    env: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let mut out: BTreeMap<OsString, OsString> = parent
        .into_iter()
        .filter(|(k, v)| {
            let Some(name) = k.to_str() else { return false };
            let wanted = BASE_ENV.contains(&name) || inherits(inherit_env, name);
            wanted && !v.to_string_lossy().starts_with("()")
        })
        .collect();
    for (k, v) in env {
        out.insert(k.into(), v.into());
    }
    out
}

/// The program and arguments that start `command args` under `limits`: unchanged without
/// limits; otherwise `/bin/sh -c 'ulimit … && exec "$0" "$@"' command args…`.
///
/// # Errors
///
/// A message when limits are asked for on a system without `/bin/sh` and `ulimit` (Windows).
pub fn limited_command(
    command: &str,
    args: &[String],
    limits: McpProcessLimits,
) -> Result<(String, Vec<String>), String> {
    if limits.is_empty() {
        return Ok((command.to_owned(), args.to_vec()));
    }
    if cfg!(windows) {
        return Err(
            "resource limits (`limits:`) of stdio MCP servers need a Unix system; remove them \
             on Windows"
                .into(),
        );
    }
    let mut script = Vec::new();
    if let Some(mb) = limits.memory_mb {
        // KiB; saturating, so a huge value is "as good as unlimited", never an overflow.
        script.push(format!("ulimit -d {}", mb.get().saturating_mul(1024)));
    }
    if let Some(s) = limits.cpu_seconds {
        script.push(format!("ulimit -t {}", s.get()));
    }
    if let Some(n) = limits.open_files {
        script.push(format!("ulimit -n {}", n.get()));
    }
    script.push("exec \"$0\" \"$@\"".into());
    let mut argv = vec!["-c".to_owned(), script.join(" && "), command.to_owned()];
    argv.extend(args.iter().cloned());
    Ok(("/bin/sh".into(), argv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn only_base_declared_and_inherited_variables_reach_the_child() {
        let parent = vars(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("OPENAI_API_KEY", "sk-secret"),
            ("AGENTKIT_ADMIN_KEY", "admin"),
            ("LC_ALL", "C.UTF-8"),
            ("LANG", "en"),
            ("BASH_FUNC_x%%", "() { :; }"),
            ("TERM", "() { evil; }"),
        ]);
        let mut env = BTreeMap::new();
        env.insert("GITHUB_TOKEN".to_owned(), "ghp".to_owned());
        env.insert("PATH".to_owned(), "/opt/bin".to_owned());
        let got = child_env(parent, &["LC_*".to_owned(), "LANG".to_owned()], &env);
        let names: Vec<&str> = got.keys().filter_map(|k| k.to_str()).collect();
        assert_eq!(names, ["GITHUB_TOKEN", "HOME", "LANG", "LC_ALL", "PATH"]);
        assert_eq!(got[&OsString::from("PATH")], "/opt/bin", "declared wins");
    }

    #[test]
    fn limits_wrap_the_command_in_ulimit_and_exec() {
        let args = vec!["a b".to_owned(), "$HOME".to_owned()];
        let (c, a) = limited_command("node", &args, McpProcessLimits::default()).unwrap();
        assert_eq!((c.as_str(), a), ("node", args.clone()));
        let mut limits = McpProcessLimits::default();
        limits.memory_mb = std::num::NonZeroU64::new(64);
        limits.open_files = std::num::NonZeroU64::new(32);
        let (c, a) = limited_command("node", &args, limits).unwrap();
        assert_eq!(c, "/bin/sh");
        assert_eq!(
            a,
            [
                "-c",
                "ulimit -d 65536 && ulimit -n 32 && exec \"$0\" \"$@\"",
                "node",
                "a b",
                "$HOME"
            ]
        );
    }

    proptest! {
        #[test]
        fn no_undeclared_secret_ever_passes(
            name in "[A-Z_]{1,12}", value in ".{0,20}", inherit in proptest::collection::vec("[A-Z_]{1,6}\\*?", 0..4)
        ) {
            let got = child_env(vars(&[(&name, &value)]), &inherit, &BTreeMap::new());
            let passed = got.contains_key(&OsString::from(&name));
            let allowed = BASE_ENV.contains(&name.as_str()) || inherits(&inherit, &name);
            prop_assert!(!passed || allowed);
            prop_assert!(!passed || !value.starts_with("()"));
        }
    }
}
