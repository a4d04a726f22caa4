//! Reads the server name (SNI, RFC 6066 §3) from a TLS ClientHello without
//! terminating TLS, for passthrough routing on tcp listeners.
//!
//! The parser works on the bytes read so far and answers "found", "no
//! name", "need more bytes" or "not a ClientHello". It is bounded (a
//! handshake message larger than [`MAX_CLIENT_HELLO`] is refused), checks
//! every length against what remains, never panics on any input (a property
//! test feeds it random bytes), and reassembles a ClientHello split across
//! several TLS records, as large post-quantum key shares make common.

/// Largest ClientHello handshake message accepted. Browsers send 0.5–2 KiB
/// (more with post-quantum key shares); 16 KiB leaves room for many
/// extensions while bounding what one unauthenticated client can make the
/// proxy hold.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// TLS record header length.
const RECORD_HEADER: usize = 5;
/// Record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake type of ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension type of server_name.
const SERVER_NAME: u16 = 0;

/// What the bytes read so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sni {
    /// The ClientHello names this server (lowercase ASCII).
    Name(String),
    /// A whole ClientHello without a server name.
    Absent,
    /// A valid beginning; at least this many more bytes are needed.
    Need(usize),
}

/// Why the bytes are not a usable ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a TLS ClientHello: {0}")]
pub struct NotClientHello(pub &'static str);

/// Parses the server name from the first bytes a client sent.
pub fn parse(buf: &[u8]) -> Result<Sni, NotClientHello> {
    // Reassemble the handshake message from consecutive handshake records.
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Ok(Sni::Need(at + RECORD_HEADER - buf.len()));
        };
        if header[0] != HANDSHAKE {
            return Err(NotClientHello("first record is not a handshake"));
        }
        if header[1] != 3 {
            return Err(NotClientHello("unknown record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > (1 << 14) + 2048 {
            return Err(NotClientHello("bad record length"));
        }
        let body_start = at + RECORD_HEADER;
        let Some(body) = buf.get(body_start..body_start + len) else {
            return Ok(Sni::Need(body_start + len - buf.len()));
        };
        message.extend_from_slice(body);
        at = body_start + len;
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Err(NotClientHello(
                    "first handshake message is not a ClientHello",
                ));
            }
            let hello_len = (usize::from(message[1]) << 16)
                | (usize::from(message[2]) << 8)
                | usize::from(message[3]);
            if hello_len > MAX_CLIENT_HELLO {
                return Err(NotClientHello("ClientHello larger than 16 KiB"));
            }
            if message.len() >= 4 + hello_len {
                return client_hello(&message[4..4 + hello_len]);
            }
        }
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotClientHello> {
        if n > self.0.len() {
            return Err(NotClientHello("a length runs past its message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, NotClientHello> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, NotClientHello> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vector(&mut self, prefix: usize) -> Result<Reader<'a>, NotClientHello> {
        let len = if prefix == 1 {
            usize::from(self.u8()?)
        } else {
            usize::from(self.u16()?)
        };
        Ok(Reader(self.take(len)?))
    }
}

fn client_hello(body: &[u8]) -> Result<Sni, NotClientHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vector(1)?; // legacy_session_id
    r.vector(2)?; // cipher_suites
    r.vector(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        return Ok(Sni::Absent); // no extensions at all
    }
    let mut extensions = r.vector(2)?;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vector(2)?;
        if kind != SERVER_NAME {
            continue;
        }
        let mut names = data.vector(2)?;
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let name = names.vector(2)?.0;
            if name_type == 0 {
                return host_name(name).map(Sni::Name);
            }
        }
        return Ok(Sni::Absent);
    }
    Ok(Sni::Absent)
}

fn host_name(name: &[u8]) -> Result<String, NotClientHello> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(NotClientHello("server name is not a DNS host name"));
    }
    let mut s = String::from_utf8_lossy(name).into_owned();
    s.make_ascii_lowercase();
    Ok(s.trim_end_matches('.').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal ClientHello record naming `name` (or none), built by hand.
    fn hello(name: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        // A supported_versions extension before server_name.
        ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]);
        if let Some(n) = name {
            let n = n.as_bytes();
            let list_len = 3 + n.len();
            ext.extend_from_slice(&SERVER_NAME.to_be_bytes());
            ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            ext.extend_from_slice(&(list_len as u16).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
            ext.extend_from_slice(n);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut msg = vec![CLIENT_HELLO, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1, (msg.len() >> 8) as u8, msg.len() as u8];
        rec.extend_from_slice(&msg);
        rec
    }

    #[test]
    fn parse_finds_the_server_name() {
        assert_eq!(
            parse(&hello(Some("A.Example.com"))),
            Ok(Sni::Name("a.example.com".into()))
        );
        assert_eq!(parse(&hello(None)), Ok(Sni::Absent));
    }

    #[test]
    fn parse_asks_for_more_until_the_hello_is_whole() {
        let full = hello(Some("a.example.com"));
        for cut in 0..full.len() {
            match parse(&full[..cut]) {
                Ok(Sni::Need(n)) => assert!(n >= 1 && cut + n <= full.len(), "cut {cut} need {n}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_reassembles_a_hello_split_across_records() {
        let one = hello(Some("split.example.com"));
        let msg = &one[RECORD_HEADER..];
        let (a, b) = msg.split_at(10);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[HANDSHAKE, 3, 1, 0, part.len() as u8]);
            two.extend_from_slice(part);
        }
        assert_eq!(parse(&two), Ok(Sni::Name("split.example.com".into())));
    }

    #[test]
    fn parse_refuses_what_is_not_a_client_hello() {
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(&[HANDSHAKE, 3, 1, 0, 4, 2, 0, 0, 0]).is_err());
        assert!(parse(&[HANDSHAKE, 3, 1, 0, 4, 1, 0xff, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_a_mutated_hello(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)) {
            let mut bytes = hello(Some("mutated.example.com"));
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            let _ = parse(&bytes);
        }
    }
}
