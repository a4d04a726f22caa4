//! ORCA load reports: the `endpoint-load-metrics` response header.
//!
//! ORCA (Open Request Cost Aggregation, gRFC A51; Envoy's
//! `envoy.extensions.load_balancing_policies` and `orca_load_report`) lets
//! a backend tell its proxies how loaded it is — CPU, memory, an
//! application-defined utilisation, queries and errors per second, and
//! named metrics. Every proxy in front of the backend then sees the same
//! number, which a local in-flight count cannot give.
//!
//! Envoy accepts the header in three encodings, named by a prefix:
//!
//! ```text
//! endpoint-load-metrics: TEXT cpu_utilization=0.3, rps_fractional=10, named_metrics.foo=1
//! endpoint-load-metrics: JSON {"cpu_utilization": 0.3, "named_metrics": {"foo": 1}}
//! endpoint-load-metrics: BIN <base64 protobuf>
//! ```
//!
//! [`parse`] reads TEXT and JSON (a small hand-written parser for the flat
//! objects ORCA uses, so this crate needs no JSON dependency) and refuses
//! BIN. Input comes from the network: parsing is total (never panics),
//! bounded ([`MAX_METRICS`] map entries, nesting one level deep) and
//! rejects non-finite and negative numbers.

use std::fmt;

/// Most entries kept across the map fields (`named_metrics`,
/// `utilization`, `request_cost`) of one report; a header is bounded in
/// size anyway, this bounds the allocation per report.
pub const MAX_METRICS: usize = 32;

/// One parsed load report. Absent fields are `None` / empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// CPU utilisation, 0.0..=1.0 (may exceed 1 on a burstable machine).
    pub cpu_utilization: Option<f64>,
    /// Memory utilisation, 0.0..=1.0.
    pub mem_utilization: Option<f64>,
    /// Application-defined utilisation, preferred by gRPC's weighted
    /// round-robin (A58) over CPU when present.
    pub application_utilization: Option<f64>,
    /// Queries per second (the older integer `rps` is read into this too).
    pub rps_fractional: Option<f64>,
    /// Errors per second.
    pub eps: Option<f64>,
    /// `named_metrics.NAME=value`: application metrics.
    pub named_metrics: Vec<(String, f64)>,
    /// `utilization.NAME=value`: named utilisations.
    pub utilization: Vec<(String, f64)>,
    /// `request_cost.NAME=value`: costs of this request.
    pub request_cost: Vec<(String, f64)>,
}

impl LoadReport {
    /// The single utilisation figure a balancer should use, as gRPC's A58:
    /// `application_utilization` when reported and positive, otherwise
    /// `cpu_utilization`. `None` when neither is reported.
    pub fn utilisation(&self) -> Option<f64> {
        match self.application_utilization {
            Some(u) if u > 0.0 => Some(u),
            _ => self.cpu_utilization,
        }
    }

    fn map_field(&mut self, field: &str) -> Option<&mut Vec<(String, f64)>> {
        match field {
            "named_metrics" => Some(&mut self.named_metrics),
            "utilization" => Some(&mut self.utilization),
            "request_cost" => Some(&mut self.request_cost),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: f64) -> Result<(), OrcaError> {
        if !value.is_finite() || value < 0.0 {
            return Err(OrcaError::BadValue { key: truncate(key) });
        }
        match key {
            "cpu_utilization" => self.cpu_utilization = Some(value),
            "mem_utilization" => self.mem_utilization = Some(value),
            "application_utilization" => self.application_utilization = Some(value),
            "rps_fractional" | "rps" => self.rps_fractional = Some(value),
            "eps" => self.eps = Some(value),
            _ => {
                let Some((field, name)) = key.split_once('.') else {
                    return Ok(()); // an unknown scalar: ignore, ORCA grows
                };
                if name.is_empty() {
                    return Err(OrcaError::BadKey { key: truncate(key) });
                }
                let entries =
                    self.named_metrics.len() + self.utilization.len() + self.request_cost.len();
                if let Some(list) = self.map_field(field) {
                    if entries >= MAX_METRICS {
                        return Err(OrcaError::TooManyMetrics);
                    }
                    list.push((name.to_owned(), value));
                }
            }
        }
        Ok(())
    }
}

/// Why a header value is not a load report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrcaError {
    /// Neither `TEXT ` nor `JSON ` (nor `BIN `) in front.
    #[error("endpoint-load-metrics: unknown format, expected a `TEXT` or `JSON` prefix")]
    UnknownFormat,
    /// The binary (protobuf) form is not supported.
    #[error("endpoint-load-metrics: the BIN format is not supported, send TEXT or JSON")]
    Binary,
    /// Malformed syntax at a byte offset.
    #[error("endpoint-load-metrics: malformed {format} at byte {at}")]
    Syntax {
        /// `TEXT` or `JSON`.
        format: &'static str,
        /// Byte offset in the value after the prefix.
        at: usize,
    },
    /// A value that is not a finite, non-negative number.
    #[error("endpoint-load-metrics: `{key}` must be a finite, non-negative number")]
    BadValue {
        /// The key (truncated).
        key: String,
    },
    /// A map key without a name (`named_metrics.`).
    #[error("endpoint-load-metrics: `{key}` has no metric name")]
    BadKey {
        /// The key (truncated).
        key: String,
    },
    /// More than [`MAX_METRICS`] named entries.
    #[error("endpoint-load-metrics: more than {MAX_METRICS} named metrics")]
    TooManyMetrics,
}

