//! `run`: counts one job around a command. POST /increment, start the command, pass SIGTERM,
//! SIGINT and SIGHUP on to it, reap what it leaves behind, POST /decrement however it ends, and
//! exit with its status.
//!
//! Its parts: [`client`] (the calls to the tracker and which answers are final), [`child`] (the
//! command, its signals and its orphans), [`install`] (copying the program for another
//! container).

mod child;
mod client;
mod install;

pub use child::Event;
use child::{exit_with, run_command, signal_name, status_code, watch_signals};
pub use client::{Call, Endpoint, Outcome, Tracker};
pub use install::install;

use std::process::ExitCode;
use std::sync::mpsc::{self};
use std::time::Duration;

use crate::cli::RunArgs;
use crate::core::durations::{self, Bounds, MAX_RUN_REQUEST, MAX_RUN_RETRY};
use crate::core::jobs;

/// The shortest `--renew-interval`: a renewal is a write to the API server.
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(1);
use crate::error::{Error, Result};
use crate::exit::EXIT_NOT_COUNTED;

/// The validated settings of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where the tracker listens.
    pub tracker: Endpoint,
    /// Run the command even if the job could not be counted.
    pub run_unprotected: bool,
    /// How long a call the tracker did not take may be repeated.
    pub retry_timeout: Duration,
    /// How long one call may take.
    pub request_timeout: Duration,
    /// The job's key (`--job`); `None`: a fresh `run-…` key.
    pub job: Option<String>,
    /// How often the running job is renewed (`--renew-interval`); `None`: never.
    pub renew_interval: Option<Duration>,
    /// Where the caller's token is (`--token-file`); `None`: no token is sent.
    pub token_file: Option<TokenFile>,
    /// With an `https://` URL: the CAs trusted for the tracker's certificate (`--ca-file`).
    pub ca: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    /// The program and its arguments.
    pub command: Vec<String>,
}

/// Where the projected service-account token for the tracker's audience is mounted (see
/// `manifests/standalone/authenticated`), the default of `--token-file`.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/pod-webhook-tracker/token";

/// Where the tracker's CA is mounted beside the token (see
/// `manifests/standalone/authenticated`), the default of `--ca-file`.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/pod-webhook-tracker/ca.crt";

/// The caller's token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile {
    /// Its path.
    pub path: std::path::PathBuf,
    /// Given with `--token-file`: a call without it is an error. The default path may be
    /// absent (a sidecar, or a standalone tracker without `--authenticate`).
    pub required: bool,
}

/// Where `run` finds the sidecar when neither `--url` nor `$TRACKER_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

impl Options {
    /// Validates the flags of `run`; every error names its flag. `tracker_url` is
    /// `$TRACKER_URL`, the default of `--url`.
    pub fn from_args(args: &RunArgs, tracker_url: Option<&str>) -> Result<Options> {
        let (flag, url) = match (&args.url, tracker_url.filter(|url| !url.is_empty())) {
            (Some(url), _) => ("--url", url.as_str()),
            (None, Some(url)) => ("$TRACKER_URL", url),
            (None, None) => ("--url", DEFAULT_URL),
        };
        let tracker = Endpoint::parse(url).map_err(|why| invalid(flag, url, &why))?;
        let retry_timeout = duration("--retry-timeout", &args.retry_timeout, MAX_RUN_RETRY)?;
        let request_timeout =
            duration("--request-timeout", &args.request_timeout, MAX_RUN_REQUEST)?;
        if request_timeout.is_zero() {
            return Err(invalid(
                "--request-timeout",
                &args.request_timeout,
                "a call needs some time; expected a duration such as 60s",
            ));
        }
        let job = match args.job.as_deref() {
            Some(job) => {
                jobs::validate_job_id(job).map_err(|why| invalid("--job", job, &why))?;
                Some(job.to_owned())
            }
            None => None,
        };
        let renew_interval = durations::parse_flag(
            &args.renew_interval,
            Bounds::new(MIN_RENEW_INTERVAL, MAX_RUN_RETRY),
        )
        .map_err(|why| {
            invalid(
                "--renew-interval",
                &args.renew_interval,
                &format!("{why}; expected 0 or a duration such as 60s"),
            )
        })?;
        let token_file = match &args.token_file {
            Some(path) => {
                std::fs::metadata(path)
                    .map_err(|e| invalid("--token-file", path, &e.to_string()))?;
                Some(TokenFile {
                    path: path.into(),
                    required: true,
                })
            }
            None => Some(TokenFile {
                path: DEFAULT_TOKEN_FILE.into(),
                required: false,
            }),
        };
        let ca = if tracker.tls {
            let (flag, path) = match &args.ca_file {
                Some(path) => ("--ca-file", path.as_str()),
                None => ("--ca-file", DEFAULT_CA_FILE),
            };
            Some(trusted(path).map_err(|why| invalid(flag, path, &why))?)
        } else {
            None
        };
        if args.command.is_empty() {
            return Err(Error::Config(
                "run: no command given: put it after --, e.g. pod-webhook-tracker run -- /bin/sh -c 'make all'"
                    .to_owned(),
            ));
        }
        Ok(Options {
            tracker,
            run_unprotected: args.run_unprotected,
            retry_timeout,
            request_timeout,
            job,
            renew_interval,
            token_file,
            ca,
            command: args.command.clone(),
        })
    }
}

