//! The one thing `main` calls: a command line turned into its validated configuration and the
//! subcommand it names, run, and the exit status that says how it went.

use std::process::ExitCode;

use crate::cli::{self, Command};
use crate::config::busy::BusyConfig;
use crate::config::inject::InjectConfig;
use crate::config::{Config, Environment};
use crate::exit::EXIT_BAD_CONFIG;
use crate::{busy, doctor, inject, run, serve};

/// Runs the command line `argv` (the program's name first): parses it into a validated
/// configuration (exit status 2 when it is not valid) and runs the subcommand.
pub fn main(argv: &[String]) -> ExitCode {
    let program = program_name(argv.first().map(String::as_str));
    let args = match cli::normalize(argv.get(1..).unwrap_or_default()) {
        Ok(args) => args,
        Err(message) => return refuse(&message),
    };
    let cli = match cli::parse(program, &args) {
        Ok(cli) => cli,
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => return refuse(exit.output.trim_end()),
    };
    match cli.command {
        Command::Version(_) => {
            println!("v{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Completion(args) => {
            match cli::completion_script(&args.shell, "pod-webhook-tracker") {
                Ok(script) => {
                    print!("{script}");
                    ExitCode::SUCCESS
                }
                Err(message) => refuse(&message),
            }
        }
        Command::Serve(args) => match Config::from_args(&args, &Environment::from_process()) {
            Ok(config) => serve::run(config),
            Err(error) => refuse(&error.to_string()),
        },
        Command::Run(args) => {
            match run::Options::from_args(&args, std::env::var("TRACKER_URL").ok().as_deref()) {
                Ok(options) => run::run(&options),
                Err(error) => refuse(&error.to_string()),
            }
        }
        Command::Inject(args) => match InjectConfig::from_args(&args) {
            Ok(config) => inject::run(config),
            Err(error) => refuse(&error.to_string()),
        },
        Command::Install(args) => run::install(std::path::Path::new(&args.directory)),
        Command::Busy(args) => match BusyConfig::from_args(&args) {
            Ok(config) => busy::run(&config),
            Err(error) => refuse(&error.to_string()),
        },
        Command::Doctor(args) => {
            match Config::from_args(&args.serve, &Environment::from_process()) {
                Ok(config) => doctor::run(&config, args.output),
                Err(error) => refuse(&error.to_string()),
            }
        }
    }
}

/// How the program calls itself in its help: `kubectl tracker` when kubectl runs it as the
/// plugin `kubectl-tracker` (a file of that name on PATH, e.g. a symlink).
fn program_name(argv0: Option<&str>) -> &'static str {
    let file = argv0
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(std::ffi::OsStr::to_str)
        .unwrap_or_default();
    if file.starts_with("kubectl-tracker") {
        "kubectl tracker"
    } else {
        "pod-webhook-tracker"
    }
}

fn refuse(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_CONFIG)
}
