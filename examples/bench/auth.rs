//! Caller authentication (`serve --standalone --authenticate=serviceaccount`): a caller with a
//! pod-bound token counts jobs on its pod; how many TokenReviews the tracker sends per call at
//! steady state (its cache keeps a verdict 10 s), and what a call costs with them.

use std::path::Path;
use std::time::{Duration, Instant};

use kube_double::{NewPod, Rule, Subject};

use crate::client::Conn;
use crate::cluster::{APP_LABEL, Cluster, NAMESPACE};
use crate::tracker::{Mode, Tracker};

/// The pod the authenticated caller counts.
const POD: &str = "worker-authenticated";

/// What the phase measured.
pub(crate) struct Authentication {
    /// Calls made (an increment and a decrement per job).
    pub calls: usize,
    /// TokenReviews the tracker sent for them.
    pub reviews: usize,
    /// Median latency of a call.
    pub p50: Duration,
    /// Calls whose answer was not the expected count.
    pub failures: usize,
}

/// Starts an authenticated tracker, makes `jobs` jobs with one token, counts the reviews.
pub(crate) fn measure(
    binary: &Path,
    cluster: &Cluster,
    jobs: usize,
) -> Result<Authentication, String> {
    cluster.api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["tokenreviews"]),
    );
    cluster.api.add_pod(
        NewPod::new(NAMESPACE, POD)
            .label(APP_LABEL.0, APP_LABEL.1)
            .phase("Running")
            .service_account("worker"),
    );
    let token = cluster.api.issue_token(
        NAMESPACE,
        "worker",
        POD,
        &["pod-webhook-tracker"],
        Duration::from_secs(3600),
    );
    let tracker = Tracker::spawn(binary, &Mode::Authenticated, &cluster.api.url())?;
    tracker.wait_ready()?;
    let reviews = || {
        cluster
            .api
            .requests()
            .iter()
            .filter(|r| {
                r.path
                    .starts_with("/apis/authentication.k8s.io/v1/tokenreviews")
            })
            .count()
    };
    let before = reviews();
    let bearer = format!("Bearer {token}");
    let mut conn = Conn::new(tracker.address);
    let mut latencies = Vec::with_capacity(jobs * 2);
    let mut failures = 0;
    for _ in 0..jobs {
        for (path, expected) in [("/increment", "1"), ("/decrement", "0")] {
            let started = Instant::now();
            let answer = conn.request("POST", path, &[("Authorization", &bearer)], b"");
            latencies.push(started.elapsed());
            let ok = answer.is_ok_and(|a| a.status == 200 && a.text().trim() == expected);
            failures += usize::from(!ok);
        }
    }
    let measured = Authentication {
        calls: jobs * 2,
        reviews: reviews() - before,
        p50: median(&mut latencies),
        failures,
    };
    tracker.stop();
    Ok(measured)
}

fn median(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default()
}
