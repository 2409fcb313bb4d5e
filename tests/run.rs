//! Black-box tests of `run`: the real binary wraps a shell command and counts it through a real
//! sidecar tracker, which writes to the API test double.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_double::{ApiServer, Outcome, Rule, Subject, User, Verb};
use support::{NS, TOKEN, Tracker};

/// How long anything in these tests may take before the test gives up.
const LIMIT: Duration = Duration::from_secs(60);
/// The pod the sidecar runs in.
const POD: &str = "job-1";
/// A command's wait for the test, in 10 ms steps (bounded, so a lost signal fails the test
/// instead of hanging it).
const WAIT_FOR_GO: &str = r#"i=0; while [ ! -e "$1/go" ]; do i=$((i + 1)); [ "$i" -gt 6000 ] && exit 99; sleep 0.01; done"#;

fn api() -> ApiServer {
    let api = support::api();
    api.create_pod(NS, POD, &[("app", "worker")]);
    api
}

/// A sidecar tracker for [`POD`], as in the pod.
fn sidecar(api: &ApiServer) -> Tracker {
    Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
        ])
        .env("POD_NAME", POD)
        .env("POD_NAMESPACE", NS)
        .start()
}

fn count(api: &ApiServer) -> Option<String> {
    api.labels(NS, POD)
        .expect("the pod exists")
        .get("active-jobs")
        .cloned()
}

/// A scratch directory for marker files.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pwt-run-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Waits (bounded polling) until the command has created `name`.
    fn wait_for(&self, name: &str) {
        let deadline = Instant::now() + LIMIT;
        while !self.file(name).exists() {
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.file(name), b"").expect("writes a marker");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `pod-webhook-tracker run --url=URL FLAGS -- sh -c SCRIPT sh DIR`, running.
struct Wrapper {
    child: Child,
}

impl Wrapper {
    fn start(url: &str, flags: &[&str], script: &str, dir: &Path) -> Wrapper {
        let child = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
            .arg("run")
            .arg(format!("--url={url}"))
            .args(flags)
            .args(["--", "sh", "-c", script, "sh"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        Wrapper { child }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits for the wrapper to exit (bounded); returns its status and what it printed.
    fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the wrapper did not exit within {LIMIT:?}");
            }
            // Polling a child's exit has no blocking-with-timeout form in std.
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("reads stderr");
        }
        (status, stderr)
    }
}

impl Drop for Wrapper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url(tracker: &Tracker) -> String {
    format!("http://{}", tracker.address)
}

/// An address where nothing listens.
fn nobody() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    format!("http://{address}")
}

