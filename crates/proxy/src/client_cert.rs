//! `X-Forwarded-Client-Cert`: a client's certificate, told to backends.
//!
//! On a listener with `client_ca`, a client that presented a certificate
//! (checked by the TLS handshake against those CAs) has it described to
//! backends in `X-Forwarded-Client-Cert`, in Envoy's format (XFCC), which
//! backend libraries already parse:
//!
//! ```text
//! Hash=<hex SHA-256 of the DER>;Subject="<RFC 4514 name>";URI=<URI SAN>;DNS=<DNS SAN>
//! ```
//!
//! with one `URI=` or `DNS=` per subject alternative name. The value is
//! built once per connection, after its handshake (a resumed session
//! carries the certificate of its full handshake). A request's own
//! `X-Forwarded-Client-Cert` is removed unless it comes from a peer in
//! `trusted_proxies` (another proxy that terminated the client's TLS);
//! then this proxy's element is appended after a comma, as Envoy's
//! `APPEND_FORWARD` does.

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// The header's name.
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The XFCC element describing the certificate `der`; `None` if it does
/// not parse (the handshake accepted it, so this does not happen with a
/// certificate a CA signed).
pub fn describe(der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = String::from("Hash=");
    for b in Sha256::digest(der) {
        out.push_str(&format!("{b:02x}"));
    }
    out.push_str(";Subject=\"");
    out.push_str(&rfc4514(cert.subject()));
    out.push('"');
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => {
                    out.push_str(";URI=");
                    out.push_str(&xfcc_value(uri));
                }
                GeneralName::DNSName(dns) => {
                    out.push_str(";DNS=");
                    out.push_str(&xfcc_value(dns));
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// A name in RFC 4514's string form: the most significant part last
/// (`CN=client,O=Example`), attributes by their short names (else their
/// dotted OIDs), special characters escaped with `\`.
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in name.iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|attr| {
                let kind = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                    .map_or_else(|_| attr.attr_type().to_id_string(), str::to_owned);
                let value = attr.as_str().map_or_else(|_| "#".to_owned(), escape);
                format!("{kind}={value}")
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

/// An attribute value escaped as RFC 4514 §2.4 asks, and with anything
/// outside printable ASCII written as `\XX` bytes (a header value carries
/// ASCII).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b'#' if i == 0 => out.push_str("\\#"),
            b' ' if i == 0 || i == last => out.push_str("\\ "),
            0x21..=0x7e | b' ' => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02X}")),
        }
    }
    out
}

/// A name from the certificate, as an unquoted XFCC value: the characters
/// that delimit XFCC (`,`, `;`, `=`, `"`) and anything outside printable
/// ASCII are percent-encoded.
fn xfcc_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b',' | b';' | b'=' | b'"' | b'%' => out.push_str(&format!("%{b:02X}")),
            0x21..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_by_hash_subject_and_names() {
        let mut params = rcgen::CertificateParams::new(vec![
            "client.example.com".to_owned(),
            "spiffe://example.org/ns/shop/sa/cart".to_owned(),
        ])
        .unwrap();
        // A URI SAN is written as such only when it parses as one.
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName("client.example.com".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://example.org/ns/shop/sa/cart".try_into().unwrap()),
        ];
        // Most significant first in the certificate, last in RFC 4514.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cart \"v2\"");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let value = describe(&der).unwrap();
        let text = value.to_str().unwrap();
        let hash: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            text,
            format!(
                "Hash={hash};Subject=\"CN=cart \\\"v2\\\",O=Example\\, Inc.\";\
                 DNS=client.example.com;URI=spiffe://example.org/ns/shop/sa/cart"
            )
        );
        assert!(describe(b"not a certificate").is_none());
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("#a, b "), "\\#a\\, b\\ ");
        assert_eq!(escape("é"), "\\C3\\A9");
        assert_eq!(xfcc_value("a;b=c,d\"%"), "a%3Bb%3Dc%2Cd%22%25");
    }
}
