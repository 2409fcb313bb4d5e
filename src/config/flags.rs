//! One flag at a time: addresses, bounded durations, connection limits, active annotations and
//! the pod deletion cost, each refused with a message that names the flag.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::core::durations::{self, Bounds, MAX_CONNECTION_TIMEOUT, MIN_CONNECTION_TIMEOUT};
use crate::core::keys::TrackerKeys;
use crate::error::{Error, Result};
use crate::listen::{ConnectionLimits, MAX_CONNECTIONS_LIMIT};

use super::POD_DELETION_COST;

/// Parses the `--active-annotation KEY=VALUE` flags: valid annotation keys (the label-key
/// syntax), each at most once, none of them the tracker's own annotations.
pub(super) fn active_annotations(
    flags: &[String],
    keys: &TrackerKeys,
) -> Result<Vec<(String, String)>> {
    let flag = "--active-annotation";
    let mut parsed: Vec<(String, String)> = Vec::new();
    for text in flags {
        let Some((key, value)) = text.split_once('=') else {
            return Err(invalid(
                flag,
                text,
                "expected KEY=VALUE, e.g. karpenter.sh/do-not-disrupt=true",
            ));
        };
        if let Err(problems) = kube_labels::validate_label_key(key) {
            return Err(invalid(flag, text, &problems.join("; ")));
        }
        if keys.is_own_annotation(key) {
            return Err(invalid(
                flag,
                text,
                "the tracker keeps this annotation itself",
            ));
        }
        if parsed.iter().any(|(seen, _)| seen == key) {
            return Err(invalid(flag, text, "this key is given twice"));
        }
        parsed.push((key.to_owned(), value.to_owned()));
    }
    Ok(parsed)
}

/// `--pod-deletion-cost N`: the busy value of [`POD_DELETION_COST`], an int32 as the API
/// server requires, and not also given as an `--active-annotation`.
pub(super) fn pod_deletion_cost(
    text: &str,
    active: &[(String, String)],
) -> Result<(String, String)> {
    let flag = "--pod-deletion-cost";
    let cost: i32 = text.trim().parse().map_err(|_| {
        invalid(
            flag,
            text,
            "expected an integer from -2147483648 to 2147483647, e.g. 10000",
        )
    })?;
    if active.iter().any(|(key, _)| key == POD_DELETION_COST) {
        return Err(invalid(
            flag,
            text,
            "--active-annotation sets controller.kubernetes.io/pod-deletion-cost already; give one of them",
        ));
    }
    Ok((POD_DELETION_COST.to_owned(), cost.to_string()))
}

pub(super) fn invalid(flag: &str, value: &str, why: &str) -> Error {
    Error::Config(format!("invalid value {value:?} for {flag}: {why}"))
}

/// Parses `host:port`, Go's `:port` (every interface) and `localhost:port`.
pub(super) fn parse_address(text: &str) -> std::result::Result<SocketAddr, String> {
    let with_host = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    if let Ok(address) = with_host.parse::<SocketAddr>() {
        return Ok(address);
    }
    match with_host.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => with_host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve it: {e}"))?
            .next()
            .ok_or_else(|| "it resolves to no address".to_owned()),
        _ => Err("expected host:port, e.g. 0.0.0.0:8080, 127.0.0.1:8080 or :8080".to_owned()),
    }
}

/// `0` is "off" (no limit); otherwise a duration such as `500ms`, `30s`, `2m`, `1h30m` within
/// `bounds` (see [`crate::core::durations`] for each flag's limits).
pub(super) fn parse_timeout(flag: &str, text: &str, bounds: Bounds) -> Result<Option<Duration>> {
    durations::parse_flag(text, bounds).map_err(|why| {
        invalid(
            flag,
            text,
            &format!("{why}; expected 0 or a duration such as 30s, 2m, 1h"),
        )
    })
}

/// `--max-connections`, `--header-read-timeout` and `--idle-timeout`, validated.
pub(super) fn connection_limits(
    max_connections: &str,
    header_read_timeout: &str,
    idle_timeout: &str,
) -> Result<ConnectionLimits> {
    let flag = "--max-connections";
    let text = max_connections;
    let max_connections = text
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n))
        .ok_or_else(|| {
            invalid(
                flag,
                text,
                &format!("expected a number of connections from 1 to {MAX_CONNECTIONS_LIMIT}"),
            )
        })?;
    let timeout = |flag: &str, text: &str| {
        durations::parse_bounded(
            text,
            Bounds::new(MIN_CONNECTION_TIMEOUT, MAX_CONNECTION_TIMEOUT),
        )
        .map_err(|why| {
            invalid(
                flag,
                text,
                &format!("{why}; expected a duration such as 10s"),
            )
        })
    };
    Ok(ConnectionLimits {
        max_connections,
        header_read_timeout: timeout("--header-read-timeout", header_read_timeout)?,
        idle_timeout: timeout("--idle-timeout", idle_timeout)?,
        ..ConnectionLimits::default()
    })
}
