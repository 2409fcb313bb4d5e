//! Counting on a real API server: the label goes up and down, is removed at zero, and 32
//! concurrent callers on one pod are each counted exactly once.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use scene::{Scene, get_and_patch_pods};
use support::request;

#[test]
fn a_standalone_tracker_counts_a_pod_label_up_and_down_and_removes_it_at_zero() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));
    assert_eq!(tracker.increment("pod_name=w1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(scene.label("w1", "active-jobs"), None, "removed at zero");
    assert_eq!(
        scene.labels("w1").get("app").map(String::as_str),
        Some("worker")
    );
}

#[test]
fn thirty_two_clients_on_one_pod_are_each_counted_exactly_once() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    let address = tracker.address;
    let callers: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| request(address, "POST", "/increment?pod_name=w1", &[]).count())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts: Vec<i64> = callers
        .into_iter()
        .flat_map(|caller| caller.join().expect("a caller"))
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=160).collect::<Vec<_>>(), "every count once");
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("160"));
}
