//! Durations as scenario files spell them: a decimal number and a unit.
//!
//! `"0.1ms"`, `"167ms"`, `"2s"`, `"1.5m"`, `"250us"`, `"40ns"`. Fractions are
//! allowed because simulated service times are often sub-millisecond, and the
//! value is kept in integer nanoseconds like every time in the simulator.

use std::fmt;

use fulcrum_balance::Nanos;
use serde::{de, Deserialize, Deserializer};

/// A non-negative duration in nanoseconds, parsed from `"<number><unit>"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub Nanos);

impl Duration {
    /// The duration in nanoseconds.
    pub fn nanos(self) -> Nanos {
        self.0
    }

    /// The duration in (fractional) milliseconds.
    pub fn millis(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// Parses `"<number><unit>"` with unit `ns`, `us`, `ms`, `s` or `m`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("duration `{text}` has no unit (write e.g. `10ms` or `2s`)"))?;
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("duration `{text}` does not start with a number"))?;
        let scale = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" | "min" => 60e9,
            other => {
                return Err(format!(
                    "duration `{text}` has unknown unit `{other}` (use ns, us, ms, s or m)"
                ))
            }
        };
        let nanos = value * scale;
        if !nanos.is_finite() || nanos < 0.0 {
            return Err(format!("duration `{text}` must be a non-negative number"));
        }
        Ok(Duration(nanos.round() as Nanos))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        if ns >= 1_000_000_000 {
            write!(f, "{}s", ns as f64 / 1e9)
        } else if ns >= 1_000_000 {
            write!(f, "{}ms", ns as f64 / 1e6)
        } else if ns >= 1_000 {
            write!(f, "{}us", ns as f64 / 1e3)
        } else {
            write!(f, "{ns}ns")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_parses_fractions_and_units() {
        assert_eq!(Duration::parse("0.1ms"), Ok(Duration(100_000)));
        assert_eq!(Duration::parse("167ms"), Ok(Duration(167_000_000)));
        assert_eq!(Duration::parse("2s"), Ok(Duration(2_000_000_000)));
        assert_eq!(Duration::parse("250us"), Ok(Duration(250_000)));
        assert_eq!(Duration::parse("1m"), Ok(Duration(60_000_000_000)));
    }

    #[test]
    fn duration_rejects_missing_or_unknown_units() {
        assert!(Duration::parse("10").unwrap_err().contains("no unit"));
        assert!(Duration::parse("10h").unwrap_err().contains("unknown unit"));
        assert!(Duration::parse("-1s").is_err());
    }
}
