//! The standalone service's periodic sweep (`--sweep-interval`): jobs past their deadline on
//! pods nobody calls about are released by those pods' writers. The pods are listed a page at a
//! time (`--sweep-page-size`), so a sweep of a large fleet never holds the whole list; when the
//! API server has compacted the list's snapshot meanwhile (410 Expired), the list starts again.
//! A complete list also tells which tracked pods are gone: the tracker forgets them.

use std::future::Future;
use std::time::Duration;

use crate::api::{ApiFailure, PodClient, PodPage};
use crate::core::durations;
use crate::core::pod::PodRef;
use crate::core::view::PodView;
use crate::serve::tracker::Tracker;

/// The standalone service's periodic sweep: it lists the pods it may touch and has each one
/// with a job past its deadline released by that pod's writer, through the same guarded
/// write as every call (so replicas sweeping at once cost a conflict, never a double release).
pub(crate) struct Sweep {
    pub(crate) tracker: Tracker,
    pub(crate) pods: PodClient,
    /// `--allowed-namespaces`, else `--namespace`.
    pub(crate) namespaces: Vec<String>,
    /// `--label-selector`: pods outside it are never touched.
    pub(crate) selector: Option<kube_labels::Selector>,
    pub(crate) jobs_annotation: String,
    /// `--sweep-page-size`: pods per LIST request.
    pub(crate) page_size: u32,
}

/// How often one sweep of a namespace starts its list again after an expired continue token
/// before it gives up until the next sweep.
pub(crate) const MAX_RESTARTS: u32 = 3;

/// Fetches the pages `fetch` gives (from no token, then each page's next) and hands each page's
/// pods to `each`; after an expired token, starts again from the first page (at most
/// [`MAX_RESTARTS`] times). Returns how many pages were fetched.
pub(crate) async fn for_each_page<F, Fut>(
    mut fetch: F,
    mut each: impl FnMut(Vec<(String, PodView)>),
) -> Result<u32, ApiFailure>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Option<PodPage>, ApiFailure>>,
{
    let (mut token, mut restarts, mut pages) = (None, 0u32, 0u32);
    loop {
        pages = pages.saturating_add(1);
        match fetch(token.take()).await? {
            Some(page) => {
                each(page.pods);
                match page.next {
                    Some(next) => token = Some(next),
                    None => return Ok(pages),
                }
            }
            None if restarts < MAX_RESTARTS => {
                restarts = restarts.saturating_add(1);
                log::info!(
                    "sweep: the list expired while paging (410); listing again from the start"
                );
            }
            None => {
                return Err(ApiFailure::Rejected(format!(
                    "the list expired {} times in a row while paging",
                    MAX_RESTARTS.saturating_add(1)
                )));
            }
        }
    }
}