#[test]
fn a_job_counts_while_its_command_runs_and_not_after() {
    let api = api();
    let tracker = sidecar(&api);
    let dir = Scratch::new("normal");
    let script = format!(r#"touch "$1/started"; {WAIT_FOR_GO}"#);
    let wrapper = Wrapper::start(&url(&tracker), &[], &script, dir.path());
    dir.wait_for("started");
    assert_eq!(count(&api).as_deref(), Some("1"), "counted while it runs");
    dir.touch("go");
    let (status, stderr) = wrapper.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(count(&api), None, "uncounted after it ended: {stderr}");
    assert!(
        stderr.contains("increment: ok (active jobs in this pod: 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("decrement: ok (active jobs in this pod: 0)"),
        "{stderr}"
    );
}

/// Runs `script` as the job against a real sidecar: it exits with `code`, and is uncounted.
fn ends_with(script: &str, code: i32, scratch: &str) {
    let api = api();
    let tracker = sidecar(&api);
    let dir = Scratch::new(scratch);
    let (status, stderr) = Wrapper::start(&url(&tracker), &[], script, dir.path()).finish();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert_eq!(count(&api), None, "{stderr}");
    assert!(stderr.contains("decrement: ok"), "{stderr}");
}

#[test]
fn a_failing_command_is_uncounted_and_its_exit_status_passed_on() {
    ends_with("exit 3", 3, "failure");
}

#[test]
fn a_command_killed_by_a_signal_exits_128_plus_the_signal_and_is_uncounted() {
    ends_with("kill -TERM $$", 143, "killed");
}

#[test]
fn sigterm_to_the_wrapper_reaches_the_command_and_the_job_is_uncounted() {
    let api = api();
    let tracker = sidecar(&api);
    let dir = Scratch::new("sigterm");
    let script =
        format!(r#"trap 'touch "$1/got-term"; exit 7' TERM; touch "$1/started"; {WAIT_FOR_GO}"#);
    let wrapper = Wrapper::start(&url(&tracker), &[], &script, dir.path());
    dir.wait_for("started");
    assert_eq!(count(&api).as_deref(), Some("1"));
    wrapper.signal("TERM");
    let (status, stderr) = wrapper.finish();
    assert!(
        dir.file("got-term").exists(),
        "the command saw SIGTERM: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(7),
        "the command's own exit status: {stderr}"
    );
    assert!(
        stderr.contains("passing SIGTERM on to the command"),
        "{stderr}"
    );
    assert_eq!(count(&api), None, "{stderr}");
}

#[test]
fn orphaned_background_processes_are_adopted_and_reaped_while_the_command_runs() {
    let api = api();
    let tracker = sidecar(&api);
    let dir = Scratch::new("orphans");
    // A middle shell starts a background shell and exits at once, orphaning it. Once orphaned,
    // the background shell records its pid and its parent's (field 4 of /proc/self/stat, read
    // by the shell itself), then exits.
    let orphan = r#"sleep 0.2; read -r me comm state parent rest < /proc/self/stat; echo "$me $parent" > "$1/orphan.tmp"; mv "$1/orphan.tmp" "$1/orphan""#;
    let script = format!(r#"sh -c '( {orphan} ) &' sh "$1"; {WAIT_FOR_GO}"#);
    let wrapper = Wrapper::start(&url(&tracker), &[], &script, dir.path());
    dir.wait_for("orphan");
    let recorded = std::fs::read_to_string(dir.file("orphan")).expect("readable");
    let (orphan_pid, parent) = recorded
        .split_once(' ')
        .map(|(pid, parent)| (pid.trim().to_owned(), parent.trim().to_owned()))
        .expect("two pids");
    assert_eq!(
        parent,
        wrapper.child.id().to_string(),
        "the orphan was adopted by the wrapper"
    );
    // The orphan has exited (or is about to): the wrapper must reap it while the command still
    // runs, or it stays a zombie (`State: Z`) until the wrapper itself exits.
    let deadline = Instant::now() + LIMIT;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{orphan_pid}/status"));
        let gone = status.as_ref().map_or(true, |status| {
            // The pid may already belong to another process: then ours is gone too.
            !status
                .lines()
                .any(|l| l == format!("PPid:\t{}", wrapper.child.id()))
        });
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orphan was never reaped: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    dir.touch("go");
    let (status, stderr) = wrapper.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(count(&api), None, "{stderr}");
}

#[test]
fn without_a_tracker_the_command_is_not_started_and_the_exit_status_is_75() {
    let dir = Scratch::new("no-tracker");
    let (status, stderr) = Wrapper::start(
        &nobody(),
        &["--retry-timeout=500ms"],
        r#"touch "$1/ran""#,
        dir.path(),
    )
    .finish();
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert!(!dir.file("ran").exists(), "the command must not run");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for part in [
        "could not count this job",
        "cannot connect",
        "attempts",
        "not starting it",
        "--run-unprotected",
    ] {
        assert!(stderr.contains(part), "{part} missing from {stderr}");
    }
}

#[test]
fn with_run_unprotected_the_command_runs_anyway_with_a_warning() {
    let dir = Scratch::new("unprotected");
    let (status, stderr) = Wrapper::start(
        &nobody(),
        &["--retry-timeout=0", "--run-unprotected"],
        r#"touch "$1/ran"; exit 4"#,
        dir.path(),
    )
    .finish();
    assert!(dir.file("ran").exists(), "the command ran: {stderr}");
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("warning: could not count this job"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("decrement"),
        "nothing to uncount: {stderr}"
    );
}

#[test]
fn a_call_the_tracker_answered_is_never_repeated() {
    // The tracker may read the pod but not patch it: it answers 502, and nothing was written.
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("tracker"));
    api.allow(
        Subject::user("tracker"),
        Rule::new(["get"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, POD, &[]);
    let tracker = sidecar(&api);
    let dir = Scratch::new("answered");
    let (status, stderr) =
        Wrapper::start(&url(&tracker), &[], r#"touch "$1/ran""#, dir.path()).finish();
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("the tracker answered 502"), "{stderr}");
    assert!(!dir.file("ran").exists());
    assert_eq!(
        api.count(Verb::Patch, Outcome::Status(403)),
        1,
        "one call, one write attempt: {stderr}"
    );
}

#[test]
fn a_decrement_that_cannot_reach_the_tracker_is_reported_and_the_status_kept() {
    let api = api();
    let tracker = sidecar(&api);
    let dir = Scratch::new("lost-decrement");
    let script = format!(r#"touch "$1/started"; {WAIT_FOR_GO}; exit 5"#);
    let wrapper = Wrapper::start(
        &url(&tracker),
        &["--retry-timeout=500ms"],
        &script,
        dir.path(),
    );
    dir.wait_for("started");
    drop(tracker);
    dir.touch("go");
    let (status, stderr) = wrapper.finish();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("decrement failed"), "{stderr}");
    assert!(stderr.contains("attempts"), "retried first: {stderr}");
    assert_eq!(count(&api).as_deref(), Some("1"), "the pod stays protected");
}

#[test]
fn https_without_the_trackers_ca_and_a_missing_command_are_refused_with_exit_status_2() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
            .arg("run")
            .args(args)
            .env_remove("TRACKER_URL")
            .output()
            .expect("the binary runs");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (status, stderr) = run(&["--url=https://127.0.0.1:8080", "--", "true"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ca-file") && stderr.contains("cannot read it"),
        "https needs the tracker's CA: {stderr}"
    );
    let (status, stderr) = run(&["--"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no command given"), "{stderr}");
}

#[test]
fn install_copies_the_program_for_another_container() {
    let dir = Scratch::new("install");
    let install = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
            .arg("install")
            .arg(dir)
            .output()
            .expect("the binary runs")
    };
    for _ in 0..2 {
        let output = install(dir.path());
        assert!(
            output.status.success(),
            "installs, also over itself: {output:?}"
        );
    }
    let copy = dir.file("pod-webhook-tracker");
    let version = Command::new(&copy)
        .arg("version")
        .output()
        .expect("the copy runs");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    let entries = std::fs::read_dir(dir.path()).expect("lists").count();
    assert_eq!(entries, 1, "no temporary file left behind");
    let output = install(&dir.file("no-such-dir"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot copy"),
        "{output:?}"
    );
}

/// A stand-in for the tracker that gives scripted answers, to test what `run` does with each.
struct FakeTracker {
    address: SocketAddr,
    requests: mpsc::Receiver<String>,
    thread: std::thread::JoinHandle<()>,
}

impl FakeTracker {
    /// Answers the calls in order with `answers` (what follows `HTTP/1.1 `); closes the
    /// connection without an answer once they run out.
    fn start(answers: &[&str]) -> FakeTracker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = listener.local_addr().expect("an address");
        let (sender, requests) = mpsc::channel();
        let mut answers: Vec<String> = answers.iter().map(|a| (*a).to_owned()).collect();
        answers.reverse();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clones"));
                let _ = reader.read_line(&mut line);
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                    header.clear();
                }
                let line = line.trim_end().to_owned();
                if line == "QUIT" {
                    return;
                }
                let _ = sender.send(line);
                // An empty answer: the call is taken and the connection closed unanswered.
                if let Some(answer) = answers.pop().filter(|answer| !answer.is_empty()) {
                    let _ = stream.write_all(format!("HTTP/1.1 {answer}").as_bytes());
                }
            }
        });
        FakeTracker {
            address,
            requests,
            thread,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn next_request(&self) -> String {
        self.requests
            .recv_timeout(LIMIT)
            .expect("a request within the limit")
    }

    /// Stops it; returns the requests not taken, each as `POST /path`, and checks that they all
    /// named the same job by a `run-…` key.
    fn stop_with_one_key(self) -> Vec<String> {
        let requests = self.stop();
        let mut keys = requests.iter().map(|line| job_key(line));
        let first = keys.next().flatten();
        assert!(
            first.as_deref().is_some_and(|key| key.starts_with("run-")),
            "{requests:?}"
        );
        assert!(
            keys.all(|key| key == first),
            "one key for the whole job: {requests:?}"
        );
        requests.iter().map(|line| without_query(line)).collect()
    }

    /// Stops it; returns the requests not taken with [`FakeTracker::next_request`].
    fn stop(self) -> Vec<String> {
        let mut quit = TcpStream::connect(self.address).expect("connects");
        quit.write_all(b"QUIT\r\n\r\n").expect("writes");
        self.thread.join().expect("the fake tracker ends");
        self.requests.try_iter().collect()
    }
}

/// The `job` of a request line such as `POST /increment?job=run-1f HTTP/1.1`.
fn job_key(line: &str) -> Option<String> {
    let target = line.split(' ').nth(1)?;
    let (_, query) = target.split_once('?')?;
    query.strip_prefix("job=").map(str::to_owned)
}

/// `POST /increment` of `POST /increment?job=… HTTP/1.1`.
fn without_query(line: &str) -> String {
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    format!("{method} {path}")
}

fn answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "{status}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
}

#[test]
fn a_503_is_repeated_until_the_tracker_takes_the_call() {
    let fake = FakeTracker::start(&[
        &answer("503 Service Unavailable", "Retry-After: 0\r\n", "api down"),
        &answer("200 OK", "", "1"),
        &answer("200 OK", "", "0"),
    ]);
    let dir = Scratch::new("503");
    let (status, stderr) =
        Wrapper::start(&fake.url(), &[], r#"touch "$1/ran""#, dir.path()).finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(dir.file("ran").exists(), "{stderr}");
    assert_eq!(
        fake.stop_with_one_key(),
        ["POST /increment", "POST /increment", "POST /decrement"]
    );
}

/// The first increment gets `first` (an empty one: taken, and closed unanswered); the repeat,
/// with the same key, is answered, the command runs and its job is ended once.
fn repeated_with_the_same_key_after(first: &str, scratch: &str) {
    let fake = FakeTracker::start(&[
        first,
        &answer("200 OK", "", "1"),
        &answer("200 OK", "", "0"),
    ]);
    let dir = Scratch::new(scratch);
    let (status, stderr) =
        Wrapper::start(&fake.url(), &[], r#"touch "$1/ran""#, dir.path()).finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(dir.file("ran").exists(), "{stderr}");
    assert_eq!(
        fake.stop_with_one_key(),
        ["POST /increment", "POST /increment", "POST /decrement"]
    );
}

#[test]
fn an_increment_answered_504_is_repeated_with_the_same_job_key_and_the_job_runs() {
    repeated_with_the_same_key_after(
        &answer(
            "504 Gateway Timeout",
            "",
            "pod jobs/job-1: the outcome is unknown",
        ),
        "504",
    );
}

#[test]
fn a_call_whose_answer_is_lost_is_repeated_with_the_same_job_key() {
    // The tracker counts a keyed start once, however often it comes.
    repeated_with_the_same_key_after("", "lost");
}

#[test]
fn an_increment_whose_answers_stay_lost_is_not_started_and_its_outcome_reported_unknown() {
    let fake = FakeTracker::start(&[]);
    let dir = Scratch::new("lost-for-good");
    let (status, stderr) = Wrapper::start(
        &fake.url(),
        &["--retry-timeout=1s"],
        r#"touch "$1/ran""#,
        dir.path(),
    )
    .finish();
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert!(!dir.file("ran").exists(), "{stderr}");
    assert!(stderr.contains("may have received the call"), "{stderr}");
    assert!(stderr.contains("ending the job"), "{stderr}");
    let requests = fake.stop_with_one_key();
    let increments = requests
        .iter()
        .take_while(|r| *r == "POST /increment")
        .count();
    assert!(increments >= 2, "repeated: {requests:?}");
    assert!(
        requests
            .iter()
            .skip(increments)
            .all(|r| r == "POST /decrement"),
        "then ended with the same key, a no-op if it never started: {requests:?}"
    );
}

#[test]
fn sigterm_while_waiting_to_repeat_the_increment_ends_the_wait_and_starts_nothing() {
    let fake = FakeTracker::start(&[&answer(
        "503 Service Unavailable",
        "Retry-After: 30\r\n",
        "api down",
    )]);
    let dir = Scratch::new("term-before-start");
    let started = Instant::now();
    let wrapper = Wrapper::start(&fake.url(), &[], r#"touch "$1/ran""#, dir.path());
    // The handlers are installed before the first call; the wrapper now waits 30 s to repeat it.
    assert_eq!(without_query(&fake.next_request()), "POST /increment");
    wrapper.signal("TERM");
    let (status, stderr) = wrapper.finish();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the signal ended the wait"
    );
    assert!(!dir.file("ran").exists(), "{stderr}");
    assert!(
        stderr.contains("stopped by SIGTERM before the job was counted"),
        "{stderr}"
    );
    assert_eq!(
        fake.stop(),
        Vec::<String>::new(),
        "no decrement: nothing was counted"
    );
}

/// The deadline the tracker keeps for the wrapper's job (`run-…`), in Unix seconds.
fn run_job_deadline(api: &ApiServer) -> Option<u64> {
    let annotations = api.annotations(NS, POD)?;
    let jobs: serde_json::Value =
        serde_json::from_str(annotations.get("active-jobs-jobs")?).ok()?;
    let (id, job) = jobs.get("jobs")?.as_object()?.iter().next()?;
    assert!(id.starts_with("run-"), "{jobs}");
    job.get("d")?.as_u64()
}

#[test]
fn a_long_command_is_renewed_so_that_the_trackers_max_job_duration_does_not_release_it() {
    let api = api();
    let tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
            "--max-job-duration=2s".to_owned(),
        ])
        .env("POD_NAME", POD)
        .env("POD_NAMESPACE", NS)
        .start();
    let dir = Scratch::new("renewed");
    let script = format!(r#"touch "$1/started"; {WAIT_FOR_GO}"#);
    let wrapper = Wrapper::start(
        &url(&tracker),
        &["--renew-interval=1s"],
        &script,
        dir.path(),
    );
    dir.wait_for("started");
    let first = run_job_deadline(&api).expect("a keyed job with a deadline");
    // Past the first deadline (and the writer's one-second margin): still counted, later deadline.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        count(&api).as_deref(),
        Some("1"),
        "still counted:\n{}",
        tracker.log()
    );
    let later = run_job_deadline(&api).expect("still running");
    assert!(later > first, "renewed: {first} → {later}");
    dir.touch("go");
    let (status, stderr) = wrapper.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(count(&api), None, "uncounted after it ended: {stderr}");
    assert!(!stderr.contains("renewing the job failed"), "{stderr}");
}

#[test]
fn without_url_run_calls_the_tracker_the_injector_names_in_tracker_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args(["run", "--", "true"])
        .env("TRACKER_URL", "ftp://127.0.0.1:1")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("$TRACKER_URL"), "{stderr}");
}
