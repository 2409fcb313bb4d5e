//! The standalone service's periodic sweep (`--sweep-interval`): jobs past their deadline on
//! pods nobody calls about are released by those pods' writers.

use std::time::Duration;

use crate::api::PodClient;
use crate::core::durations;
use crate::core::pod::PodRef;
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
        let selector = self.selector.as_ref().map(ToString::to_string);
        let now = durations::unix_seconds(std::time::SystemTime::now());
        for namespace in &self.namespaces {
            let listed = match self.pods.list(namespace, selector.as_deref()).await {
                Ok(listed) => listed,
                Err(failure) => {
                    log::warn!(
                        "sweep: cannot list pods in {namespace}: {failure} (grant list on pods for the sweep)"
                    );
                    continue;
                }
            };
            for (name, view) in listed {
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
        }
    }
}
