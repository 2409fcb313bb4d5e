//! Who may count which pod when callers prove who they are (`serve --authenticate=serviceaccount`):
//! the bearer token read from the request, the identity the API server's TokenReview found, and
//! the decision. Pure: the review itself is in [`crate::api`].
//!
//! A token bound to a pod may count that pod only (named by the token, in its account's
//! namespace; its uid is checked when counting, since a re-created pod is another pod). An
//! identity in `--allowed-callers` (a user such as `system:serviceaccount:ci:reporter`, or a
//! group) may count any pod the other flags allow. Anything else is refused.

/// The longest bearer token accepted (a service-account JWT is about 1 KiB).
pub const MAX_TOKEN: usize = 8 * 1024;

/// The user extras a pod-bound service-account token carries.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// See [`POD_NAME_EXTRA`].
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Why a request is not authenticated (401): each a sentence that never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub String);

/// Why an authenticated caller may not do what it asks (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden(pub String);

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &[Vec<u8>]) -> Result<&str, Unauthenticated> {
    let refuse = |why: &str| Err(Unauthenticated(why.to_owned()));
    let header = match headers {
        [] => {
            return refuse(
                "no Authorization header: send Authorization: Bearer TOKEN, a service-account token for this tracker's audience",
            );
        }
        [one] => one,
        _ => return refuse("more than one Authorization header"),
    };
    let Ok(text) = std::str::from_utf8(header) else {
        return refuse("the Authorization header is not text");
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return refuse("the Authorization header is not \"Bearer TOKEN\"");
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return refuse("the Authorization scheme is not Bearer");
    }
    if token.is_empty() || token.len() > MAX_TOKEN {
        return refuse(&format!(
            "the bearer token is empty or longer than {MAX_TOKEN} bytes"
        ));
    }
    // RFC 6750's b64token: what a JWT is made of.
    let body = token.trim_end_matches('=');
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        || body.is_empty()
    {
        return refuse("the bearer token holds characters a token cannot have");
    }
    // A service-account token is a JWT: three parts, a JSON header. Anything else is refused
    // here, without asking the API server, so that random strings cost no TokenReview.
    if !is_jwt_shaped(token) {
        return refuse(
            "the bearer token is not a JWT (a service-account token has three base64url parts)",
        );
    }
    Ok(token)
}

fn is_jwt_shaped(token: &str) -> bool {
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return false;
    };
    if payload.is_empty() || signature.is_empty() {
        return false;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header.is_object())
}

/// When a JWT says it expires (its `exp` claim, Unix seconds), read without checking the
/// signature: only to cache a review no longer than the token lives. `None` if it says nothing.
pub fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// Who the API server says a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user.username`, e.g. `system:serviceaccount:jobs:worker`.
    pub username: String,
    /// `user.groups`.
    pub groups: Vec<String>,
    /// The pod the token is bound to, if any: its name and uid.
    pub pod: Option<(String, String)>,
}

impl Identity {
    /// The namespace of a service account's username.
    pub fn service_account_namespace(&self) -> Option<&str> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some(namespace)
    }
}

/// `--allowed-callers`: users or groups that may count any pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedCallers(Vec<String>);

/// The longest entry of `--allowed-callers`.
const MAX_CALLER: usize = 512;

impl AllowedCallers {
    /// Checks each entry: a service account `system:serviceaccount:NAMESPACE:NAME` with DNS
    /// names, or another user or group name without spaces.
    pub fn parse(entries: &[String]) -> Result<AllowedCallers, String> {
        let mut callers = Vec::new();
        for entry in entries.iter().flat_map(|e| e.split(',')).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            if entry.len() > MAX_CALLER
                || entry.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "{entry:?} is not a user or group name (no spaces, at most {MAX_CALLER} bytes)"
                ));
            }
            if let Some(rest) = entry.strip_prefix("system:serviceaccount:") {
                let valid = rest.split_once(':').is_some_and(|(namespace, name)| {
                    kube_labels::validate_dns1123_label(namespace).is_ok()
                        && kube_labels::validate_dns1123_subdomain(name).is_ok()
                });
                if !valid {
                    return Err(format!(
                        "{entry:?} is not a service account: expected system:serviceaccount:NAMESPACE:NAME"
                    ));
                }
            }
            callers.push(entry.to_owned());
        }
        Ok(AllowedCallers(callers))
    }

    /// Whether the identity is one of them, by username or by group.
    pub fn admits(&self, identity: &Identity) -> bool {
        self.0
            .iter()
            .any(|entry| *entry == identity.username || identity.groups.contains(entry))
    }

    /// The entries, for the log.
    pub fn entries(&self) -> &[String] {
        &self.0
    }
}

