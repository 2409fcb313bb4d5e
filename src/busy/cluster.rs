//! `busy`'s reads: paged lists and watches of pods and PodDisruptionBudgets, decoded slim
//! ([`super::objects`]), every failure one [`Failure`] (the rest of `busy` knows no kube types).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::api::{ListParams, WatchParams};
use kube::core::WatchEvent;
use serde::de::DeserializeOwned;

use crate::api::{KubeOverrides, connect, error_chain};
use crate::error::Result;

use super::objects::List;

/// How many times a list starts again after its continue token expired (410) before it gives
/// up: each restart means the objects changed faster than the pages could be read.
const LIST_RESTARTS: u32 = 3;

/// How long the server keeps one watch open (its `timeoutSeconds`); then it is opened again
/// from where it ended. Below the five minutes proxies often cut idle connections at.
pub(crate) const WATCH_SECONDS: u32 = 240;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The server refused it (401 or 403): rights, not luck.
    pub(crate) refused: bool,
    /// 410 Gone: the resource version is too old; list again.
    pub(crate) expired: bool,
    /// What went wrong, in the server's words where it answered.
    pub(crate) message: String,
}

impl Failure {
    fn of(error: kube::Error) -> Failure {
        match error {
            kube::Error::Api(status) => Failure {
                refused: matches!(status.code, 401 | 403),
                expired: status.code == 410,
                message: if status.message.is_empty() {
                    format!("{} {}", status.code, status.reason)
                } else {
                    status.message.clone()
                },
            },
            other => Failure {
                refused: false,
                expired: false,
                message: error_chain(&other),
            },
        }
    }
}

/// What to read: a collection, and the selectors that narrow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Collection {
    /// The collection's path, e.g. `/api/v1/namespaces/ci/pods`.
    pub(crate) path: String,
    /// `labelSelector`.
    pub(crate) labels: Option<String>,
    /// `fieldSelector`.
    pub(crate) fields: Option<String>,
}

impl Collection {
    /// The pods of `namespace` (`None`: every namespace).
    pub(crate) fn pods(namespace: Option<&str>) -> Collection {
        Collection {
            path: match namespace {
                Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
                None => "/api/v1/pods".to_owned(),
            },
            labels: None,
            fields: None,
        }
    }

    /// The PodDisruptionBudgets of `namespace` (`None`: every namespace).
    pub(crate) fn budgets(namespace: Option<&str>) -> Collection {
        Collection {
            path: match namespace {
                Some(ns) => format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"),
                None => "/apis/policy/v1/poddisruptionbudgets".to_owned(),
            },
            labels: None,
            fields: None,
        }
    }
}

/// One change a watch reports.
#[derive(Debug)]
pub(crate) enum Change<T> {
    /// Added or modified: the object as it is now.
    Put(T),
    /// Deleted, or no longer matches the selectors.
    Gone(T),
    /// Nothing changed, but the collection has reached this resource version.
    Bookmark(String),
}

/// The API connection, with a time limit on each list request.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: kube::Client,
    timeout: Option<Duration>,
    chunk_size: Option<u32>,
}

impl Cluster {
    /// Connects as the kubeconfig and flags say.
    pub(crate) async fn connect(
        overrides: &KubeOverrides,
        timeout: Option<Duration>,
        chunk_size: Option<u32>,
    ) -> Result<Cluster> {
        Ok(Cluster {
            client: connect(overrides).await?,
            timeout,
            chunk_size,
        })
    }

    /// The kubeconfig context's namespace (or the in-cluster one), kubectl's default.
    pub(crate) fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Every item of the collection, page by page (`--chunk-size` per request), and the
    /// resource version to watch from. A continue token that expired midway (410) starts the
    /// list again, a few times.
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        collection: &Collection,
    ) -> std::result::Result<(Vec<T>, String), Failure> {
        let mut restarts = 0;
        'list: loop {
            let mut items = Vec::new();
            let mut version = None;
            let mut next: Option<String> = None;
            loop {
                let mut params = ListParams::default();
                if let Some(limit) = self.chunk_size {
                    params = params.limit(limit);
                }
                if let Some(labels) = &collection.labels {
                    params = params.labels(labels);
                }
                if let Some(fields) = &collection.fields {
                    params = params.fields(fields);
                }
                if let Some(token) = &next {
                    params = params.continue_token(token);
                }
                let mut request = kube::core::Request::new(&collection.path)
                    .list(&params)
                    .map_err(|e| Failure::of(kube::Error::BuildRequest(e)))?;
                request.extensions_mut().insert("list");
                let call = self.client.request::<List<T>>(request);
                let page = match self.timeout {
                    Some(limit) => {
                        tokio::time::timeout(limit, call)
                            .await
                            .map_err(|_| Failure {
                                refused: false,
                                expired: false,
                                message: format!(
                                    "no answer within {} (--request-timeout)",
                                    humantime::format_duration(limit)
                                ),
                            })?
                    }
                    None => call.await,
                };
                let page = match page.map_err(Failure::of) {
                    Err(failure) if failure.expired && restarts < LIST_RESTARTS => {
                        restarts = restarts.saturating_add(1);
                        continue 'list;
                    }
                    other => other?,
                };
                // The first page's version is the snapshot the continue tokens page through.
                version.get_or_insert(page.metadata.resource_version);
                items.extend(page.items);
                match page.metadata.next.filter(|token| !token.is_empty()) {
                    Some(token) => next = Some(token),
                    None => return Ok((items, version.unwrap_or_default())),
                }
            }
        }
    }

    /// Watches the collection from `version`: a stream of changes that ends when the server
    /// closes the watch (after [`WATCH_SECONDS`]) or the connection breaks. An expired version
    /// arrives as a [`Failure`] with `expired`, whether the server answers 410 at once or in
    /// the stream.
    pub(crate) async fn watch<T: DeserializeOwned + Clone + 'static>(
        &self,
        collection: &Collection,
        version: &str,
    ) -> std::result::Result<
        impl Stream<Item = std::result::Result<Change<T>, Failure>> + use<T>,
        Failure,
    > {
        let mut params = WatchParams::default().timeout(WATCH_SECONDS);
        if let Some(labels) = &collection.labels {
            params = params.labels(labels);
        }
        if let Some(fields) = &collection.fields {
            params = params.fields(fields);
        }
        let mut request = kube::core::Request::new(&collection.path)
            .watch(&params, version)
            .map_err(|e| Failure::of(kube::Error::BuildRequest(e)))?;
        request.extensions_mut().insert("watch");
        let events = self
            .client
            .request_events::<T>(request)
            .await
            .map_err(Failure::of)?;
        Ok(events.map(|event| match event {
            Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => Ok(Change::Put(object)),
            Ok(WatchEvent::Deleted(object)) => Ok(Change::Gone(object)),
            Ok(WatchEvent::Bookmark(bookmark)) => {
                Ok(Change::Bookmark(bookmark.metadata.resource_version))
            }
            Ok(WatchEvent::Error(status)) => Err(Failure::of(kube::Error::Api(status))),
            Err(error) => Err(Failure::of(error)),
        }))
    }
}