/// The certificates of a PEM file, for the roots a TLS client trusts.
fn trusted(
    path: &str,
) -> std::result::Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in &certificates {
        roots
            .add(certificate.clone())
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("it holds no certificate".to_owned());
    }
    Ok(certificates)
}

fn invalid(flag: &str, value: &str, why: &str) -> Error {
    Error::Config(format!("invalid value {value:?} for {flag}: {why}"))
}

/// `0` or a duration such as `500ms`, `30s`, `2m`, at most `max`.
fn duration(flag: &str, text: &str, max: Duration) -> Result<Duration> {
    durations::parse_flag(text, Bounds::up_to(max))
        .map(Option::unwrap_or_default)
        .map_err(|why| {
            invalid(
                flag,
                text,
                &format!("{why}; expected 0 or a duration such as 30s, 2m"),
            )
        })
}

/// Runs `run`: count, run the command, uncount; returns the command's exit status.
pub fn run(options: &Options) -> ExitCode {
    let (sender, events) = mpsc::channel();
    // Before anything else: from here on SIGTERM no longer ends the wrapper at once.
    if let Err(why) = watch_signals(sender.clone()) {
        say(&format!(
            "cannot listen for signals ({why}), so the job could not be uncounted on SIGTERM; not starting it"
        ));
        return ExitCode::from(EXIT_NOT_COUNTED);
    }
    let tracker = Tracker::new(options);
    let url = &options.tracker;
    let counted = match tracker.call(Call::Increment, Some(&events)) {
        Outcome::Counted(count) => {
            say(&format!("increment: ok (active jobs in this pod: {count})"));
            true
        }
        Outcome::Interrupted {
            signal,
            maybe_applied,
        } => {
            say(&format!(
                "stopped by {} before the job was counted; not starting it",
                signal_name(signal)
            ));
            if maybe_applied {
                // An attempt may have counted it: end the job (a no-op if it never started).
                decrement(&tracker, url);
            }
            return exit_with(128_i32.saturating_add(signal));
        }
        Outcome::NotApplied(why) | Outcome::Unknown(why) if options.run_unprotected => {
            say(&format!(
                "warning: could not count this job at {url}: {why}; running it anyway \
                 (--run-unprotected): the pod may be evicted while it runs"
            ));
            false
        }
        Outcome::NotApplied(why) => {
            say(&format!(
                "could not count this job at {url}: {why}; not starting it, since the pod would not \
                 be protected from eviction while it runs (--run-unprotected runs it anyway)"
            ));
            return ExitCode::from(EXIT_NOT_COUNTED);
        }
        Outcome::Unknown(why) => {
            // The job's key makes the decrement safe: it ends this job if it was counted and
            // changes nothing if it was not (it never uncounts another job).
            say(&format!(
                "the increment's outcome is unknown at {url}: {why}; not starting the job, and \
                 ending the job {} in case it was counted",
                tracker.job()
            ));
            decrement(&tracker, url);
            return ExitCode::from(EXIT_NOT_COUNTED);
        }
    };
    // A signal that came while the increment was under way: the job is not started.
    let pending = events.try_iter().find_map(|event| match event {
        Event::Signal(signal) => Some(signal),
        Event::Exited => None,
    });
    let code = match pending {
        Some(signal) => {
            say(&format!(
                "stopped by {} before the job started",
                signal_name(signal)
            ));
            128_i32.saturating_add(signal)
        }
        None => {
            // Renewed while it runs, so that a tracker's --max-job-duration does not release it.
            let renewing = options
                .renew_interval
                .filter(|_| counted)
                .and_then(|every| client::keep_renewing(&tracker, every));
            let code = match run_command(&options.command, sender, &events) {
                Ok(status) => status_code(status),
                Err((code, why)) => {
                    say(&why);
                    i32::from(code)
                }
            };
            drop(renewing);
            code
        }
    };
    if counted {
        decrement(&tracker, url);
    }
    exit_with(code)
}