/// What `--authenticate=serviceaccount` checks tokens against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `--token-audience`: tokens must be issued for it.
    pub audience: String,
    /// `--allowed-callers`.
    pub allowed: AllowedCallers,
}

/// What an authenticated caller may count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Any pod the other flags allow: the call's own `pod_name` and `namespace` stand.
    AnyPod {
        /// `pod_name`, as asked.
        pod_name: Option<String>,
        /// `namespace`, as asked.
        namespace: Option<String>,
    },
    /// Its own pod only: this name in this namespace, with this uid.
    OwnPod {
        /// The pod's name.
        name: String,
        /// Its namespace (the service account's).
        namespace: String,
        /// Its uid: a pod of the same name with another uid is another pod.
        uid: String,
    },
}

/// What `identity` may count of what it asks for (`pod_name`, `namespace`).
pub fn scope(
    identity: &Identity,
    allowed: &AllowedCallers,
    pod_name: Option<&str>,
    namespace: Option<&str>,
) -> Result<Scope, Forbidden> {
    if allowed.admits(identity) {
        return Ok(Scope::AnyPod {
            pod_name: pod_name.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
        });
    }
    let who = &identity.username;
    let (Some((own, uid)), Some(own_namespace)) =
        (&identity.pod, identity.service_account_namespace())
    else {
        return Err(Forbidden(format!(
            "{who} may not count pods: its token is bound to no pod, and it is not in --allowed-callers"
        )));
    };
    if pod_name.is_some_and(|asked| asked != own)
        || namespace.is_some_and(|asked| asked != own_namespace)
    {
        return Err(Forbidden(format!(
            "{who} may count only its own pod {own_namespace}/{own} (the pod its token is bound to)"
        )));
    }
    Ok(Scope::OwnPod {
        name: own.clone(),
        namespace: own_namespace.to_owned(),
        uid: uid.clone(),
    })
}

