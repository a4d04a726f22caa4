//! The PROXY protocol (HAProxy, versions 1 and 2): a header a load balancer
//! sends before the client's bytes so the next hop learns the real client
//! address.
//!
//! * [`encode`] builds the header Fulcrum sends to backends of a cluster
//!   with `proxy_protocol = "v1" | "v2"`.
//! * [`parse`] is the bounded, allocation-free parser for headers from a
//!   trusted upstream (`accept_proxy_protocol = true`); [`read_header`]
//!   drives it over a stream reading exactly the header's bytes, so what
//!   follows (a TLS ClientHello, say) is left unread for the next layer.
//!
//! The parser never panics on any input and refuses anything it does not
//! fully understand: a malformed header closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use fulcrum_config::ProxyProtocol;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature (12 bytes).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The shortest header of either version (`PROXY UNKNOWN\r\n`), so a first
/// read of this many bytes never reads past a header.
pub const MIN_HEADER: usize = 15;
/// Most address-and-TLV bytes accepted after a version 2 fixed header: the
/// addresses take at most 216 (unix sockets); TLVs such as ALPN or an
/// authority fit well within 4 KiB, and the bound keeps a hostile length
/// from holding memory.
const V2_MAX_PAYLOAD: usize = 4096;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection from `source` to `destination`.
    Proxied {
        /// The real client.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// A connection of the upstream's own (health checks: v2 `LOCAL`, v1
    /// `UNKNOWN`) or of an address family without IP; use the socket's peer.
    Local,
}

