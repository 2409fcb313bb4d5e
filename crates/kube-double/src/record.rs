//! What happened to each request: counters by verb and outcome, and a log of recent requests.

use std::collections::{BTreeMap, VecDeque};

/// The kind of a request, as faults and counters see it: the RBAC verb, except that an
/// eviction (a `create` of `pods/eviction`) is its own kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// GET of one object (and of `/version`, `/healthz`).
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true` (pods and disruption budgets stream their changes;
    /// other collections answer 405).
    Watch,
    /// POST of a new object (pods, events, disruption budgets, access reviews).
    Create,
    /// PUT of an object.
    Update,
    /// PATCH of an object.
    Patch,
    /// DELETE of an object.
    Delete,
    /// POST to `pods/{name}/eviction`.
    Evict,
}

impl Verb {
    /// The RBAC verb (`get`, `list`, ..., `create` for an eviction).
    pub fn rbac(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create | Verb::Evict => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    /// Whether the request changes objects (and so gets the write latency).
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Answered with this HTTP status code.
    Status(u16),
    /// The connection was closed without an answer (a reset, apply-then-drop, or a restart:
    /// the write that took its cut and the requests in flight).
    Dropped,
    /// Never answered (a hang fault).
    Hung,
    /// Answered with this HTTP status code (401, 403 or 429) by a restarted server that was
    /// still warming up (see [`crate::Restart`]); nothing was applied.
    WarmingUp(u16),
}

/// One request as the double saw it. It is logged when it arrives (without an outcome) and
/// completed when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The request's kind.
    pub verb: Verb,
    /// The user the request was authorized as: the impersonated user when impersonation was
    /// allowed, otherwise the owner of the credentials; `None` if they were not known (or
    /// not yet checked).
    pub user: Option<String>,
    /// The owner of the credentials (token, password or client certificate), if known.
    pub authenticated_user: Option<String>,
    /// `Impersonate-User`, as sent.
    pub impersonated_user: Option<String>,
    /// `Impersonate-Group` headers, as sent.
    pub impersonated_groups: Vec<String>,
    /// `Impersonate-Uid`, as sent.
    pub impersonated_uid: Option<String>,
    /// `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// The status code of the answer; `None` while in flight and when there was no answer.
    pub status: Option<u16>,
    /// How it ended; `None` while in flight.
    pub outcome: Option<Outcome>,
}

/// How many requests the log keeps.
const LOG_CAPACITY: usize = 10_000;

/// Counters and the log.
#[derive(Debug, Default)]
pub(crate) struct Records {
    counts: BTreeMap<(Verb, Outcome), u64>,
    /// Requests by arrival number, oldest first.
    log: VecDeque<(u64, RecordedRequest)>,
    next: u64,
}

impl Records {
    /// Logs a request that has just arrived; returns its number for [`Records::finish`].
    pub(crate) fn begin(&mut self, mut request: RecordedRequest) -> u64 {
        request.outcome = None;
        request.status = None;
        let number = self.next;
        self.next += 1;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back((number, request));
        number
    }

    /// Completes a request: counts its outcome and updates its log entry (if still kept).
    pub(crate) fn finish(
        &mut self,
        number: u64,
        verb: Verb,
        outcome: Outcome,
        complete: impl FnOnce(&mut RecordedRequest),
    ) {
        *self.counts.entry((verb, outcome)).or_default() += 1;
        if let Ok(index) = self.log.binary_search_by_key(&number, |(n, _)| *n) {
            let request = &mut self.log[index].1;
            complete(request);
            request.outcome = Some(outcome);
            request.status = match outcome {
                Outcome::Status(code) | Outcome::WarmingUp(code) => Some(code),
                _ => None,
            };
        }
    }

    pub(crate) fn count(&self, verb: Verb, outcome: Outcome) -> u64 {
        self.counts.get(&(verb, outcome)).copied().unwrap_or(0)
    }

    pub(crate) fn counts(&self) -> BTreeMap<(Verb, Outcome), u64> {
        self.counts.clone()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.log
            .iter()
            .map(|(_, request)| request.clone())
            .collect()
    }

    /// Whether a logged request satisfies `seen`.
    pub(crate) fn any(&self, seen: impl Fn(&RecordedRequest) -> bool) -> bool {
        self.log.iter().any(|(_, request)| seen(request))
    }

    pub(crate) fn reset(&mut self) {
        self.counts.clear();
        self.log.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: Verb, outcome: Outcome) -> RecordedRequest {
        RecordedRequest {
            method: "PATCH".into(),
            path: "/p".into(),
            verb,
            user: None,
            authenticated_user: None,
            impersonated_user: None,
            impersonated_groups: Vec::new(),
            impersonated_uid: None,
            content_type: None,
            status: None,
            outcome: Some(outcome),
        }
    }

    fn record(records: &mut Records, verb: Verb, outcome: Outcome) {
        let number = records.begin(request(verb, Outcome::Hung));
        records.finish(number, verb, outcome, |_| ());
    }

    #[test]
    fn requests_are_counted_by_verb_and_outcome() {
        let mut records = Records::default();
        record(&mut records, Verb::Patch, Outcome::Status(200));
        record(&mut records, Verb::Patch, Outcome::Status(200));
        record(&mut records, Verb::Patch, Outcome::Dropped);
        assert_eq!(records.count(Verb::Patch, Outcome::Status(200)), 2);
        assert_eq!(records.count(Verb::Patch, Outcome::Dropped), 1);
        assert_eq!(records.count(Verb::Get, Outcome::Status(200)), 0);
        assert_eq!(records.requests().len(), 3);
        records.reset();
        assert!(records.counts().is_empty() && records.requests().is_empty());
    }

    #[test]
    fn a_request_is_logged_in_flight_and_completed_when_it_ends() {
        let mut records = Records::default();
        let number = records.begin(request(Verb::Patch, Outcome::Status(1)));
        let logged = &records.requests()[0];
        assert_eq!((logged.outcome, logged.status), (None, None));
        assert!(
            records.counts().is_empty(),
            "in-flight requests are not counted"
        );
        records.finish(number, Verb::Patch, Outcome::Status(200), |r| {
            r.user = Some("u".into())
        });
        let logged = &records.requests()[0];
        assert_eq!(
            (logged.outcome, logged.status, logged.user.as_deref()),
            (Some(Outcome::Status(200)), Some(200), Some("u"))
        );
        assert_eq!(records.count(Verb::Patch, Outcome::Status(200)), 1);
    }

    #[test]
    fn the_log_keeps_only_recent_requests() {
        let mut records = Records::default();
        for _ in 0..LOG_CAPACITY + 5 {
            record(&mut records, Verb::Get, Outcome::Hung);
        }
        assert_eq!(records.requests().len(), LOG_CAPACITY);
        assert_eq!(
            records.count(Verb::Get, Outcome::Hung),
            (LOG_CAPACITY + 5) as u64
        );
    }

    #[test]
    fn evictions_are_creates_for_rbac_and_writes() {
        assert_eq!(Verb::Evict.rbac(), "create");
        assert!(Verb::Evict.is_write() && Verb::Patch.is_write() && !Verb::List.is_write());
    }
}
