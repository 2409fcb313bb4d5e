//! Replays every request recorded from a real kube-apiserver (v1.19, etcd, RBAC, bearer
//! tokens; `tests/recorded/kube-apiserver-transcripts.json`, a copy of
//! the recording that the workplace shares, kept in the repository) against the double, in order, over real
//! HTTP, and checks each answer: status code, content type and body. Status bodies must be
//! identical; objects must be identical except for what a server makes up (uids, resource
//! versions, timestamps, generated names, managed fields), and those must be consistent:
//! the same uid or resource version in the transcript must be the same in the double, a
//! new one new, and resource versions must grow in the same order.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

mod client;

use client::Connection;
use kube_double::{ApiServer, Rule, Subject, User};
use serde_json::{Value, json};

const NAMESPACE: &str = "transcripts";

/// Where the transcripts are: in this crate, so that a clone of the repository can replay
/// them (`.ci/run` checks that the copy matches the shared recording where that
/// exists).
fn transcripts_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recorded/kube-apiserver-transcripts.json")
}

fn load_transcripts() -> Vec<Value> {
    let path = transcripts_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the recorded API server answers at {}: {e}\n\
             (the recorded answers of a real kube-apiserver belong there, copied from the shared recording, see tests/recorded/README.md)",
            path.display()
        )
    });
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    match value {
        Value::Array(entries) if !entries.is_empty() => entries,
        _ => panic!(
            "{} should hold a non-empty list of transcripts",
            path.display()
        ),
    }
}

/// What the transcript and the double have made up so far, matched to each other.
#[derive(Default)]
struct Correspondence {
    /// Transcript resource version -> the double's.
    versions: BTreeMap<u64, u64>,
    /// Transcript uid -> the double's.
    uids: HashMap<String, String>,
}

impl Correspondence {
    fn version(&mut self, recorded: &str, actual: &str) -> Result<(), String> {
        let (Ok(recorded), Ok(actual)) = (recorded.parse::<u64>(), actual.parse::<u64>()) else {
            return Err(format!(
                "resource versions {recorded:?} / {actual:?} are not numbers"
            ));
        };
        for (&r, &a) in &self.versions {
            if (r == recorded) != (a == actual) || (r < recorded) != (a < actual) {
                return Err(format!(
                    "resource version {actual} (transcript {recorded}) is inconsistent with {a} (transcript {r})"
                ));
            }
        }
        self.versions.insert(recorded, actual);
        Ok(())
    }

    fn uid(&mut self, recorded: &str, actual: &str) -> Result<(), String> {
        match self.uids.get(recorded) {
            Some(known) if known != actual => Err(format!(
                "uid {actual} should be {known} (transcript {recorded})"
            )),
            None if self.uids.values().any(|v| v == actual) => {
                Err(format!("uid {actual} stands for two transcript uids"))
            }
            _ => {
                self.uids.insert(recorded.to_string(), actual.to_string());
                Ok(())
            }
        }
    }

    /// Matches the made-up values of an object (or list) in the transcript with the double's.
    fn observe(&mut self, recorded: &Value, actual: &Value, problems: &mut Vec<String>) {
        let meta = |v: &Value, field: &str| {
            v.get("metadata")
                .and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let (Some(r), Some(a)) = (
            meta(recorded, "resourceVersion"),
            meta(actual, "resourceVersion"),
        ) && let Err(problem) = self.version(&r, &a)
        {
            problems.push(problem);
        }
        if let (Some(r), Some(a)) = (meta(recorded, "uid"), meta(actual, "uid"))
            && let Err(problem) = self.uid(&r, &a)
        {
            problems.push(problem);
        }
        if let (Some(Value::Array(r)), Some(Value::Array(a))) =
            (recorded.get("items"), actual.get("items"))
        {
            for (r, a) in r.iter().zip(a) {
                self.observe(r, a, problems);
            }
        }
    }

    /// A request body with the transcript's uids and resource versions replaced by the
    /// double's (values the double never saw, such as a deliberately stale `"1"`, stay).
    fn translate(&self, body: &Value) -> Value {
        let mut body = body.clone();
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(Value::String(rv)) = metadata.get_mut("resourceVersion")
                && let Some(actual) = rv.parse::<u64>().ok().and_then(|r| self.versions.get(&r))
            {
                *rv = actual.to_string();
            }
            if let Some(Value::String(uid)) = metadata.get_mut("uid")
                && let Some(actual) = self.uids.get(uid.as_str())
            {
                *uid = actual.clone();
            }
        }
        body
    }
}