fn truncate(key: &str) -> String {
    key.chars().take(64).collect()
}

/// Parses an `endpoint-load-metrics` header value.
pub fn parse(value: &str) -> Result<LoadReport, OrcaError> {
    let value = value.trim();
    let (format, rest) = value.split_once(' ').unwrap_or((value, ""));
    if format.eq_ignore_ascii_case("TEXT") {
        parse_text(rest)
    } else if format.eq_ignore_ascii_case("JSON") {
        Json {
            s: rest.as_bytes(),
            at: 0,
        }
        .report()
    } else if format.eq_ignore_ascii_case("BIN") {
        Err(OrcaError::Binary)
    } else {
        Err(OrcaError::UnknownFormat)
    }
}

fn parse_text(s: &str) -> Result<LoadReport, OrcaError> {
    let mut report = LoadReport::default();
    let mut at = 0;
    for item in s.split(',') {
        let offset = at;
        at += item.len() + 1;
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let syntax = OrcaError::Syntax {
            format: "TEXT",
            at: offset,
        };
        let (key, number) = item.split_once('=').ok_or(syntax.clone())?;
        let (key, number) = (key.trim(), number.trim());
        if key.is_empty() || !is_number(number) {
            return Err(syntax);
        }
        let value: f64 = number.parse().map_err(|_| syntax)?;
        report.set(key, value)?;
    }
    Ok(report)
}

/// Only plain decimal numbers: Rust's parser also takes `inf` and `NaN`.
fn is_number(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit())
}

/// A cursor over the flat JSON object ORCA sends: string keys; number
/// values, or (for the map fields) one nested object of numbers; other
/// scalars (strings, booleans, null) are skipped.
struct Json<'a> {
    s: &'a [u8],
    at: usize,
}

impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json at {}", self.at)
    }
}