impl Sweep {
    /// Sweeps every `interval`, for as long as the runtime runs.
    pub(crate) async fn run(self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.once().await;
        }
    }

    async fn once(&self) {
        let started = std::time::Instant::now();
        let selector = self.selector.as_ref().map(ToString::to_string);
        let now = durations::unix_seconds(std::time::SystemTime::now());
        for namespace in &self.namespaces {
            // The pods tracked before the list: those it does not show are gone (or no longer
            // selected), and what the tracker keeps of them is forgotten.
            let tracked = self.tracker.tracked_in(namespace);
            let mut listed = vec![false; tracked.len()];
            let fetch = |token: Option<String>| {
                let selector = selector.clone();
                async move {
                    self.pods
                        .list_page(
                            namespace,
                            selector.as_deref(),
                            self.page_size,
                            token.as_deref(),
                        )
                        .await
                }
            };
            let each = |pods: Vec<(String, PodView)>| {
                self.pods.metrics().sweep_pods.inc_by(pods.len() as u64);
                for (name, view) in pods {
                    if let Ok(index) = tracked.binary_search(&name)
                        && let Some(seen) = listed.get_mut(index)
                    {
                        *seen = true;
                    }
                    let due = crate::core::jobs::decode(view.annotation(&self.jobs_annotation))
                        .is_ok_and(|state| crate::core::jobs::has_due_job(&state, now));
                    let selected = self
                        .selector
                        .as_ref()
                        .is_none_or(|selector| selector.matches_with(|key| view.label(key)));
                    if due && selected {
                        log::debug!("sweep: pod {namespace}/{name} has expired jobs");
                        self.tracker
                            .sweep(PodRef::new(namespace.clone(), name), view);
                    }
                }
            };
            match for_each_page(fetch, each).await {
                Ok(_) => {
                    let unlisted: Vec<String> = tracked
                        .into_iter()
                        .zip(listed)
                        .filter_map(|(name, seen)| (!seen).then_some(name))
                        .collect();
                    let forgotten = self.tracker.forget_unlisted(namespace, unlisted);
                    if forgotten > 0 {
                        log::debug!(
                            "sweep: forgot {forgotten} pod(s) of {namespace} that are gone or no longer selected"
                        );
                    }
                }
                Err(failure) => log::warn!(
                    "sweep: cannot list pods in {namespace}: {failure} (grant list on pods for the sweep)"
                ),
            }
        }
        self.pods
            .metrics()
            .sweep_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(names: &[&str], next: Option<&str>) -> Option<PodPage> {
        Some(PodPage {
            pods: names
                .iter()
                .map(|n| ((*n).to_owned(), PodView::default()))
                .collect(),
            next: next.map(str::to_owned),
        })
    }

    /// Runs `for_each_page` over scripted answers; returns the tokens asked for, the pods seen
    /// and the outcome.
    async fn scripted(
        answers: Vec<Result<Option<PodPage>, ApiFailure>>,
    ) -> (Vec<Option<String>>, Vec<String>, Result<u32, ApiFailure>) {
        let answers = std::sync::Mutex::new(answers.into_iter());
        let asked = std::sync::Mutex::new(Vec::new());
        let mut seen = Vec::new();
        let outcome = for_each_page(
            |token| {
                asked.lock().expect("lock").push(token);
                let next = answers.lock().expect("lock").next().expect("an answer");
                async move { next }
            },
            |pods| seen.extend(pods.into_iter().map(|(name, _)| name)),
        )
        .await;
        (asked.into_inner().expect("lock"), seen, outcome)
    }

    #[tokio::test]
    async fn pages_are_followed_by_their_continue_tokens_to_the_last() {
        let (asked, seen, outcome) = scripted(vec![
            Ok(page(&["a", "b"], Some("t1"))),
            Ok(page(&["c", "d"], Some("t2"))),
            Ok(page(&["e"], None)),
        ])
        .await;
        assert_eq!(asked, [None, Some("t1".to_owned()), Some("t2".to_owned())]);
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert_eq!(outcome, Ok(3));
    }

    #[tokio::test]
    async fn an_expired_token_starts_the_list_again_a_bounded_number_of_times() {
        let (asked, seen, outcome) = scripted(vec![
            Ok(page(&["a"], Some("t1"))),
            Ok(None),
            Ok(page(&["a"], Some("t2"))),
            Ok(page(&["b"], None)),
        ])
        .await;
        assert_eq!(
            asked,
            [None, Some("t1".to_owned()), None, Some("t2".to_owned())]
        );
        assert_eq!(
            seen,
            ["a", "a", "b"],
            "the pods after the restart are all seen"
        );
        assert_eq!(outcome, Ok(4));

        let always_expired = (0..=MAX_RESTARTS)
            .flat_map(|_| [Ok(page(&["a"], Some("t"))), Ok(None)])
            .collect();
        let (_, _, outcome) = scripted(always_expired).await;
        assert!(
            matches!(outcome, Err(ApiFailure::Rejected(ref why)) if why.contains("expired")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_page_ends_the_sweep_of_the_namespace() {
        let (_, seen, outcome) = scripted(vec![
            Ok(page(&["a"], Some("t1"))),
            Err(ApiFailure::Refused("no list".to_owned())),
        ])
        .await;
        assert_eq!(seen, ["a"]);
        assert_eq!(outcome, Err(ApiFailure::Refused("no list".to_owned())));
    }
}
