//! The rights checks: the tracker may get and patch pods (and create events with `--events`),
//! and no more than that.

use super::*;
use crate::doctor::facts::*;

/// The verbs on pods the tracker needs.
pub(crate) const NEEDED: [&str; 2] = ["get", "patch"];
/// Verbs on pods it never uses (`*`: every verb).
pub(crate) const NOT_NEEDED: [&str; 7] = [
    "list",
    "watch",
    "create",
    "update",
    "delete",
    "deletecollection",
    "*",
];

/// With `--events`, the tracker records busy/idle events on pods; without the right it still
/// counts (it turns events off with one warning), so a missing right is a warning.
pub(crate) fn events(facts: &Facts) -> Option<Check> {
    let ns = &facts.namespace;
    let check = match facts.create_events.as_ref()? {
        Ok(true) => check(
            EVENTS,
            Status::Ok,
            format!("may create events in namespace {ns}, as --events needs"),
        ),
        Ok(false) => check(
            EVENTS,
            Status::Warning,
            format!(
                "may not create events in namespace {ns}: with --events the tracker counts but records \
                 no busy/idle events (grant verbs [create] on events to its service account)"
            ),
        ),
        Err(why) => check(
            EVENTS,
            Status::Warning,
            format!(
                "not checked: cannot ask the API server whether this identity may create events: {why}"
            ),
        ),
    };
    Some(check)
}

/// With `--authenticate=serviceaccount`, every call's token is reviewed: without the right to
/// create TokenReviews, no call can be counted.
pub(crate) fn token_reviews(facts: &Facts) -> Option<Check> {
    let check = match facts.create_token_reviews.as_ref()? {
        Ok(true) => check(
            TOKEN_REVIEWS,
            Status::Ok,
            "may create tokenreviews, as --authenticate=serviceaccount needs".to_owned(),
        ),
        Ok(false) => check(
            TOKEN_REVIEWS,
            Status::Problem,
            "may not create tokenreviews.authentication.k8s.io: with --authenticate=serviceaccount every call \
             would answer 503 (bind the ClusterRole system:auth-delegator, or one with create on tokenreviews)"
                .to_owned(),
        ),
        Err(why) => check(
            TOKEN_REVIEWS,
            Status::Warning,
            format!("not checked: cannot ask the API server whether this identity may create tokenreviews: {why}"),
        ),
    };
    Some(check)
}

pub(crate) fn rights(facts: &Facts) -> [Check; 2] {
    let ns = &facts.namespace;
    let access = match &facts.access {
        Ok(access) => access,
        Err(why) => {
            let message = format!("cannot ask the API server what this identity may do: {why}");
            return [
                check(RIGHTS, Status::Problem, message.clone()),
                check(
                    LEAST_PRIVILEGE,
                    Status::Warning,
                    format!("not checked: {message}"),
                ),
            ];
        }
    };
    let allowed = |verb: &str| access.get(verb).copied().unwrap_or(false);
    let missing: Vec<&str> = NEEDED.into_iter().filter(|v| !allowed(v)).collect();
    let rights = if missing.is_empty() {
        check(
            RIGHTS,
            Status::Ok,
            format!("may get and patch pods in namespace {ns}, as the tracker needs"),
        )
    } else {
        check(
            RIGHTS,
            Status::Problem,
            format!(
                "may not {} pods in namespace {ns}: the tracker needs get and patch on pods (a Role with \
                 verbs [get, patch] on pods, bound to its service account); run doctor as the tracker \
                 (its credentials, or --kube-as=system:serviceaccount:{ns}:ACCOUNT)",
                missing.join(" or ")
            ),
        )
    };
    let extra: Vec<&str> = if allowed("*") {
        vec!["*"]
    } else {
        NOT_NEEDED.into_iter().filter(|v| allowed(v)).collect()
    };
    let least = if extra.is_empty() {
        check(
            LEAST_PRIVILEGE,
            Status::Ok,
            "no rights on pods beyond get and patch".to_owned(),
        )
    } else {
        let what = if extra == ["*"] {
            "do anything (*) with".to_owned()
        } else {
            extra.join(", ")
        };
        check(
            LEAST_PRIVILEGE,
            Status::Warning,
            format!(
                "may also {what} pods in namespace {ns}: the tracker needs only get and patch, and whoever \
                 holds its token could do the rest; if this is not the tracker's identity, run doctor as it \
                 (--kube-as=system:serviceaccount:{ns}:ACCOUNT)"
            ),
        )
    };
    [rights, least]
}

/// The trackers the injector adds act as their pods' service accounts, which need get and
/// patch on pods too.
pub(crate) fn injected_accounts(facts: &Facts) -> Option<Check> {
    if facts.injected.is_empty() {
        return None;
    }
    let ns = &facts.namespace;
    let mut findings = Vec::new();
    for account in &facts.injected {
        let pods = account.pods.join(", ");
        let name = &account.name;
        findings.push(match &account.missing {
            Ok(missing) if missing.is_empty() => (
                Status::Ok,
                format!("service account {name} of the opted-in pods ({pods}) may get and patch pods, as their injected trackers need"),
            ),
            Ok(missing) => (
                Status::Problem,
                format!(
                    "service account {name} of the opted-in pods ({pods}) may not {} pods: their injected trackers \
                     will not become ready; bind the tracker Role (manifests/sidecar/rbac) to system:serviceaccount:{ns}:{name}",
                    missing.join(" or ")
                ),
            ),
            Err(why) => (
                Status::Warning,
                format!("not checked: cannot ask what service account {name} may do (doctor needs create on subjectaccessreviews): {why}"),
            ),
        });
    }
    Some(worst(INJECTED, findings))
}
