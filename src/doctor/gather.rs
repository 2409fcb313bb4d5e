//! Reads the cluster for `doctor`: budgets, pods and access reviews, each request bounded in
//! time, every failure kept as a fact rather than an abort.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};

use crate::config::Config;
use crate::core::target::Targeting;

use super::checks::rights::{NEEDED, NOT_NEEDED};
use super::facts::*;

/// The limit of one API request when `--kube-request-timeout` sets none: a preflight check
/// should not hang.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads what the checks need from the cluster.
pub async fn gather(client: &kube::Client, config: &Config) -> Facts {
    let limit = config.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let (namespace, pod) = match &config.targeting {
        Targeting::Sidecar { own } => (own.namespace.clone(), Some(own.name.clone())),
        Targeting::Standalone {
            default_namespace, ..
        } => (default_namespace.clone(), None),
    };
    let budgets_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let budgets = limited(limit, budgets_api.list(&ListParams::default()))
        .await
        .map(|list| {
            list.items
                .iter()
                .map(|pdb| Budget::new(pdb, &config.keys.label))
                .collect()
        });
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = limited(limit, pods_api.list(&ListParams::default()))
        .await
        .map(|list| {
            list.items
                .into_iter()
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
            pod.clone()
        } else {
            None
        };
        match may(client, limit, &namespace, verb, name).await {
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
        Some(ask(client, limit, review).await.map_err(|e| e.message))
    } else {
        None
    };
    Facts {
        namespace,
        label: config.keys.label.clone(),
        selector: config.selector.clone(),
        budgets,
        pods,
        create_events,
        access: match access_failure {
            Some(why) => Err(why),
            None => Ok(access),
        },
    }
}

/// Asks the API server whether the identity may `verb` pods (a SelfSubjectAccessReview).
pub(crate) async fn may(
    client: &kube::Client,
    limit: Duration,
    namespace: &str,
    verb: &str,
    name: Option<String>,
) -> Result<bool, Unreadable> {
    let review = crate::api::pod_access_review(verb, namespace, name.as_deref());
    ask(client, limit, review).await
}

/// Sends one SelfSubjectAccessReview: whether the identity is allowed.
pub(crate) async fn ask(
    client: &kube::Client,
    limit: Duration,
    review: SelfSubjectAccessReview,
) -> Result<bool, Unreadable> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = limited(limit, api.create(&PostParams::default(), &review)).await?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}

pub(crate) async fn limited<T>(
    limit: Duration,
    call: impl Future<Output = kube::Result<T>>,
) -> Result<T, Unreadable> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) => Err(Unreadable {
            forbidden: status.code == 403,
            message: if status.message.is_empty() {
                format!("{} {}", status.code, status.reason)
            } else {
                status.message.clone()
            },
        }),
        Ok(Err(other)) => Err(Unreadable {
            forbidden: false,
            message: crate::api::error_chain(&other),
        }),
        Err(_) => Err(Unreadable {
            forbidden: false,
            message: format!("no answer within {}", humantime::format_duration(limit)),
        }),
    }
}