/// Ends the job, and says how that went.
fn decrement(tracker: &Tracker, url: &Endpoint) {
    match tracker.call(Call::Decrement, None) {
        Outcome::Counted(count) => {
            say(&format!("decrement: ok (active jobs in this pod: {count})"));
        }
        Outcome::NotApplied(why) => say(&format!(
            "decrement failed at {url}: {why}; the pod's count stays one too high (and the pod \
             protected from eviction) until its label is corrected or the job {} expires",
            tracker.job()
        )),
        Outcome::Unknown(why) => say(&format!(
            "the decrement's outcome is unknown at {url}: {why}; if it was not applied, the \
             pod's count stays one too high until its label is corrected or the job {} expires",
            tracker.job()
        )),
        // Only a wait that listens for signals is interrupted.
        Outcome::Interrupted { .. } => {}
    }
}

/// One line on stderr, where the job's own messages go.
fn say(message: &str) {
    eprintln!("pod-webhook-tracker run: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> RunArgs {
        RunArgs {
            url: Some(url.to_owned()),
            run_unprotected: false,
            retry_timeout: "30s".to_owned(),
            request_timeout: "60s".to_owned(),
            job: None,
            renew_interval: "60s".to_owned(),
            token_file: None,
            ca_file: None,
            command: vec!["true".to_owned()],
        }
    }

    #[test]
    fn flags_are_checked_and_every_error_names_its_flag() {
        let options = Options::from_args(&args("http://127.0.0.1:8080"), None).expect("valid");
        let from_env = RunArgs {
            url: None,
            ..args("http://unused:1")
        };
        let injected = Options::from_args(&from_env, Some("http://127.0.0.1:8181")).expect("valid");
        assert_eq!(injected.tracker.to_string(), "http://127.0.0.1:8181");
        let bad = Options::from_args(&from_env, Some("ftp://x:1")).expect_err("refused");
        assert!(bad.to_string().contains("$TRACKER_URL"), "{bad}");
        let no_ca = RunArgs {
            ca_file: Some("/nonexistent/ca.crt".to_owned()),
            ..args("https://x:1")
        };
        let bad = Options::from_args(&no_ca, None).expect_err("refused");
        assert!(bad.to_string().contains("--ca-file"), "{bad}");
        let default = Options::from_args(&from_env, None).expect("valid");
        assert_eq!(default.tracker.to_string(), DEFAULT_URL);
        assert_eq!(options.retry_timeout, Duration::from_secs(30));
        assert_eq!(options.request_timeout, Duration::from_secs(60));
        let error = Options::from_args(&args("http://x:1/path"), None).expect_err("refused");
        assert!(error.to_string().contains("--url"), "{error}");
        let mut no_command = args("http://x:1");
        no_command.command.clear();
        let error = Options::from_args(&no_command, None).expect_err("refused");
        assert!(error.to_string().contains("after --"), "{error}");
        let mut zero = args("http://x:1");
        zero.retry_timeout = "0".to_owned();
        assert_eq!(
            Options::from_args(&zero, None)
                .expect("valid")
                .retry_timeout,
            Duration::ZERO
        );
        zero.request_timeout = "0".to_owned();
        let error = Options::from_args(&zero, None).expect_err("refused");
        assert!(error.to_string().contains("--request-timeout"), "{error}");
    }
}
