//! Durations and times from untrusted text: parsed once against documented bounds, added with
//! checked arithmetic, and formatted without any path to a panic.
//!
//! Every duration a caller (`ttl`, `timeout`) or an operator (`--retry-timeout`, …) gives goes
//! through [`parse_bounded`] or [`parse_flag`], so nothing downstream ever sees a duration that
//! could overflow an `Instant`, a `SystemTime` or the year 9999 of an RFC 3339 timestamp.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z. Times read back from a pod
/// (deadlines, starts) beyond it are not readable.
pub const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The longest job lifetime: `?ttl=`, `--max-job-duration`, `--anonymous-job-ttl`: a year as
/// humantime counts it (365.25 days, so `1y` and `365d` are accepted).
pub const MAX_JOB_LIFETIME: Duration = Duration::from_secs(365 * DAY + DAY / 4);
/// The longest `/wait-idle?timeout=` (a `preStop` hook is bounded by the pod's grace period).
pub const MAX_WAIT_IDLE: Duration = Duration::from_secs(DAY);
/// The longest `--retry-timeout` of `serve`.
pub const MAX_RETRY_TIMEOUT: Duration = Duration::from_secs(HOUR);
/// The longest `--shutdown-grace-period`.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(DAY);
/// The longest `--sweep-interval`.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(DAY);
/// The shortest non-zero `--sweep-interval` (no busy loop against the API server).
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// The longest `--kube-request-timeout`: generous, because the original's command line (any
/// Go duration) must keep working; a day is far past any sane value.
pub const MAX_KUBE_REQUEST_TIMEOUT: Duration = Duration::from_secs(DAY);
/// The longest `--header-read-timeout` and `--idle-timeout`.
pub const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(HOUR);
/// The shortest `--header-read-timeout` and `--idle-timeout`.
pub const MIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `run --retry-timeout` (it may wait for a sidecar that is still starting).
pub const MAX_RUN_RETRY: Duration = Duration::from_secs(DAY);
/// The longest `run --request-timeout`.
pub const MAX_RUN_REQUEST: Duration = Duration::from_secs(HOUR);

/// The accepted range of one duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The shortest accepted (a zero duration is checked against this too).
    pub min: Duration,
    /// The longest accepted.
    pub max: Duration,
}

impl Bounds {
    /// From `min` to `max`, both included.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Bounds { min, max }
    }

    /// From zero to `max`.
    pub const fn up_to(max: Duration) -> Self {
        Bounds {
            min: Duration::ZERO,
            max,
        }
    }
}

/// Parses `30` (seconds), `500ms`, `30s`, `5m`, `1h30m`, `2d` — any unit humantime reads.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty; expected a duration such as 30s, 5m, 1h30m".to_owned());
    }
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{e}; expected a duration such as 30s, 5m, 1h30m")),
    }
}

/// Parses a duration and checks it against `bounds`; the error says which bound it broke.
pub fn parse_bounded(text: &str, bounds: Bounds) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration > bounds.max {
        return Err(format!("at most {} is accepted", describe(bounds.max)));
    }
    if duration < bounds.min {
        return Err(format!("at least {} is accepted", describe(bounds.min)));
    }
    Ok(duration)
}

/// An operator's flag where `0` (any zero duration) means "off": `None`; otherwise bounded.
pub fn parse_flag(text: &str, bounds: Bounds) -> Result<Option<Duration>, String> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Ok(None);
    }
    parse_bounded(text, bounds).map(Some)
}

/// A duration as people write it (`1year`, `30s`, `1h 30m`).
pub fn describe(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// `at + duration`, or the latest representable moment near it: never a panic. With bounded
/// durations the sum always exists; the fallback only keeps the arithmetic total.
pub fn instant_after(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration)
        .or_else(|| at.checked_add(MAX_JOB_LIFETIME))
        .unwrap_or(at)
}

