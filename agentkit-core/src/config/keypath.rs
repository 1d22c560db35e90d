//! Key paths into a config tree, displayed as `mcp.servers.github.args[1]`.

use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A map key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// The path of a value inside a config tree, displayed as `mcp.servers.github.args[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// The empty path (the whole file).
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// A path of map keys.
    pub(crate) fn keys<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(keys.into_iter().map(|k| Seg::Key(k.into())).collect())
    }

    /// This path with a map key appended.
    pub(crate) fn key(&self, key: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }

    /// This path with a list index appended.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }

    /// Whether the path is empty.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