/// An object without what a server makes up: managed fields go, uids, resource versions
/// and timestamps become placeholders (checked separately), generated names too.
fn normalized(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(Value::Array(items)) = value.get_mut("items") {
        for item in items.iter_mut() {
            *item = normalized(item);
        }
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        for (field, placeholder) in [
            ("uid", "<uid>"),
            ("resourceVersion", "<resourceVersion>"),
            ("creationTimestamp", "<time>"),
            ("deletionTimestamp", "<time>"),
        ] {
            if metadata.get(field).is_some_and(Value::is_string) {
                metadata.insert(field.to_string(), Value::from(placeholder));
            }
        }
        let prefix = metadata
            .get("generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        let name = metadata
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let (Some(prefix), Some(name)) = (prefix, name) {
            let generated = name.strip_prefix(&prefix).is_some_and(|suffix| {
                suffix.len() == 5
                    && suffix
                        .chars()
                        .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
            });
            let placeholder = if generated {
                format!("{prefix}<generated>")
            } else {
                format!("{name} (not generated from {prefix})")
            };
            if let Some(Value::String(link)) = metadata.get_mut("selfLink")
                && let Some(base) = link.strip_suffix(&name)
            {
                *link = format!("{base}{placeholder}");
            }
            metadata.insert("name".into(), Value::from(placeholder));
        }
    }
    value
}

/// Where two JSON values differ, as `pointer: expected … but got …` lines.
fn differences(expected: &Value, actual: &Value, pointer: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let keys: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
            for key in keys {
                match (e.get(key), a.get(key)) {
                    (Some(e), Some(a)) => differences(e, a, &format!("{pointer}/{key}"), out),
                    (e, a) => out.push(format!(
                        "{pointer}/{key}: expected {} but got {}",
                        shown(e),
                        shown(a)
                    )),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (e, a)) in e.iter().zip(a).enumerate() {
                differences(e, a, &format!("{pointer}/{i}"), out);
            }
        }
        (e, a) if e != a => out.push(format!(
            "{pointer}: expected {} but got {}",
            shown(Some(e)),
            shown(Some(a))
        )),
        _ => {}
    }
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None => "nothing".to_string(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > 300 {
                format!("{}…", text.chars().take(300).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// The state the transcripts imply but do not show, set up through the handle right before
/// the entry of that name.
fn prepare(api: &ApiServer, entry: &str) -> bool {
    match entry {
        // The list answers (from "list by name and matching label selector" on) show a pod
        // `worker-prefixed` (labels app=worker, example.com/active-jobs=2) with a resource
        // version just after `worker-nolabels`; no entry creates it.
        "get pod" => {
            api.create_pod(
                NAMESPACE,
                "worker-prefixed",
                &[("app", "worker"), ("example.com/active-jobs", "2")],
            );
            true
        }
        // The budget refuses to let `worker-a` go, so by then it ran and carried the label;
        // the delete answer at the end shows it Running with active-jobs=1.
        "evict a pod that the budget selects (active-jobs label present)" => {
            api.set_label(NAMESPACE, "worker-a", "active-jobs", Some("1"));
            api.set_phase(NAMESPACE, "worker-a", "Running");
            true
        }
        // "nobody" gets a Role limited by resourceNames before the entries about it.
        "resourceNames role: get the named pod" => {
            api.allow(
                Subject::user("nobody"),
                Rule::new(["get", "patch"], ["pods"])
                    .namespace(NAMESPACE)
                    .resource_names(["worker-nolabels"]),
            );
            true
        }
        _ => false,
    }
}

fn token(caller: &str) -> &'static str {
    match caller {
        "admin" => "admin-token",
        "limited" => "limited-token",
        "nobody" => "nobody-token",
        "bogus" => "bogus-token",
        other => panic!("the transcripts name an unknown caller {other:?}"),
    }
}

#[test]
fn every_recorded_request_gets_the_answer_the_real_api_server_gave() {
    let entries = load_transcripts();
    // The recorded cluster ran no disruption controller: its budget answer has no
    // observedGeneration and its eviction refusal says the budget is "still being processed".
    let api = ApiServer::builder().without_disruption_controller().start();
    api.add_token("admin-token", User::admin("admin"));
    api.add_token("limited-token", User::new("tracker"));
    api.add_token("nobody-token", User::new("nobody"));
    api.allow(
        Subject::user("tracker"),
        Rule::new(["get", "list", "update", "patch"], ["pods"])
            .namespace(NAMESPACE)
            .named("tracker"),
    );

    let mut connection = Connection::open(&api);
    let mut seen = Correspondence::default();
    let mut prepared = 0;
    let mut failures = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry["name"].as_str().unwrap_or("(unnamed)");
        if prepare(&api, name) {
            prepared += 1;
        }
        let request = &entry["request"];
        let expected = &entry["response"];
        let method = request["method"].as_str().expect("method");
        let path = request["path"].as_str().expect("path");
        let mut headers = vec![(
            "Authorization".to_string(),
            format!("Bearer {}", token(request["as"].as_str().expect("as"))),
        )];
        if let Some(content_type) = request.get("content_type").and_then(Value::as_str) {
            headers.push(("Content-Type".to_string(), content_type.to_string()));
        }
        if let Some(extra) = request.get("headers").and_then(Value::as_object) {
            headers.extend(
                extra
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
            );
        }
        let body: Option<Vec<u8>> = match request.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(raw)) => Some(raw.clone().into_bytes()),
            Some(json) => Some(seen.translate(json).to_string().into_bytes()),
        };
        let answer = connection.send(method, path, &headers, body.as_deref());

        let mut problems = Vec::new();
        let expected_status = expected["status"].as_u64().expect("status");
        if u64::from(answer.status) != expected_status {
            problems.push(format!(
                "status {} instead of {expected_status}",
                answer.status
            ));
        }
        if answer.content_type.as_deref() != expected["content_type"].as_str() {
            problems.push(format!(
                "content type {:?} instead of {}",
                answer.content_type, expected["content_type"]
            ));
        }
        let recorded = &expected["body"];
        if recorded.get("kind") == Some(&json!("Status")) {
            differences(recorded, &answer.body, "", &mut problems);
        } else {
            seen.observe(recorded, &answer.body, &mut problems);
            differences(
                &normalized(recorded),
                &normalized(&answer.body),
                "",
                &mut problems,
            );
        }
        if !problems.is_empty() {
            failures.push(format!(
                "#{index} {name:?} ({method} {path}):\n  {}",
                problems.join("\n  ")
            ));
        }
    }
    assert_eq!(
        prepared, 3,
        "every piece of implied state was set up (an entry was renamed?)"
    );
    assert!(
        failures.is_empty(),
        "{} of {} recorded answers were not reproduced:\n\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n\n")
    );
}
