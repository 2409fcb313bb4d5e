//! `busy`'s reads: paged lists and watches of pods and PodDisruptionBudgets, decoded slim
//! ([`super::objects`]), every failure one [`Failure`] (the rest of `busy` knows no kube types).

use std::time::Duration;

use kube::api::{ListParams, WatchParams};
use serde::Deserialize;
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

    /// Watches the collection from `version`: the server's answer, read event by event
    /// ([`Events::next`]) until the server closes it (after [`WATCH_SECONDS`]) or the connection
    /// breaks. An expired version arrives as a [`Failure`] with `expired`, whether the server
    /// answers 410 at once or in the stream.
    pub(crate) async fn watch(
        &self,
        collection: &Collection,
        version: &str,
    ) -> std::result::Result<Events, Failure> {
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
        // A v1.37 server gzips a watch one member per event, and the client's decompression
        // reads only the first member: ask for the stream as it is (as kube's own watches do).
        request.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(Failure::of)?;
        let code = response.status();
        let body = response.into_body();
        if code.is_client_error() || code.is_server_error() {
            use http_body_util::{BodyExt, Limited};
            // A Status is a few hundred bytes; a server's error page is read only this far.
            let bytes = Limited::new(body, MAX_EVENT_BYTES)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let status = serde_json::from_slice::<StatusObject>(&bytes).unwrap_or_default();
            return Err(status.failure(code.as_u16(), &bytes));
        }
        Ok(Events {
            body,
            buffered: Vec::new(),
            searched: 0,
        })
    }
}

/// The longest watch event line read: one object, which etcd keeps under 1.5 MiB. A server
/// that sends more without a line break is not followed until memory runs out.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// A watch's answer: lines of `{"type": ..., "object": ...}`, one event each.
pub(crate) struct Events {
    body: kube::client::Body,
    buffered: Vec<u8>,
    /// How much of `buffered` is known to hold no line break.
    searched: usize,
}

/// The part of an event line that says which kind it is.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default)]
    kind: String,
}

/// An event's object, once its kind is known.
#[derive(Deserialize)]
struct Carried<T> {
    object: T,
}

/// What a `BOOKMARK` or a `Status` object (an `ERROR` event, an error answer) says.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusObject {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    metadata: super::objects::ListMeta,
}

impl StatusObject {
    fn failure(&self, code: u16, raw: &[u8]) -> Failure {
        let code = if self.code == 0 { code } else { self.code };
        Failure {
            refused: matches!(code, 401 | 403),
            expired: code == 410,
            message: match (self.message.is_empty(), self.reason.is_empty()) {
                (false, _) => self.message.clone(),
                (true, false) => format!("{code} {}", self.reason),
                (true, true) => format!("{code} {}", String::from_utf8_lossy(raw).trim()),
            },
        }
    }
}

impl Events {
    /// The next change, or `None` when the server has closed the watch.
    pub(crate) async fn next<T: DeserializeOwned>(
        &mut self,
    ) -> Option<std::result::Result<Change<T>, Failure>> {
        use http_body_util::BodyExt;
        loop {
            let unsearched = self.buffered.get(self.searched..).unwrap_or_default();
            if let Some(at) = unsearched.iter().position(|b| *b == b'\n') {
                let end = self.searched.saturating_add(at);
                self.searched = 0;
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match decode::<T>(&line) {
                    Some(event) => return Some(event),
                    None => continue,
                }
            }
            self.searched = self.buffered.len();
            if self.buffered.len() > MAX_EVENT_BYTES {
                self.buffered = Vec::new();
                self.searched = 0;
                return Some(Err(Failure {
                    refused: false,
                    expired: false,
                    message: format!(
                        "a watch event longer than {} MiB: the watch is given up",
                        MAX_EVENT_BYTES >> 20
                    ),
                }));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffered.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Some(Err(Failure::of(error))),
                None => return None,
            }
        }
    }
}

