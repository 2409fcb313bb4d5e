//! Reads the cluster for `doctor`: budgets, pods and access reviews, each request bounded in
//! time, every failure kept as a fact rather than an abort.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::reads::{ReadFailure, Reader};
use crate::config::Config;
use crate::core::target::Targeting;

use super::checks::rights::{NEEDED, NOT_NEEDED};
use super::facts::*;

/// The limit of one API request when `--kube-request-timeout` sets none: a preflight check
/// should not hang.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads what the checks need from the cluster.
pub(crate) async fn gather(reader: &Reader, config: &Config) -> Facts {
    let (namespace, pod) = match &config.targeting {
        Targeting::Sidecar { own } => (own.namespace.clone(), Some(own.name.clone())),
        Targeting::Standalone {
            default_namespace, ..
        } => (default_namespace.clone(), None),
    };
    let budgets = reader.budgets(&namespace).await.map(|budgets| {
        budgets
            .iter()
            .map(|pdb| Budget::new(pdb, &config.keys.label))
            .collect()
    });
    let pods = reader.pods(&namespace).await.map(|pods| {
        pods.into_iter()
            .map(|pod| PodLabels {
                name: pod.metadata.name.unwrap_or_default(),
                labels: pod.metadata.labels.unwrap_or_default(),
            })
            .collect()
    });
    let mut access = BTreeMap::new();
    let mut access_failure = None;
    for verb in NEEDED.into_iter().chain(NOT_NEEDED) {
        // The sidecar's own pod, when doctor runs in it: a Role may name just that pod.
        let name = if NEEDED.contains(&verb) {
            pod.as_deref()
        } else {
            None
        };
        let review = crate::api::pod_access_review(verb, &namespace, name);
        match reader.allowed(review).await {
            Ok(allowed) => {
                access.insert(verb.to_owned(), allowed);
            }
            Err(unreadable) => {
                access_failure = Some(unreadable.message);
                break;
            }
        }
    }
    let create_events = if config.events {
        let review = crate::api::access_review("create", "events", &namespace, None);
        Some(reader.allowed(review).await.map_err(|e| e.message))
    } else {
        None
    };
    Facts {
        namespace,
        label: config.keys.label.clone(),
        selector: config.selector.clone(),
        budgets: budgets.map_err(unreadable),
        pods: pods.map_err(unreadable),
        create_events,
        access: match access_failure {
            Some(why) => Err(why),
            None => Ok(access),
        },
    }
}

fn unreadable(failure: ReadFailure) -> Unreadable {
    Unreadable {
        forbidden: failure.forbidden,
        message: failure.message,
    }
}
