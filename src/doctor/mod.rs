//! `doctor`: a preflight check of one namespace. Is there a PodDisruptionBudget that protects busy
//! pods, one that works for pods of any owner, alone on its pods? May the tracker's identity get
//! and patch pods, and no more?
//!
//! [`gather`] reads the cluster (budgets, pods, access reviews) into [`facts`]; [`checks`] is
//! pure; [`report`] prints them.

pub(crate) mod checks;
pub(crate) mod facts;
pub(crate) mod gather;
pub(crate) mod report;

use std::process::ExitCode;

use crate::api::reads::Reader;
use crate::cli::Output;
use crate::config::Config;
use crate::exit::{EXIT_BAD_CONFIG, EXIT_FAILURE};

pub use checks::*;
pub use facts::*;
pub(crate) use gather::{DEFAULT_REQUEST_TIMEOUT, gather};
pub use report::{json_report, text_report};

/// Runs `doctor`: exit status 0 when no check found a problem, 1 when one did, 2 when the
/// connection settings are unusable.
pub fn run(config: &Config, output: Output) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let limit = config.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let facts = runtime.block_on(async {
        let reader = Reader::connect(&config.kube, limit).await?;
        Ok::<_, crate::Error>(gather(&reader, config).await)
    });
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let checks = diagnose(&facts);
    match output {
        Output::Text => print!("{}", text_report(&facts, &checks)),
        Output::Json => println!("{:#}", json_report(&facts, &checks)),
    }
    if checks.iter().any(|c| c.status == Status::Problem) {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod flag_tests {
    use crate::cli::{self, Command, DoctorArgs, Output};

    fn doctor(args: &[&str]) -> Result<DoctorArgs, String> {
        let mut all = vec!["doctor".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let normalized = cli::normalize(&all)?;
        match cli::parse("pod-webhook-tracker", &normalized) {
            Ok(cli) => match cli.command {
                Command::Doctor(args) => Ok(args),
                other => Err(format!("not doctor: {other:?}")),
            },
            Err(exit) => Err(exit.output),
        }
    }

    #[test]
    fn doctor_takes_serves_flags_and_output_in_any_order() {
        let args = doctor(&[
            "-njobs",
            "--output=json",
            "--label",
            "example.com/busy",
            "--kube-insecure-skip-tls-verify",
            "--label-selector=app=worker",
        ])
        .expect("parses");
        assert_eq!(args.output, Output::Json);
        assert_eq!(args.serve.kube_namespace.as_deref(), Some("jobs"));
        assert_eq!(args.serve.label, "example.com/busy");
        assert!(args.serve.kube_insecure_skip_tls_verify);
        assert_eq!(args.serve.label_selector.as_deref(), Some("app=worker"));
        assert_eq!(doctor(&[]).expect("parses").output, Output::Text);
    }

    #[test]
    fn a_value_that_looks_like_output_belongs_to_its_flag() {
        let args = doctor(&["--label-selector", "--output"]).expect("parses");
        assert_eq!(args.serve.label_selector.as_deref(), Some("--output"));
        assert_eq!(args.output, Output::Text);
    }

    #[test]
    fn bad_doctor_flags_are_refused() {
        let error = doctor(&["--output", "yaml"]).expect_err("refused");
        assert!(error.contains("expected text or json"), "{error}");
        assert!(doctor(&["--output"]).is_err());
        assert!(doctor(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn completions_know_doctor_and_run_flags() {
        let script = cli::completion_script("bash", "pod-webhook-tracker").expect("generated");
        for word in ["doctor", "--output", "run", "--run-unprotected", "install"] {
            assert!(script.contains(word), "{word}");
        }
    }
}
