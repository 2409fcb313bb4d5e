//! The connection to the Kubernetes API and the few calls the tracker makes.
//!
//! The only module that knows kube's types and errors: everything leaves it as a [`PodView`] or
//! an [`ApiFailure`]. How the client is built from the kubeconfig and the `--kube-*` flags is in
//! [`connect`].

pub(crate) mod connect;
mod failure;
pub(crate) mod reads;
pub(crate) mod recovery;
mod slim;
pub(crate) mod tokens;

pub(crate) use connect::{KubeOverrides, connect};
pub(crate) use failure::ApiFailure;
pub(crate) use failure::error_chain;
use failure::{classify_with_code, request_json};

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, GetParams, ListParams, PatchParams, PostParams};

use crate::core::pod::PodRef;
use crate::core::view::PodView;
use crate::error::Result;
use crate::metrics::Metrics;
use recovery::Kind;
use slim::{SlimList, SlimPod};

/// One page of a pod list.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodPage {
    /// The pods of the page, by name.
    pub pods: Vec<(String, PodView)>,
    /// The continue token of the next page; `None` on the last.
    pub next: Option<String>,
}

/// The pod calls, with a time limit on each.
#[derive(Clone)]
pub struct PodClient {
    client: kube::Client,
    timeout: Option<Duration>,
    metrics: Arc<Metrics>,
    /// What the requests have seen of the server, to tell its warm-up refusals from real ones.
    recovery: Arc<recovery::Recovery>,
}

impl PodClient {
    /// Wraps a connected client; `timeout` bounds every request, `metrics` counts them.
    pub fn new(client: kube::Client, timeout: Option<Duration>, metrics: Arc<Metrics>) -> Self {
        PodClient {
            client,
            timeout,
            metrics,
            recovery: Arc::default(),
        }
    }

    /// The time limit of each request (`--kube-request-timeout`), if set.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The metrics every request is counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the pod: the parts counting depends on (decoded as [`slim::SlimPod`]).
    pub async fn get(&self, pod: &PodRef) -> Result<PodView, ApiFailure> {
        self.get_slim(pod, None).await.map(SlimPod::into_view)
    }

    /// [`PodClient::get`], answered by `end` at the latest (a call's time is running out).
    pub(crate) async fn get_until(
        &self,
        pod: &PodRef,
        end: Option<Instant>,
    ) -> Result<PodView, ApiFailure> {
        self.get_slim(pod, end).await.map(SlimPod::into_view)
    }

    /// Reads the sidecar's own pod: the parts counting depends on, and the service account it
    /// runs as (`None`: the namespace's `default`), which the advice on missing rights names.
    /// Decoded slim like every other read, so that a sidecar never builds a whole `Pod`.
    pub async fn get_own(&self, pod: &PodRef) -> Result<(PodView, Option<String>), ApiFailure> {
        let slim = self.get_slim(pod, None).await?;
        let account = slim.service_account().map(str::to_owned);
        Ok((slim.into_view(), account))
    }

    async fn get_slim(&self, pod: &PodRef, end: Option<Instant>) -> Result<SlimPod, ApiFailure> {
        let call = async {
            let mut request = pods_request(pod)
                .get(&pod.name, &GetParams::default())
                .map_err(kube::Error::BuildRequest)?;
            request.extensions_mut().insert("get");
            request_json::<SlimPod>(&self.client, request).await
        };
        self.limited(Kind::pods("get", pod), end, call).await
    }

    /// Sends a JSON patch (its `test` operations guard the change) and returns the stored pod;
    /// without an answer by `end`, the outcome is unknown.
    pub async fn patch(
        &self,
        pod: &PodRef,
        patch: json_patch::Patch,
        end: Option<Instant>,
    ) -> Result<PodView, ApiFailure> {
        let patch = kube::api::Patch::<()>::Json(patch);
        let call = async {
            let mut request = pods_request(pod)
                .patch(&pod.name, &PatchParams::default(), &patch)
                .map_err(kube::Error::BuildRequest)?;
            request.extensions_mut().insert("patch");
            request_json::<SlimPod>(&self.client, request).await
        };
        self.limited(Kind::pods("patch", pod), end, call)
            .await
            .map(SlimPod::into_view)
    }

    /// One page of the pods of `namespace` (at most `limit`, from `continue_token`); `None`
    /// when the continue token has expired (410: the list must start again).
    pub(crate) async fn list_page(
        &self,
        namespace: &str,
        selector: Option<&str>,
        limit: u32,
        continue_token: Option<&str>,
    ) -> Result<Option<PodPage>, ApiFailure> {
        let mut params = ListParams::default().limit(limit);
        if let Some(selector) = selector {
            params = params.labels(selector);
        }
        if let Some(token) = continue_token {
            params = params.continue_token(token);
        }
        let call = async {
            let mut request = kube::core::Request::new(pods_path(namespace))
                .list(&params)
                .map_err(kube::Error::BuildRequest)?;
            request.extensions_mut().insert("list");
            match request_json::<SlimList>(&self.client, request).await {
                Err(kube::Error::Api(status)) if status.code == 410 => Ok(None),
                other => other.map(Some),
            }
        };
        let kind = Kind {
            verb: "list",
            resource: "pods",
            namespace,
        };
        let listed = self.limited(kind, None, call).await?;
        Ok(listed.map(|list| {
            let (next, pods) = list.into_page();
            PodPage { pods, next }
        }))
    }