/// The Unix time of `at` in whole seconds (0 before 1970: a clock that far off is not ours to
/// fix).
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `2026-11-26T17:20:31Z` for a Unix time; a time past the year 9999 is written as
/// `@SECONDS` instead of panicking (humantime's formatter cannot write it).
pub fn rfc3339(unix_seconds: u64) -> String {
    if unix_seconds > MAX_UNIX_SECONDS {
        return format!("@{unix_seconds}");
    }
    match UNIX_EPOCH.checked_add(Duration::from_secs(unix_seconds)) {
        Some(at) => humantime::format_rfc3339_seconds(at).to_string(),
        None => format!("@{unix_seconds}"),
    }
}

/// [`rfc3339`] of a clock reading.
pub fn rfc3339_of(at: SystemTime) -> String {
    rfc3339(unix_seconds(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_numbers_are_seconds_and_units_are_read() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 1h30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse("").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn a_duration_past_its_bound_is_refused_naming_the_bound() {
        let bounds = Bounds::up_to(MAX_JOB_LIFETIME);
        assert_eq!(
            parse_bounded("365d", bounds),
            Ok(Duration::from_secs(365 * DAY))
        );
        assert_eq!(parse_bounded("1y", bounds), Ok(MAX_JOB_LIFETIME));
        let error = parse_bounded("10000y", bounds).expect_err("refused");
        assert!(error.contains("at most 1year"), "{error}");
        let error = parse_bounded("100000000000000000000", bounds).expect_err("refused");
        assert!(!error.is_empty());
        let error = parse_bounded("100ms", Bounds::new(Duration::from_secs(1), MAX_WAIT_IDLE))
            .expect_err("refused");
        assert!(error.contains("at least 1s"), "{error}");
    }

    #[test]
    fn zero_turns_a_flag_off_and_anything_else_is_bounded() {
        let bounds = Bounds::new(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL);
        assert_eq!(parse_flag("0", bounds), Ok(None));
        assert_eq!(parse_flag("0s", bounds), Ok(None));
        assert_eq!(parse_flag("2s", bounds), Ok(Some(Duration::from_secs(2))));
        assert!(parse_flag("10ms", bounds).is_err());
        assert_eq!(parse_flag("100ms", bounds), Ok(Some(MIN_SWEEP_INTERVAL)));
        assert!(parse_flag("2d", bounds).is_err());
    }

    #[test]
    fn times_past_the_year_9999_are_written_without_a_panic() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(MAX_UNIX_SECONDS), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_UNIX_SECONDS + 1), "@253402300800");
        assert_eq!(rfc3339(u64::MAX), format!("@{}", u64::MAX));
    }

    #[test]
    fn adding_to_an_instant_never_overflows() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(instant_after(now, Duration::MAX) >= now);
    }

    proptest! {
        #[test]
        fn any_text_parses_to_a_bounded_duration_or_an_error(text in ".{0,40}") {
            let bounds = Bounds::new(Duration::from_secs(1), MAX_JOB_LIFETIME);
            match parse_bounded(&text, bounds) {
                Ok(duration) => prop_assert!(duration >= bounds.min && duration <= bounds.max),
                Err(error) => prop_assert!(!error.is_empty()),
            }
        }

        #[test]
        fn durations_made_of_numbers_and_units_never_escape_their_bounds(
            number in any::<u64>(),
            unit in prop::sample::select(vec!["", "ns", "ms", "s", "m", "h", "d", "w", "M", "y"]),
        ) {
            let bounds = Bounds::up_to(MAX_WAIT_IDLE);
            if let Ok(duration) = parse_bounded(&format!("{number}{unit}"), bounds) {
                prop_assert!(duration <= MAX_WAIT_IDLE);
            }
        }

        #[test]
        fn any_unix_time_formats(seconds in any::<u64>()) {
            let text = rfc3339(seconds);
            prop_assert!(text.ends_with('Z') || text.starts_with('@'));
        }
    }
}
