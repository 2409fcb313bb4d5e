//! Watches of pods and disruption budgets (`GET …?watch=true`): a chunked stream of
//! `{"type":"ADDED"|"MODIFIED"|"DELETED","object":…}` lines, one per change, as kube-apiserver
//! streams them.
//!
//! Where the watch starts follows `resourceVersion`: unset or `0`, every matching object first
//! arrives as `ADDED`; a version the store still remembers (see [`crate::store`]'s history),
//! the changes since then; an older one, an `ERROR` event with a 410 `Expired` `Status` and
//! the end of the stream, as from a server whose etcd compacted that history. An object that
//! stops matching the selectors (a label removed) arrives as `DELETED`. Budgets carry the
//! status a disruption controller would give them, so a pod becoming ready changes its
//! budgets too. The stream ends after `timeoutSeconds`, or when the client goes away.
//!
//! Unlike a real server, changes the stream has not sent yet when more arrive are sent as one
//! (the object as it is now), and no `BOOKMARK` events are sent (servers may leave them out).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use kube_labels::Selector;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::objects::{Options, field_value};
use crate::pods::POD_FIELDS;
use crate::policy::serve_pdb_among;
use crate::routes::{FieldSelector, PolicyVersion, Query, Route};
use crate::status::ApiError;
use crate::store::{Objects, Store, Watched, string_map};

/// Where a watch reads the store, a moment at a time (the server's shared state, behind its
/// lock), so that this module needs nothing of the server.
pub(crate) trait StoreAccess: Send + Sync + 'static {
    /// Runs `read` on the store as it is now.
    fn read<R>(&self, read: impl FnOnce(&Store) -> R) -> R;
}

/// A watch request, checked.
#[derive(Debug)]
pub(crate) struct Watch {
    collection: Watched,
    /// The API version budgets are served in.
    version: PolicyVersion,
    namespace: Option<String>,
    labels: Selector,
    fields: FieldSelector,
    /// `None`: from the current state, every object `ADDED`.
    from: Option<u64>,
    timeout: Option<Duration>,
}

impl Watch {
    /// Checks a watch of `route` as a list of it would be checked (selectors, fields).
    pub(crate) fn parse(route: &Route, query: &Query) -> Result<Watch, ApiError> {
        const PDB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
        let (collection, version, namespace, supported) = match route {
            Route::Pods { namespace } => (
                Watched::Pods,
                PolicyVersion::V1,
                namespace.clone(),
                POD_FIELDS,
            ),
            Route::Pdbs { version, namespace } => {
                (Watched::Pdbs, *version, namespace.clone(), PDB_FIELDS)
            }
            _ => return Err(ApiError::method_not_allowed()),
        };
        let labels = Selector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?;
        fields.check(supported)?;
        let from = match query.get("resourceVersion") {
            None | Some("" | "0") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?),
        };
        let timeout = match query.get("timeoutSeconds") {
            None | Some("") => None,
            Some(text) => Some(Duration::from_secs(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds: {text:?}"))
            })?)),
        };
        Ok(Watch {
            collection,
            version,
            namespace,
            labels,
            fields,
            from,
            timeout,
        })
    }

    /// The matching objects of `objects`, as served (budgets with their status among `pods`).
    fn view(&self, objects: &Objects, pods: &Objects, options: Options) -> Objects {
        objects
            .iter()
            .filter(|((namespace, _), _)| self.namespace.as_ref().is_none_or(|ns| ns == namespace))
            .filter(|(_, object)| {
                self.labels.is_empty() || self.labels.matches(&string_map(object, "labels"))
            })
            .filter(|(_, object)| {
                self.fields.terms.is_empty() || self.fields.matches(|f| field_value(object, f))
            })
            .map(|(key, object)| {
                let served = match self.collection {
                    Watched::Pods => object.clone(),
                    Watched::Pdbs => serve_pdb_among(pods, options, self.version, object),
                };
                (key.clone(), served)
            })
            .collect()
    }
}

/// The body of a watch's answer: the lines its task sends, for as long as it sends them.
#[derive(Debug)]
pub(crate) struct WatchBody {
    lines: mpsc::Receiver<Bytes>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.lines
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

/// Starts the watch: its events are written to the returned body as they happen.
pub(crate) fn start(shared: Arc<impl StoreAccess>, watch: Watch, options: Options) -> WatchBody {
    let (sender, lines) = mpsc::channel(64);
    tokio::spawn(stream(shared, watch, options, sender));
    WatchBody { lines }
}

fn event(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

async fn stream(
    shared: Arc<impl StoreAccess>,
    watch: Watch,
    options: Options,
    sender: mpsc::Sender<Bytes>,
) {
    let (mut changes, start) = shared.read(|store| {
        let changes = store.subscribe();
        let current = store.revision_number();
        let start = match watch.from {
            None => Ok(BTreeMap::new()),
            Some(from) if from >= current => {
                Ok(watch.view(store.objects(watch.collection), &store.pods, options))
            }
            Some(from) => match (
                store.objects_at(watch.collection, from),
                store.objects_at(Watched::Pods, from),
            ) {
                (Some(objects), Some(pods)) => Ok(watch.view(&objects, &pods, options)),
                _ => Err(format!("too old resource version: {from} ({current})")),
            },
        };
        (changes, start)
    });
    let mut sent = match start {
        Ok(view) => view,
        Err(message) => {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "message": message, "reason": "Expired",
                                "code": 410});
            let _ = sender.send(event("ERROR", &status)).await;
            return;
        }
    };
    let ends = watch
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    loop {
        let now =
            shared.read(|store| watch.view(store.objects(watch.collection), &store.pods, options));
        let mut lines = Vec::new();
        for (key, object) in &now {
            match sent.get(key) {
                None => lines.push(event("ADDED", object)),
                Some(before) if before != object => lines.push(event("MODIFIED", object)),
                Some(_) => {}
            }
        }
        for (key, object) in &sent {
            if !now.contains_key(key) {
                lines.push(event("DELETED", object));
            }
        }
        for line in lines {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        sent = now;
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = async {
                match ends {
                    Some(ends) => tokio::time::sleep_until(ends).await,
                    None => std::future::pending().await,
                }
            } => return,
            () = sender.closed() => return,
        }
    }
}
