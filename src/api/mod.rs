//! The connection to the Kubernetes API and the few calls the tracker makes.
//!
//! The only module that knows kube's types and errors: everything leaves it as a [`PodView`] or
//! an [`ApiFailure`]. How the client is built from the kubeconfig and the `--kube-*` flags is in
//! [`connect`].

pub(crate) mod connect;
pub(crate) mod reads;
pub(crate) mod recovery;
mod slim;
pub(crate) mod tokens;

pub(crate) use connect::{KubeOverrides, connect};

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

/// Why an API call failed, in the terms the tracker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// 404: the pod does not exist.
    NotFound,
    /// 401 or 403: the tracker's credentials or rights are not enough (the server's message).
    Refused(String),
    /// 401 or 403 soon after the server failed, for a kind of request it allowed before: a
    /// restarted server whose caches are still syncing (see [`recovery`]). Nothing was applied;
    /// worth retrying.
    Recovering(String),
    /// 409, or a 422 from a failed JSON-patch `test`: the pod changed since it was read.
    GuardFailed,
    /// Another 4xx: the server will not take this request as it is (the server's message).
    Rejected(String),
    /// The request certainly did not reach the server (connection refused): nothing was applied.
    NotSent(String),
    /// 429: the server is shedding load (API Priority and Fairness); nothing was applied. Try
    /// again after `retry_after` (the server's `Retry-After`), if it said.
    Throttled {
        /// The server's words.
        problem: String,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
    },
    /// 500, 503 or another 5xx from the server itself: the request has ended; whether a write
    /// was applied first shows on the next read, and it cannot be applied later.
    ServerError(String),
    /// A timeout, a broken connection, or a 502/504 (a gateway's answer, or the server's own
    /// timeout while storage may still commit): a write may have been applied, or may still be.
    Unknown(String),
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::NotFound => f.write_str("not found"),
            ApiFailure::Refused(message) => write!(f, "refused: {message}"),
            ApiFailure::Recovering(message) => {
                write!(f, "refused while the API server recovers: {message}")
            }
            ApiFailure::GuardFailed => f.write_str("the object changed (a guard failed)"),
            ApiFailure::Rejected(message) => write!(f, "rejected: {message}"),
            ApiFailure::NotSent(problem) => write!(f, "not sent: {problem}"),
            ApiFailure::Throttled { problem, .. } => write!(f, "throttled: {problem}"),
            ApiFailure::ServerError(problem) => write!(f, "server error: {problem}"),
            ApiFailure::Unknown(problem) => write!(f, "no answer: {problem}"),
        }
    }
}

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

/// Sends a request and decodes its JSON answer, as `kube::Client::request` does, but keeps the
/// `Retry-After` header of an error answer: a real server's 429 (API Priority and Fairness) is
/// plain text that says when to try again only there.
async fn request_json<T: serde::de::DeserializeOwned>(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> kube::Result<T> {
    use http_body_util::BodyExt;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let code = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u32>().ok());
    let body = response.into_body().collect().await?.to_bytes();
    if code.is_client_error() || code.is_server_error() {
        let mut status = serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&body);
            kube::core::Status::failure(text.trim(), "")
        });
        status.code = code.as_u16();
        if let Some(seconds) = retry_after {
            let details =
                status
                    .details
                    .get_or_insert_with(|| kube::core::response::StatusDetails {
                        name: String::new(),
                        group: String::new(),
                        kind: String::new(),
                        uid: String::new(),
                        causes: Vec::new(),
                        retry_after_seconds: 0,
                    });
            if details.retry_after_seconds == 0 {
                details.retry_after_seconds = seconds;
            }
        }
        return Err(kube::Error::Api(status.boxed()));
    }
    serde_json::from_slice(&body).map_err(kube::Error::SerdeError)
}

