//! Reads the cluster for `doctor`: budgets, pods and access reviews, each request bounded in
//! time, every failure kept as a fact rather than an abort.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::reads::{ReadFailure, Reader};
use crate::config::Config;
use crate::core::target::Targeting;

use super::checks::rights::{NEEDED, NOT_NEEDED};
use super::facts::*;
use crate::core::inject::settings::INJECT_LABEL;

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
    let pods = reader.pods(&namespace).await;
    let injected = match &pods {
        Ok(pods) => injected_accounts(reader, &namespace, pods).await,
        Err(_) => Vec::new(),
    };
    let pods = pods.map(|pods| {
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
    let create_token_reviews = if config.authentication.is_some() {
        let mut review = crate::api::access_review("create", "tokenreviews", "", None);
        if let Some(attributes) = review.spec.resource_attributes.as_mut() {
            attributes.group = Some("authentication.k8s.io".to_owned());
            attributes.namespace = None;
        }
        Some(reader.allowed(review).await.map_err(|e| e.message))
    } else {
        None
    };
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
        create_token_reviews,
        injected,
        access: match access_failure {
            Some(why) => Err(why),
            None => Ok(access),
        },
    }
}

/// The accounts of the pods that opt in to injection, and whether each may get and patch pods.
async fn injected_accounts(
    reader: &Reader,
    namespace: &str,
    pods: &[k8s_openapi::api::core::v1::Pod],
) -> Vec<InjectedAccount> {
    let mut accounts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        if labels.and_then(|l| l.get(INJECT_LABEL)).map(String::as_str) != Some("true") {
            continue;
        }
        let account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        accounts
            .entry(account)
            .or_default()
            .push(pod.metadata.name.clone().unwrap_or_default());
    }
    let mut found = Vec::new();
    for (name, pods) in accounts {
        let mut missing = Ok(Vec::new());
        for verb in NEEDED {
            match reader.account_may(&name, namespace, verb).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Ok(missing) = missing.as_mut() {
                        missing.push(verb.to_owned());
                    }
                }
                Err(failure) => {
                    missing = Err(failure.message);
                    break;
                }
            }
        }
        found.push(InjectedAccount {
            name,
            pods,
            missing,
        });
    }
    found
}

fn unreadable(failure: ReadFailure) -> Unreadable {
    Unreadable {
        forbidden: failure.forbidden,
        message: failure.message,
    }
}
