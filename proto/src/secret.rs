//! Secrets named in the shared config (provider API keys, speech keys): a literal, or
//! `"${NAME}"` naming an environment variable of the process that uses it. The reference
//! form keeps the secret out of shared state: only the node-agents that hold the variable
//! can use it, and `config.get` shows nothing worth stealing. (Whoever may edit the config
//! still decides where a referenced key is sent; that is an admin's power.)

/// A secret as the config writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// The secret itself.
    Literal(&'a str),
    /// `${NAME}`: the environment variable `NAME`.
    Env(&'a str),
}

impl<'a> SecretRef<'a> {
    /// Reads a config value; blank values are no secret at all.
    pub fn parse(value: &'a str) -> Option<Self> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        Some(
            match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(name) => SecretRef::Env(name.trim()),
                None => SecretRef::Literal(value),
            },
        )
    }

    /// The secret's value; `None` when it names a variable this process does not have (or
    /// has blank).
    pub fn resolve(self) -> Option<String> {
        match self {
            SecretRef::Literal(value) => Some(value.to_string()),
            SecretRef::Env(name) => std::env::var(name).ok().filter(|v| !v.trim().is_empty()),
        }
    }
}

/// Resolves an optional config value: `None` when absent, blank, or an unset variable.
pub fn resolve(value: Option<&str>) -> Option<String> {
    value
        .and_then(SecretRef::parse)
        .and_then(SecretRef::resolve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_reference() {
        assert_eq!(SecretRef::parse("sk-1"), Some(SecretRef::Literal("sk-1")));
        assert_eq!(SecretRef::parse("${KEY}"), Some(SecretRef::Env("KEY")));
        assert_eq!(SecretRef::parse("  "), None);
        assert_eq!(resolve(Some("abc")).as_deref(), Some("abc"));
        assert_eq!(resolve(Some("${ARGENT_SURELY_UNSET_VARIABLE}")), None);
        assert_eq!(resolve(None), None);
        // A reference to a variable that is set reads it.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(resolve(Some("${PATH}")), Some(path));
    }
}