/// [`classify`], with the outcome label the metrics use (the status code, or `error`).
fn classify_with_code(error: kube::Error) -> (&'static str, ApiFailure) {
    let label = match &error {
        kube::Error::Api(status) => match status.code {
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            409 => "409",
            422 => "422",
            429 => "429",
            500 => "500",
            503 => "503",
            504 => "504",
            _ => "other",
        },
        _ => "error",
    };
    (label, classify(error))
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

/// Sorts a kube error into what the tracker does next.
pub(crate) fn classify(error: kube::Error) -> ApiFailure {
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let has_causes = status
                .details
                .as_ref()
                .is_some_and(|d| !d.causes.is_empty());
            match status.code {
                404 => ApiFailure::NotFound,
                401 | 403 => ApiFailure::Refused(message),
                409 => ApiFailure::GuardFailed,
                // A failed `test` answers 422 without causes; a validation error lists them.
                422 if !has_causes => ApiFailure::GuardFailed,
                429 => ApiFailure::Throttled {
                    problem: format!("429 {message}"),
                    retry_after: status
                        .details
                        .as_ref()
                        .map(|details| details.retry_after_seconds)
                        .filter(|seconds| *seconds > 0)
                        .map(|seconds| Duration::from_secs(u64::from(seconds))),
                },
                code if (400..500).contains(&code) => ApiFailure::Rejected(message),
                // A gateway's 502/504 may come after it passed the request on, and the server's
                // own 504 (its time limit) while storage may still commit the write.
                502 | 504 => ApiFailure::Unknown(format!("{} {message}", status.code)),
                code => ApiFailure::ServerError(format!("{code} {message}")),
            }
        }
        other if refused_connection(&other) => ApiFailure::NotSent(error_chain(&other)),
        other => ApiFailure::Unknown(error_chain(&other)),
    }
}

/// True when the connection was refused: the request never left, so nothing was applied.
fn refused_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// An error and its sources in one line (`outer: inner: root cause`), without repeats.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, causes: bool) -> kube::Error {
        let details = causes.then(|| kube::core::response::StatusDetails {
            causes: vec![kube::core::response::StatusCause {
                reason: "FieldValueInvalid".into(),
                message: "bad".into(),
                field: "metadata.labels".into(),
            }],
            name: "worker-a".into(),
            group: String::new(),
            kind: "Pod".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        let mut status = kube::core::Status::failure(&format!("message {code}"), reason);
        status.code = code;
        status.details = details;
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn api_answers_are_sorted_by_what_the_tracker_does_next() {
        assert_eq!(
            classify(status(404, "NotFound", false)),
            ApiFailure::NotFound
        );
        assert_eq!(
            classify(status(403, "Forbidden", false)),
            ApiFailure::Refused("message 403".into())
        );
        assert_eq!(
            classify(status(401, "Unauthorized", false)),
            ApiFailure::Refused("message 401".into())
        );
        assert_eq!(
            classify(status(409, "Conflict", false)),
            ApiFailure::GuardFailed
        );
        assert_eq!(
            classify(status(422, "Invalid", false)),
            ApiFailure::GuardFailed
        );
        assert_eq!(
            classify(status(422, "Invalid", true)),
            ApiFailure::Rejected("message 422".into())
        );
        assert_eq!(
            classify(status(400, "BadRequest", false)),
            ApiFailure::Rejected("message 400".into())
        );
        assert_eq!(
            classify(status(429, "TooManyRequests", false)),
            ApiFailure::Throttled {
                problem: "429 message 429".into(),
                retry_after: None
            }
        );
        let mut throttled = kube::core::Status::failure("slow down", "TooManyRequests");
        throttled.code = 429;
        throttled.details = Some(kube::core::response::StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 3,
        });
        assert_eq!(
            classify(kube::Error::Api(throttled.boxed())),
            ApiFailure::Throttled {
                problem: "429 slow down".into(),
                retry_after: Some(Duration::from_secs(3))
            },
            "a 429 carries the server's Retry-After"
        );
        assert!(
            matches!(
                classify(status(504, "Timeout", false)),
                ApiFailure::Unknown(_)
            ),
            "the server's own time limit: storage may still commit"
        );
        assert!(
            matches!(
                classify(status(502, "BadGateway", false)),
                ApiFailure::Unknown(_)
            ),
            "a gateway may have passed the request on"
        );
        assert!(matches!(
            classify(status(500, "InternalError", false)),
            ApiFailure::ServerError(_)
        ));
        assert!(matches!(
            classify(status(503, "ServiceUnavailable", false)),
            ApiFailure::ServerError(_)
        ));
    }
}
