//! The admin bearer token: where it comes from, and how it is checked.
//!
//! The token is read from `[admin] token_file` or, when none is configured,
//! from the `FULCRUM_ADMIN_TOKEN` environment variable. It is compared in
//! constant time and never formatted: [`Token`]'s `Debug` prints `***`, and
//! nothing in the admin module logs request headers.

use std::net::SocketAddr;

use fulcrum_config::AdminConfig;

use super::AdminError;

/// The environment variable holding the token when no `token_file` is set.
pub const TOKEN_ENV: &str = "FULCRUM_ADMIN_TOKEN";

/// A bearer token. Its value cannot be printed.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// Wraps a token value (surrounding whitespace is not part of it).
    /// Returns `None` for an empty value.
    pub fn new(value: &str) -> Option<Token> {
        let v = value.trim();
        (!v.is_empty()).then(|| Token(v.to_owned()))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(given) = strip_bearer(value) else {
            return false;
        };
        constant_time_eq(given, self.0.as_bytes())
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

/// Compares two byte strings in time that depends only on their lengths,
/// never on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// The configured token: `token_file` if set, else `FULCRUM_ADMIN_TOKEN`.
///
/// Refuses a non-loopback `bind` without a token (validation already
/// requires `token_file` there; this also covers an empty file).
pub fn load_token(config: &AdminConfig, bind: SocketAddr) -> Result<Option<Token>, AdminError> {
    let token = match &config.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| AdminError::TokenFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Some(Token::new(&text).ok_or_else(|| AdminError::TokenFile {
                path: path.clone(),
                reason: "the file is empty".into(),
            })?)
        }
        None => std::env::var(TOKEN_ENV).ok().and_then(|v| Token::new(&v)),
    };
    if token.is_none() && !bind.ip().is_loopback() {
        return Err(AdminError::NoToken { address: bind });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_accepts_only_the_exact_bearer_value() {
        let t = Token::new(" s3cret\n").unwrap();
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(t.accepts(Some(b"bearer s3cret")));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Bearer s3cret2")));
        assert!(!t.accepts(Some(b"Basic s3cret")));
        assert!(!t.accepts(Some(b"Bearer ")));
        assert!(!t.accepts(None));
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn constant_time_eq_compares_lengths_too() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
