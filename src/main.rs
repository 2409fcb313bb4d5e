//! The `pod-webhook-tracker` binary: logging, then [`pod_webhook_tracker::command::main`].

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let argv: Vec<String> = std::env::args().collect();
    pod_webhook_tracker::command::main(&argv)
}