/// May `identity` read the tracker's state (`/status`, `/metrics` on the webhook address)?
pub fn may_read_status(identity: &Identity, allowed: &AllowedCallers) -> Result<(), Forbidden> {
    if allowed.admits(identity) {
        Ok(())
    } else {
        Err(Forbidden(format!(
            "{} may not read the tracker's status: only --allowed-callers may (or use --admin-address)",
            identity.username
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod_token(namespace: &str, account: &str, pod: &str) -> Identity {
        Identity {
            username: format!("system:serviceaccount:{namespace}:{account}"),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
            pod: Some((pod.to_owned(), format!("{pod}-uid"))),
        }
    }

    fn allowed(entries: &[&str]) -> AllowedCallers {
        AllowedCallers::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    #[test]
    fn a_pod_bound_token_counts_its_own_pod_and_no_other() {
        let worker = pod_token("jobs", "worker", "job-1");
        let none = AllowedCallers::default();
        let own = Scope::OwnPod {
            name: "job-1".to_owned(),
            namespace: "jobs".to_owned(),
            uid: "job-1-uid".to_owned(),
        };
        assert_eq!(scope(&worker, &none, None, None), Ok(own.clone()));
        assert_eq!(scope(&worker, &none, Some("job-1"), Some("jobs")), Ok(own));
        let other = scope(&worker, &none, Some("job-2"), None).expect_err("refused");
        assert!(other.0.contains("only its own pod jobs/job-1"), "{other:?}");
        assert!(scope(&worker, &none, Some("job-1"), Some("elsewhere")).is_err());
    }

    #[test]
    fn allowed_callers_count_any_pod_by_user_or_group_and_others_none() {
        let ci = Identity {
            username: "system:serviceaccount:ci:reporter".to_owned(),
            groups: vec!["system:serviceaccounts:ci".to_owned()],
            pod: None,
        };
        for entries in [
            &["system:serviceaccount:ci:reporter"][..],
            &["system:serviceaccounts:ci"],
        ] {
            let scope =
                scope(&ci, &allowed(entries), Some("job-9"), Some("jobs")).expect("allowed");
            assert_eq!(
                scope,
                Scope::AnyPod {
                    pod_name: Some("job-9".to_owned()),
                    namespace: Some("jobs".to_owned())
                }
            );
        }
        let refused = scope(&ci, &AllowedCallers::default(), Some("job-9"), None).expect_err("no");
        assert!(refused.0.contains("bound to no pod"), "{refused:?}");
        assert!(may_read_status(&ci, &AllowedCallers::default()).is_err());
        assert!(may_read_status(&ci, &allowed(&["system:serviceaccounts:ci"])).is_ok());
    }

    #[test]
    fn bad_allowed_callers_are_refused_naming_the_entry() {
        let bad = AllowedCallers::parse(&["system:serviceaccount:Bad_NS:x".to_owned()]);
        assert!(bad.expect_err("refused").contains("Bad_NS"));
        let spaced = AllowedCallers::parse(&["a b".to_owned()]);
        assert!(spaced.is_err());
        let list = AllowedCallers::parse(&["a,b".to_owned(), "c".to_owned()]).expect("valid");
        assert_eq!(list.entries(), ["a", "b", "c"]);
    }

    #[test]
    fn only_one_well_formed_bearer_header_is_read() {
        let header = |text: &str| text.as_bytes().to_vec();
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
        assert_eq!(bearer_token(&[header(&format!("Bearer {jwt}"))]), Ok(jwt));
        assert_eq!(bearer_token(&[header(&format!("bearer {jwt}"))]), Ok(jwt));
        for (headers, why) in [
            (vec![], "no Authorization"),
            (
                vec![header("Bearer a"), header("Bearer b")],
                "more than one",
            ),
            (vec![header("Basic dXNlcjpwYXNz")], "not Bearer"),
            (vec![header("Bearer")], "not \"Bearer TOKEN\""),
            (vec![header("Bearer ")], "empty"),
            (vec![header("Bearer a b")], "characters"),
            (vec![header("Bearer not-a-token")], "not a JWT"),
            (vec![header("Bearer bm9wZQ.eyJ9.c2ln")], "not a JWT"),
            (vec![vec![0xff, 0xfe]], "not text"),
        ] {
            let refused = bearer_token(&headers).expect_err(why);
            assert!(refused.0.contains(why), "{why}: {refused:?}");
        }
    }

    #[test]
    fn a_jwt_says_when_it_expires_and_anything_else_says_nothing() {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let token = format!("{}.{}.sig", encode("{}"), encode(r#"{"exp":1800000000}"#));
        assert_eq!(jwt_expiry(&token), Some(1_800_000_000));
        assert_eq!(jwt_expiry("not-a-token"), None);
        assert_eq!(
            jwt_expiry(&format!("a.{}.b", encode(r#"{"exp":"soon"}"#))),
            None
        );
    }

    proptest! {
        #[test]
        fn the_expiry_is_the_exp_claim_whatever_else_the_token_holds(
            exp in proptest::option::of(any::<u64>()),
            other in "\\PC{0,40}",
            header in "[A-Za-z0-9_-]{0,20}",
            signature in "\\PC{0,20}",
        ) {
            use base64::Engine;
            let mut claims = serde_json::json!({"sub": other});
            if let Some(exp) = exp {
                claims["exp"] = serde_json::json!(exp);
            }
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
            let token = format!("{header}.{payload}.{signature}");
            prop_assert_eq!(jwt_expiry(&token), exp);
            // Anything that is not such a token says nothing, and does not panic.
            prop_assert_eq!(jwt_expiry(&other.replace('.', "")), None);
        }

        #[test]
        fn any_header_bytes_give_a_token_or_a_reason_that_does_not_hold_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            match bearer_token(std::slice::from_ref(&bytes)) {
                Ok(token) => {
                    prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN);
                    prop_assert!(token.bytes().all(|b| b.is_ascii_graphic()));
                }
                Err(Unauthenticated(why)) => {
                    let text = String::from_utf8_lossy(&bytes);
                    if let Some((_, token)) = text.split_once(' ') && token.len() > 3 {
                        prop_assert!(!why.contains(token), "{} in {}", token, why);
                    }
                }
            }
        }

        #[test]
        fn no_pod_bound_token_reaches_another_pod(
            own in "[a-z][a-z0-9-]{0,10}",
            asked in "[a-z][a-z0-9-]{0,10}",
            namespace in "[a-z]{1,6}",
            asked_namespace in proptest::option::of("[a-z]{1,6}"),
        ) {
            let token = pod_token(&namespace, "worker", &own);
            match scope(&token, &AllowedCallers::default(), Some(&asked), asked_namespace.as_deref()) {
                Ok(Scope::OwnPod { name, namespace: granted, .. }) => {
                    prop_assert_eq!(&name, &own);
                    prop_assert_eq!(&asked, &own);
                    prop_assert_eq!(&granted, &namespace);
                }
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(_) => prop_assert!(asked != own || asked_namespace.is_some_and(|n| n != namespace)),
            }
        }
    }
}
