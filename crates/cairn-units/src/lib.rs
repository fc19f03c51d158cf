//! Durations and sizes as people write them, in one grammar for every place Cairn reads them:
//! `cairn.yaml` (`timeout: 1h30m`, `memory: 4GiB`), `monitor.yaml` (`window: 5m`) and flags
//! (`cairn monitor --window 30m`, `--max-artifact-size 16GiB`).
//!
//! **Durations.** One or more groups of a number (decimals allowed) and a unit: `ms`, `s`,
//! `m` or `min`, `h`, `d`; `1h30m`, `2.5s`, `500ms`, `7d`. A bare number is seconds (`90`),
//! as is a YAML number. A duration is positive and fits `std::time::Duration`.
//!
//! **Sizes.** A number (decimals allowed) and an optional unit, case-insensitive: `B`, `KB`,
//! `MB`, `GB`, `TB` (powers of 1000), `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), and `K`,
//! `M`, `G`, `T` for the decimal units; `4GiB`, `512 MB`, `1000`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A positive length of time, parsed from Cairn's duration grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds, saturating (for stores that keep `i64` milliseconds).
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }

    /// A number of seconds (a YAML number).
    pub fn from_secs_f64(seconds: f64) -> Result<Duration, String> {
        if seconds.is_nan() || seconds <= 0.0 {
            return Err(format!("a duration must be positive, not {seconds}"));
        }
        std::time::Duration::try_from_secs_f64(seconds)
            .map(Duration)
            .map_err(|_| format!("{seconds} seconds is longer than any duration can be"))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "invalid duration `{text}`: write a number and a unit (ms, s, m, h, d), e.g. 90s, 5m, 1h30m"
            )
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total = 0.0;
        let mut rest = text;
        while !rest.is_empty() {
            let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, tail) = rest.split_at(split);
            let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let number: f64 = number.parse().map_err(|_| bad())?;
            let seconds = match unit.trim() {
                "" if next.is_empty() && total == 0.0 => 1.0,
                "s" => 1.0,
                "ms" => 0.001,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                "" => return Err(bad()),
                other => {
                    return Err(format!(
                        "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                    ));
                }
            };
            total += number * seconds;
            rest = next;
        }
        if total <= 0.0 {
            return Err(format!("invalid duration `{text}`: a duration must be positive"));
        }
        // A number of hours can be larger than any duration (or infinite): an error, not a panic.
        std::time::Duration::try_from_secs_f64(total)
            .map(Duration)
            .map_err(|_| format!("invalid duration `{text}`: longer than any duration can be"))
    }
}

impl fmt::Display for Duration {
    /// The largest units that say it exactly: `1h30m`, `90s`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "{}ms", self.0.as_secs_f64() * 1000.0);
        }
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// A string in the grammar, or a number of seconds.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Duration::from_secs_f64(n),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// A number of bytes, parsed from Cairn's size grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 =
            number.parse().map_err(|_| format!("`{text}` is not a size like `4GiB` or `500MB`"))?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "ki" | "kib" => 1024.0,
            "mi" | "mib" => 1024.0 * 1024.0,
            "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "ti" | "tib" => 1024.0f64.powi(4),
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}`: use B, KB, MB, GB, KiB, MiB, GiB"
                ));
            }
        };
        Ok(Size((number * scale) as u64))
    }
}

/// For clap's `value_parser`: a size in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<Size>().map(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> f64 {
        text.parse::<Duration>().unwrap().get().as_secs_f64()
    }

    #[test]
    fn durations_are_groups_of_a_number_and_a_unit() {
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("5m"), 300.0);
        assert_eq!(secs("5min"), 300.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("2.5s"), 2.5);
        assert_eq!(secs("500ms"), 0.5);
        assert_eq!(secs("7d"), 604_800.0);
        assert_eq!(secs("90"), 90.0);
        assert_eq!(secs(" 2h "), 7200.0);
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (text, says) in [
            ("", "write a number and a unit"),
            ("5 fortnights", "unknown unit `fortnights`"),
            ("0s", "must be positive"),
            ("1h30", "write a number and a unit"),
            ("2222222222222222222222222h", "longer than any duration"),
            ("h", "write a number and a unit"),
        ] {
            let error = text.parse::<Duration>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert!(Duration::from_secs_f64(f64::MAX).is_err());
        assert!(Duration::from_secs_f64(-1.0).is_err());
        assert!(Duration::from_secs_f64(f64::NAN).is_err());
    }

    #[test]
    fn yaml_numbers_are_seconds() {
        let d: Duration = serde_json::from_str("2.5").unwrap();
        assert_eq!(d.get(), std::time::Duration::from_millis(2500));
        let d: Duration = serde_json::from_str("\"1h\"").unwrap();
        assert_eq!(d.as_millis_i64(), 3_600_000);
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
    }

    #[test]
    fn durations_display_in_the_grammar() {
        for text in ["1h30m", "90ms", "2d", "1m1s"] {
            assert_eq!(text.parse::<Duration>().unwrap().to_string(), text);
        }
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512 MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("4 lots").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
    }
}
