//! Timestamps (milliseconds since the epoch, as the metadata store keeps them) for people and
//! for JSON.

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (ISO 8601, UTC).
pub fn iso_time(ms: i64) -> String {
    let human = format_time(ms);
    let (date, rest) = human.split_once(' ').expect("format_time writes a date and a time");
    format!("{date}T{}Z", rest.trim_end_matches(" UTC"))
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub fn format_time(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::civil::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Serializes milliseconds as [`iso_time`].
pub fn serialize_iso<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso_time(*ms))
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_time_is_iso_8601_in_utc() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso_time(1_796_409_022_926), "2026-12-04T18:30:22.926Z");
    }

    #[test]
    fn format_time_is_utc_civil_time() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(super::format_time(1_795_416_612_345), "2026-11-23 06:50:12.345 UTC");
    }
}