/// Result of [`parse`] on a prefix of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of this many bytes.
    Done(Header, usize),
    /// A valid beginning; at least this many more bytes are needed.
    Need(usize),
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed PROXY protocol header: {0}")]
pub struct Malformed(pub &'static str);

/// Parses the beginning of a stream as a PROXY header of either version.
pub fn parse(buf: &[u8]) -> Result<Parsed, Malformed> {
    let sig = buf.len().min(V2_SIGNATURE.len());
    if buf.first() == Some(&b'\r') {
        if buf[..sig] != V2_SIGNATURE[..sig] {
            return Err(Malformed("bad version 2 signature"));
        }
        return parse_v2(buf);
    }
    let start = buf.len().min(6);
    if buf[..start] != b"PROXY "[..start] {
        return Err(Malformed("neither `PROXY ` nor the version 2 signature"));
    }
    parse_v1(buf)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Malformed> {
    if buf.len() < 16 {
        return Ok(Parsed::Need(16 - buf.len()));
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(Malformed("version 2 signature with another version"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Malformed("unknown version 2 command")),
    };
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(Malformed("version 2 header longer than 4 KiB"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(Parsed::Need(total - buf.len()));
    }
    let body = &buf[16..total];
    let addresses = match family >> 4 {
        1 if body.len() >= 12 => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[o],
                    body[o + 1],
                    body[o + 2],
                    body[o + 3],
                ))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        2 if body.len() >= 36 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(a))
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        1 | 2 => return Err(Malformed("version 2 addresses shorter than their family")),
        0 | 3 => None,
        _ => return Err(Malformed("unknown version 2 address family")),
    };
    let header = match (local, addresses) {
        (false, Some((source, destination))) => Header::Proxied {
            source,
            destination,
        },
        _ => Header::Local,
    };
    Ok(Parsed::Done(header, total))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Malformed> {
    let end = buf.windows(2).position(|w| w == b"\r\n");
    let Some(end) = end else {
        if buf.len() >= V1_MAX {
            return Err(Malformed("version 1 line longer than 107 bytes"));
        }
        if buf
            .iter()
            .any(|&b| b == b'\n' || !(b == b'\r' || (0x20..0x7f).contains(&b)))
        {
            return Err(Malformed("version 1 line with a control character"));
        }
        return Ok(Parsed::Need(1));
    };
    if end + 2 > V1_MAX {
        return Err(Malformed("version 1 line longer than 107 bytes"));
    }
    let line =
        std::str::from_utf8(&buf[6..end]).map_err(|_| Malformed("version 1 line is not text"))?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        Some("UNKNOWN") => Header::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || {
                fields
                    .next()
                    .ok_or(Malformed("version 1 line with missing fields"))
            };
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            let ip = |s: &str| -> Result<IpAddr, Malformed> {
                let ip: IpAddr = s.parse().map_err(|_| Malformed("version 1 bad address"))?;
                if ip.is_ipv4() != (family == "TCP4") {
                    return Err(Malformed("version 1 address of the wrong family"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, Malformed> {
                if s.is_empty()
                    || s.len() > 5
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(Malformed("version 1 bad port"));
                }
                s.parse().map_err(|_| Malformed("version 1 bad port"))
            };
            let header = Header::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            };
            if fields.next().is_some() {
                return Err(Malformed("version 1 line with extra fields"));
            }
            header
        }
        _ => return Err(Malformed("version 1 unknown protocol family")),
    };
    Ok(Parsed::Done(header, end + 2))
}

/// Why a header could not be read from a stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a PROXY header.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The stream failed or ended first.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one header from `stream`, consuming exactly its bytes.
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Header, ReadError> {
    let mut buf = [0u8; 16 + V2_MAX_PAYLOAD];
    let mut have = 0;
    let mut need = MIN_HEADER;
    loop {
        let end = have + need;
        if end > buf.len() {
            return Err(Malformed("header too long").into());
        }
        stream.read_exact(&mut buf[have..end]).await?;
        have = end;
        match parse(&buf[..have])? {
            Parsed::Done(header, _) => return Ok(header),
            Parsed::Need(n) => need = n,
        }
    }
}

/// The header announcing a connection from `source` to `destination`.
pub fn encode(version: ProxyProtocol, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    // Mixed families (an IPv4 client on an IPv6 socket) are sent as IPv6.
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (source, destination)
        }
        _ => (to_v6(source), to_v6(destination)),
    };
    match version {
        ProxyProtocol::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "192.0.2.7:56324".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
    }

    #[test]
    fn encode_then_parse_round_trips_both_versions() {
        let (s, d) = addrs();
        for v in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let bytes = encode(v, s, d);
            let want = Header::Proxied {
                source: s,
                destination: d,
            };
            assert_eq!(parse(&bytes), Ok(Parsed::Done(want, bytes.len())), "{v:?}");
        }
        let s6: SocketAddr = "[2001:db8::1]:1000".parse().unwrap();
        let bytes = encode(ProxyProtocol::V2, s6, d);
        let Ok(Parsed::Done(Header::Proxied { source, .. }, _)) = parse(&bytes) else {
            panic!("v2 over IPv6 did not parse");
        };
        assert_eq!(source, s6);
    }

    #[test]
    fn parse_v1_matches_the_specification_example() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let Ok(Parsed::Done(
            Header::Proxied {
                source,
                destination,
            },
            n,
        )) = parse(line)
        else {
            panic!("example refused");
        };
        assert_eq!(source, "192.168.0.1:56324".parse().unwrap());
        assert_eq!(destination, "192.168.0.11:443".parse().unwrap());
        assert_eq!(&line[n..], b"GET /");
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Done(Header::Local, 15))
        );
    }

    #[test]
    fn parse_asks_for_more_on_a_valid_prefix() {
        let (s, d) = addrs();
        let bytes = encode(ProxyProtocol::V2, s, d);
        assert_eq!(parse(&bytes[..16]), Ok(Parsed::Need(12)));
        assert_eq!(parse(&bytes[..5]), Ok(Parsed::Need(11)));
        assert_eq!(parse(b"PROXY TCP4 1.2"), Ok(Parsed::Need(1)));
    }

    #[test]
    fn parse_refuses_malformed_headers() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x04abcd",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
        ] {
            assert!(
                parse(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Parsed::Done(_, n)) = parse(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn parse_never_panics_after_a_signature(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = [V2_SIGNATURE.as_slice(), &tail].concat();
            let _ = parse(&bytes);
            let bytes = [b"PROXY ".as_slice(), &tail].concat();
            let _ = parse(&bytes);
        }
    }
}
