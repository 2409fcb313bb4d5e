//! Why an API call failed, sorted into what the tracker does next ([`ApiFailure`]): the one
//! place that reads kube's errors and the API server's answers (status code, `Status` body,
//! `Retry-After`).

use std::time::Duration;

/// Why an API call failed, in the terms the tracker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// 404: the pod does not exist.
    NotFound,
    /// 401 or 403: the tracker's credentials or rights are not enough (the server's message).
    Refused(String),
    /// 401 or 403 soon after the server failed, for a kind of request it allowed before: a
    /// restarted server whose caches are still syncing (see [`super::recovery`]). Nothing was applied;
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

/// Sends a request and decodes its JSON answer, as `kube::Client::request` does, but keeps the
/// `Retry-After` header of an error answer: a real server's 429 (API Priority and Fairness) is
/// plain text that says when to try again only there.
pub(super) async fn request_json<T: serde::de::DeserializeOwned>(
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
pub(super) fn classify_with_code(error: kube::Error) -> (&'static str, ApiFailure) {
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
