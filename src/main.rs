//! The `pod-webhook-tracker` binary: parses the command line into a validated configuration
//! (exit status 2 when it is not valid) and runs the subcommand.

// No panic is reachable from input: outside tests, these are denied (see the README's
// architecture section); an `#[allow]` beside its invariant marks each exception.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use std::process::ExitCode;

use pod_webhook_tracker::cli::{self, Command};
use pod_webhook_tracker::config::{Config, Environment};
use pod_webhook_tracker::exit::EXIT_BAD_CONFIG;
use pod_webhook_tracker::serve;
use pod_webhook_tracker::{doctor, run};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let argv: Vec<String> = std::env::args().collect();
    let program = "pod-webhook-tracker";
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
        Command::Completion(args) => match cli::completion_script(&args.shell, program) {
            Ok(script) => {
                print!("{script}");
                ExitCode::SUCCESS
            }
            Err(message) => refuse(&message),
        },
        Command::Serve(args) => match Config::from_args(&args, &Environment::from_process()) {
            Ok(config) => serve::run(config),
            Err(error) => refuse(&error.to_string()),
        },
        Command::Run(args) => match run::Options::from_args(&args) {
            Ok(options) => run::run(&options),
            Err(error) => refuse(&error.to_string()),
        },
        Command::Install(args) => run::install(std::path::Path::new(&args.directory)),
        Command::Doctor(args) => {
            match Config::from_args(&args.serve, &Environment::from_process()) {
                Ok(config) => doctor::run(&config, args.output),
                Err(error) => refuse(&error.to_string()),
            }
        }
    }
}

fn refuse(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_CONFIG)
}
