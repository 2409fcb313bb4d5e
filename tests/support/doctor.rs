//! Running `doctor` as a user would, for the tests against the double (tests/doctor.rs) and
//! the real API server (tests/real/rights.rs): once as text, once as JSON, and the two
//! read together.

use std::process::Command;

use serde_json::Value;

/// `pod-webhook-tracker doctor`, clean of the developer's cluster and pod identity; the
/// caller adds how to reach the API server.
pub(crate) fn doctor_command() -> Command {
    let mut command = Command::new(super::program());
    command
        .arg("doctor")
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", std::env::temp_dir().join("pwt-no-home"));
    command
}

/// What one doctor run said, as text and as JSON, with the exit status of each.
pub(crate) struct Report {
    pub text_status: Option<i32>,
    pub text: String,
    pub json_status: Option<i32>,
    pub json: Value,
}

impl Report {
    /// Runs the doctor `command()` makes twice: as text, and with `--output=json`.
    pub(crate) fn of(command: impl Fn() -> Command) -> Report {
        let text = command().output().expect("runs");
        let json = command().arg("--output=json").output().expect("runs");
        let json_text = String::from_utf8_lossy(&json.stdout);
        Report {
            text_status: text.status.code(),
            text: String::from_utf8_lossy(&text.stdout).into_owned(),
            json_status: json.status.code(),
            json: serde_json::from_str(&json_text).unwrap_or_else(|e| {
                panic!(
                    "not JSON ({e}): {json_text}\n{}",
                    String::from_utf8_lossy(&json.stderr)
                )
            }),
        }
    }

    /// The check's status and message, after asserting that text and JSON agree on them.
    pub(crate) fn finding(&self, name: &str) -> (String, String) {
        let check = self.json["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name} in {:#}", self.json));
        let status = check["status"].as_str().expect("a status").to_owned();
        let message = check["message"].as_str().expect("a message").to_owned();
        let line = self
            .text
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in\n{}", self.text));
        assert!(
            line.starts_with(&status) && line.ends_with(&message),
            "text and JSON differ on {name}:\n{line}\n{status}: {message}"
        );
        (status, message)
    }

    /// Asserts that check `name` has `status` and a message containing each of `parts`.
    pub(crate) fn assert_finding(&self, name: &str, status: &str, parts: &[&str]) {
        let (found, message) = self.finding(name);
        assert_eq!(found, status, "{name}: {message}\n{}", self.text);
        for part in parts {
            assert!(
                message.contains(part),
                "{name}: {part:?} missing from {message}"
            );
        }
    }

    /// Asserts that both runs exited with `code`.
    pub(crate) fn assert_exit(&self, code: i32) {
        assert_eq!(self.text_status, Some(code), "text:\n{}", self.text);
        assert_eq!(self.json_status, Some(code), "json:\n{:#}", self.json);
    }
}