/// One event line; `None` for a kind `busy` does not know (skipped, as clients do).
fn decode<T: DeserializeOwned>(line: &[u8]) -> Option<std::result::Result<Change<T>, Failure>> {
    let broken = |e: serde_json::Error| {
        Some(Err(Failure {
            refused: false,
            expired: false,
            message: format!("a watch event that cannot be read: {e}"),
        }))
    };
    let head: Head = match serde_json::from_slice(line) {
        Ok(head) => head,
        Err(e) => return broken(e),
    };
    let object = |line| serde_json::from_slice::<Carried<T>>(line).map(|c| c.object);
    let status = |line| serde_json::from_slice::<Carried<StatusObject>>(line).map(|c| c.object);
    Some(match head.kind.as_str() {
        "ADDED" | "MODIFIED" => match object(line) {
            Ok(object) => Ok(Change::Put(object)),
            Err(e) => return broken(e),
        },
        "DELETED" => match object(line) {
            Ok(object) => Ok(Change::Gone(object)),
            Err(e) => return broken(e),
        },
        "BOOKMARK" => match status(line) {
            Ok(bookmark) => Ok(Change::Bookmark(bookmark.metadata.resource_version)),
            Err(e) => return broken(e),
        },
        "ERROR" => match status(line) {
            Ok(status) => Err(status.failure(500, line)),
            Err(e) => return broken(e),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::busy::objects::PodItem;

    fn event(line: &str) -> Option<std::result::Result<Change<PodItem>, Failure>> {
        decode::<PodItem>(line.as_bytes())
    }

    #[test]
    fn watch_events_are_read_by_their_type() {
        let added =
            event(r#"{"type":"ADDED","object":{"metadata":{"name":"p","resourceVersion":"7"}}}"#);
        assert!(matches!(added, Some(Ok(Change::Put(pod))) if pod.metadata.name == "p"));
        let gone = event(r#"{"type":"DELETED","object":{"metadata":{"name":"p"}}}"#);
        assert!(matches!(gone, Some(Ok(Change::Gone(_)))));
        let bookmark = event(
            r#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"42"}}}"#,
        );
        assert!(matches!(bookmark, Some(Ok(Change::Bookmark(version))) if version == "42"));
        assert!(event(r#"{"type":"SOMETHING-NEW","object":{}}"#).is_none());
    }

    #[test]
    fn an_error_event_is_a_failure_and_410_says_list_again() {
        let expired = event(
            r#"{"type":"ERROR","object":{"kind":"Status","status":"Failure","message":"too old resource version: 1 (5)","reason":"Expired","code":410}}"#,
        );
        let Some(Err(failure)) = expired else {
            panic!("a failure: {expired:?}");
        };
        assert!(failure.expired && !failure.refused);
        assert_eq!(failure.message, "too old resource version: 1 (5)");
        let refused = StatusObject::default().failure(403, b"forbidden");
        assert!(refused.refused);
        assert_eq!(refused.message, "403 forbidden");
    }

    fn events_of(bytes: Vec<u8>) -> Events {
        Events {
            body: kube::client::Body::from(bytes),
            buffered: Vec::new(),
            searched: 0,
        }
    }

    #[tokio::test]
    async fn a_watch_answer_is_read_line_by_line_to_its_end() {
        let mut events = events_of(
            concat!(
                r#"{"type":"ADDED","object":{"metadata":{"name":"a"}}}"#,
                "\n\n",
                r#"{"type":"DELETED","object":{"metadata":{"name":"b"}}}"#,
                "\n",
            )
            .as_bytes()
            .to_vec(),
        );
        let first = events.next::<PodItem>().await;
        assert!(matches!(first, Some(Ok(Change::Put(pod))) if pod.metadata.name == "a"));
        let second = events.next::<PodItem>().await;
        assert!(matches!(second, Some(Ok(Change::Gone(pod))) if pod.metadata.name == "b"));
        assert!(events.next::<PodItem>().await.is_none());
    }

    #[tokio::test]
    async fn an_event_line_past_the_limit_is_a_failure_not_a_growing_buffer() {
        let mut events = events_of(vec![b' '; MAX_EVENT_BYTES + 2]);
        let Some(Err(failure)) = events.next::<PodItem>().await else {
            panic!("a failure");
        };
        assert!(
            failure
                .message
                .starts_with("a watch event longer than 16 MiB")
        );
        assert!(events.buffered.capacity() < MAX_EVENT_BYTES);
    }

    #[test]
    fn a_line_that_is_not_an_event_is_a_failure_not_a_panic() {
        for line in [
            "not json",
            r#"{"type":"ADDED","object":{"metadata":"oops"}}"#,
        ] {
            let Some(Err(failure)) = event(line) else {
                panic!("a failure for {line}");
            };
            assert!(
                failure
                    .message
                    .starts_with("a watch event that cannot be read")
            );
        }
    }
}