impl Json<'_> {
    fn error(&self) -> OrcaError {
        OrcaError::Syntax {
            format: "JSON",
            at: self.at,
        }
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), OrcaError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn report(mut self) -> Result<LoadReport, OrcaError> {
        let mut report = LoadReport::default();
        self.object(&mut report, None)?;
        self.skip_ws();
        if self.at != self.s.len() {
            return Err(self.error());
        }
        Ok(report)
    }

    /// `{ "key": value, ... }`; inside a map field `prefix` is its name.
    fn object(&mut self, report: &mut LoadReport, prefix: Option<&str>) -> Result<(), OrcaError> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            self.skip_ws();
            match self.s.get(self.at) {
                Some(b'{') if prefix.is_none() => self.object(report, Some(&key))?,
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't' | b'f' | b'n') => self.literal()?,
                Some(_) => {
                    let value = self.number()?;
                    match prefix {
                        Some(field) => report.set(&format!("{field}.{key}"), value)?,
                        None => report.set(&key, value)?,
                    }
                }
                None => return Err(self.error()),
            }
            if self.eat(b'}') {
                return Ok(());
            }
            self.expect(b',')?;
        }
    }

    /// A string without escapes other than `\"` and `\\` (ORCA keys are identifiers).
    fn string(&mut self) -> Result<String, OrcaError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.at) {
                None => return Err(self.error()),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(out).map_err(|_| self.error());
                }
                Some(b'\\') => {
                    match self.s.get(self.at + 1) {
                        Some(&c @ (b'"' | b'\\' | b'/')) => out.push(c),
                        _ => return Err(self.error()),
                    }
                    self.at += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<(), OrcaError> {
        for word in [&b"true"[..], b"false", b"null"] {
            if self.s[self.at..].starts_with(word) {
                self.at += word.len();
                return Ok(());
            }
        }
        Err(self.error())
    }

    fn number(&mut self) -> Result<f64, OrcaError> {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|&b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).map_err(|_| self.error())?;
        if !is_number(text) {
            return Err(self.error());
        }
        text.parse().map_err(|_| self.error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orca_parses_text() {
        let r = parse(
            "TEXT cpu_utilization=0.3, rps_fractional=10, mem_utilization=0.5, named_metrics.foo=1",
        )
        .unwrap();
        assert_eq!(r.cpu_utilization, Some(0.3));
        assert_eq!(r.mem_utilization, Some(0.5));
        assert_eq!(r.rps_fractional, Some(10.0));
        assert_eq!(r.named_metrics, [("foo".to_owned(), 1.0)]);
        assert_eq!(r.utilisation(), Some(0.3));
    }

    #[test]
    fn orca_parses_json() {
        let r = parse(
            r#"JSON {"cpu_utilization": 0.3, "application_utilization": 0.7, "eps": 2e1,
                "named_metrics": {"foo": 1, "bar": 2.5}, "note": "x", "ok": true}"#,
        )
        .unwrap();
        assert_eq!(r.cpu_utilization, Some(0.3));
        assert_eq!(r.eps, Some(20.0));
        assert_eq!(
            r.named_metrics,
            [("foo".to_owned(), 1.0), ("bar".to_owned(), 2.5)]
        );
        assert_eq!(
            r.utilisation(),
            Some(0.7),
            "application utilisation wins (A58)"
        );
        assert_eq!(parse("JSON {}").unwrap(), LoadReport::default());
    }

    #[test]
    fn orca_rejects_garbage_with_a_reason() {
        assert_eq!(parse("cpu_utilization=1"), Err(OrcaError::UnknownFormat));
        assert_eq!(parse("BIN CgQIAQ=="), Err(OrcaError::Binary));
        assert!(matches!(
            parse("TEXT cpu_utilization"),
            Err(OrcaError::Syntax { .. })
        ));
        assert!(matches!(
            parse("TEXT cpu_utilization=NaN"),
            Err(OrcaError::Syntax { .. })
        ));
        assert!(matches!(
            parse("TEXT cpu_utilization=-1"),
            Err(OrcaError::BadValue { .. })
        ));
        assert!(matches!(
            parse("TEXT cpu_utilization=1e999"),
            Err(OrcaError::BadValue { .. })
        ));
        assert!(matches!(
            parse(r#"JSON {"cpu_utilization": 0.3"#),
            Err(OrcaError::Syntax { .. })
        ));
        assert!(matches!(
            parse(r#"JSON {"a": {"b": {"c": 1}}}"#),
            Err(OrcaError::Syntax { .. })
        ));
        let many: Vec<String> = (0..=MAX_METRICS)
            .map(|i| format!("named_metrics.m{i}=1"))
            .collect();
        assert_eq!(
            parse(&format!("TEXT {}", many.join(","))),
            Err(OrcaError::TooManyMetrics)
        );
    }

    #[test]
    fn orca_utilisation_falls_back_to_cpu() {
        let r = parse("TEXT application_utilization=0, cpu_utilization=0.4").unwrap();
        assert_eq!(r.utilisation(), Some(0.4));
        assert_eq!(parse("TEXT eps=1").unwrap().utilisation(), None);
    }

    proptest! {
        #[test]
        fn orca_parse_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn orca_parse_never_panics_on_near_misses(
            format in prop::sample::select(vec!["TEXT ", "JSON ", "json ", "TEXT", ""]),
            body in r#"[{}":,.=a-z_0-9eE+\- \\]{0,60}"#,
        ) {
            let _ = parse(&format!("{format}{body}"));
        }

        #[test]
        fn orca_text_round_trips_its_fields(cpu in 0.0f64..4.0, rps in 0.0f64..1e6) {
            let r = parse(&format!("TEXT cpu_utilization={cpu}, rps_fractional={rps}")).unwrap();
            prop_assert_eq!(r.cpu_utilization, Some(cpu));
            prop_assert_eq!(r.rps_fractional, Some(rps));
        }
    }
}