    /// Asks the API server whether the tracker may `verb` this pod (a SelfSubjectAccessReview).
    pub async fn may(&self, verb: &str, pod: &PodRef) -> Result<bool, ApiFailure> {
        self.review(verb, &pod.namespace, Some(&pod.name)).await
    }

    /// Asks the API server whether the tracker may `verb` any pod of a namespace.
    pub async fn may_in_namespace(&self, verb: &str, namespace: &str) -> Result<bool, ApiFailure> {
        self.review(verb, namespace, None).await
    }

    async fn review(
        &self,
        verb: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<bool, ApiFailure> {
        let review = pod_access_review(verb, namespace, name);
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = self
            .limited(
                Kind::cluster("create", "selfsubjectaccessreviews"),
                None,
                api.create(&PostParams::default(), &review),
            )
            .await?;
        Ok(answer.status.is_some_and(|status| status.allowed))
    }

    /// Records a Kubernetes Event on the pod (`kubectl describe pod` shows it).
    pub async fn create_event(
        &self,
        pod: &PodRef,
        uid: Option<&str>,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiFailure> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.name)),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                // `kubectl describe pod` lists the events whose object has the pod's uid.
                uid: uid.map(str::to_owned),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some("Normal".to_owned()),
            source: Some(EventSource {
                component: Some("pod-webhook-tracker".to_owned()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let kind = Kind {
            verb: "create",
            resource: "events",
            namespace: &pod.namespace,
        };
        self.limited(kind, None, api.create(&PostParams::default(), &event))
            .await
            .map(drop)
    }

    /// Runs one API request within `--request-timeout` (and by `end`, if given), counts it,
    /// and tells a recovering server's refusals from real ones (see [`recovery`]).
    ///
    /// The request is boxed: a kube request's future is some kilobytes, and inline it would
    /// enlarge every future that awaits it, for as long as that one lives (each connection's
    /// request, each pod's writer), not only while a request is out.
    fn limited<T>(
        &self,
        kind: Kind<'_>,
        end: Option<Instant>,
        call: impl Future<Output = kube::Result<T>>,
    ) -> impl Future<Output = Result<T, ApiFailure>> {
        let call = Box::pin(call);
        self.limited_boxed(kind, end, call)
    }

    async fn limited_boxed<T>(
        &self,
        kind: Kind<'_>,
        end: Option<Instant>,
        call: Pin<Box<impl Future<Output = kube::Result<T>>>>,
    ) -> Result<T, ApiFailure> {
        let started = Instant::now();
        let limit = match (self.timeout, end) {
            (limit, None) => limit,
            (Some(limit), Some(end)) => Some(limit.min(end.saturating_duration_since(started))),
            (None, Some(end)) => Some(end.saturating_duration_since(started)),
        };
        let outcome = match limit {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(outcome) => outcome.map_err(classify_with_code),
                Err(_) => Err((
                    "timeout",
                    ApiFailure::Unknown(format!(
                        "no answer within {}",
                        humantime::format_duration(limit)
                    )),
                )),
            },
            None => call.await.map_err(classify_with_code),
        };
        let now = Instant::now();
        let outcome = match outcome {
            Ok(answer) => {
                self.recovery.allowed(&kind);
                Ok(answer)
            }
            Err((label, ApiFailure::Refused(message))) => {
                if self.recovery.warming_up(&kind, now) {
                    Err((label, ApiFailure::Recovering(message)))
                } else {
                    Err((label, ApiFailure::Refused(message)))
                }
            }
            Err((label, failure)) => {
                match &failure {
                    ApiFailure::NotSent(_)
                    | ApiFailure::Throttled { .. }
                    | ApiFailure::ServerError(_) => self.recovery.failed(now),
                    // The server's own time limit (or a gateway's) is a failure of the server;
                    // the caller's time running out is not.
                    ApiFailure::Unknown(_)
                        if label != "timeout" || end.is_none_or(|end| now < end) =>
                    {
                        self.recovery.failed(now);
                    }
                    _ => {}
                }
                Err((label, failure))
            }
        };
        let label = match &outcome {
            Ok(_) => "ok",
            Err((label, _)) => label,
        };
        self.metrics
            .api_request(kind.verb, label, now.saturating_duration_since(started));
        outcome.map_err(|(_, failure)| {
            if !matches!(failure, ApiFailure::GuardFailed | ApiFailure::NotFound) {
                self.metrics
                    .record_error(format!("{}: {failure}", kind.verb));
            }
            failure
        })
    }
}

/// A SelfSubjectAccessReview asking whether the caller may `verb` pods in `namespace` (one pod
/// when `name` is given).
pub(crate) fn pod_access_review(
    verb: &str,
    namespace: &str,
    name: Option<&str>,
) -> SelfSubjectAccessReview {
    access_review(verb, "pods", namespace, name)
}

/// "May I `verb` the core-group `resource` (named `name`, if given) in `namespace`?"
pub(crate) fn access_review(
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                resource: Some(resource.to_owned()),
                name: name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Where a namespace's pods are.
fn pods_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

fn pods_request(pod: &PodRef) -> kube::core::Request {
    kube::core::Request::new(pods_path(&pod.namespace))
}
