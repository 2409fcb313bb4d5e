//! Service-account tokens as kube-apiserver issues and reviews them: `TokenRequest` bound to a
//! pod (`POST .../serviceaccounts/SA/token`) and `TokenReview`, with the recorded wording for
//! every verdict, and the API server's cache of successful authentications (10 s), which keeps a
//! token of a deleted pod valid for a while.
//!
//! Tokens are JWTs signed with HMAC-SHA256 under a key of this server: the same three parts, the
//! same claims (`aud`, `exp`, `sub`, `kubernetes.io.pod`…) as the real ones, so that a client
//! can read them as it would a real token.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

use crate::ids;
use crate::status::ApiError;
use crate::store::{Store, Tokens, meta_str, string_list};

/// The API server's own audience (what a review without audiences is checked against).
pub(crate) const SERVER_AUDIENCE: &str = "https://kubernetes.default.svc";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub(crate) use crate::store::DEFAULT_TOKEN_CACHE as DEFAULT_CACHE;

fn account_uid(store: &mut Store, namespace: &str, name: &str) -> String {
    let key = (namespace.to_string(), name.to_string());
    if let Some(uid) = store.tokens.accounts.get(&key) {
        return uid.clone();
    }
    let uid = store.uid();
    store.tokens.accounts.insert(key, uid.clone());
    uid
}

/// A token for `namespace/account` bound to `pod` (which must exist, with `pod_uid` if
/// given, and run as that account), valid for `lifetime` for `audiences`.
pub(crate) fn issue(
    store: &mut Store,
    namespace: &str,
    account: &str,
    pod: (&str, Option<&str>),
    audiences: &[String],
    lifetime: Duration,
) -> Result<(String, SystemTime), ApiError> {
    let (pod_name, wanted_uid) = pod;
    let stored = crate::pods::get_pod(store, namespace, pod_name)?;
    let uid = meta_str(&stored, "uid").to_string();
    if let Some(wanted) = wanted_uid
        && wanted != uid
    {
        return Err(ApiError::conflict(
            "Pod",
            pod_name,
            &format!(
                "the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    let runs_as = stored["spec"]["serviceAccountName"]
        .as_str()
        .filter(|name| !name.is_empty())
        .unwrap_or("default");
    if runs_as != account {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )));
    }
    let account_uid = account_uid(store, namespace, account);
    let now = unix(SystemTime::now());
    let expires = SystemTime::now() + lifetime;
    let claims = json!({
        "aud": audiences,
        "exp": unix(expires),
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": pod_name, "uid": uid},
            "serviceaccount": {"name": account, "uid": account_uid},
        },
    });
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "kid": "kube-double"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&store.tokens.key, signed.as_bytes()));
    Ok((format!("{signed}.{signature}"), expires))
}

/// `status` of a TokenReview of `token` for `audiences` (empty: the server's own).
pub(crate) fn review(store: &mut Store, token: &str, audiences: &[String]) -> Value {
    let audiences: Vec<String> = if audiences.is_empty() {
        vec![SERVER_AUDIENCE.to_string()]
    } else {
        audiences.to_vec()
    };
    let refused = |why: Option<&str>| {
        let error = why.map_or_else(
            || "invalid bearer token".to_string(),
            |why| format!("[invalid bearer token, {why}]"),
        );
        json!({"user": {}, "error": error})
    };
    let Some(claims) = verified_claims(&store.tokens, token) else {
        return refused(None);
    };
    let Some(claims) = claims else {
        return refused(Some("square/go-jose: error in cryptographic primitive"));
    };
    let token_audiences = string_list(&claims["aud"]);
    let granted: Vec<&String> = audiences
        .iter()
        .filter(|a| token_audiences.contains(a))
        .collect();
    if granted.is_empty() {
        return refused(Some(&format!(
            "token audiences {} is invalid for the target audiences {}",
            go_list(&token_audiences),
            go_list(&audiences)
        )));
    }
    if claims["exp"]
        .as_u64()
        .is_none_or(|exp| exp <= unix(SystemTime::now()))
    {
        return refused(Some("Token has expired."));
    }
    let cache_for = store.tokens.cache_for;
    let cached = store
        .tokens
        .cache
        .get(token)
        .filter(|(at, _)| at.elapsed() < cache_for)
        .map(|(_, user)| user.clone());
    let user = match cached {
        Some(user) => user,
        None => {
            let bound = &claims["kubernetes.io"];
            let namespace = bound["namespace"].as_str().unwrap_or_default();
            let pod_name = bound["pod"]["name"].as_str().unwrap_or_default();
            let claimed = bound["pod"]["uid"].as_str().unwrap_or_default();
            let Ok(pod) = crate::pods::get_pod(store, namespace, pod_name) else {
                return refused(Some("Token has been invalidated"));
            };
            let uid = meta_str(&pod, "uid");
            if uid != claimed {
                return refused(Some(&format!(
                    "Pod UID ({uid}) does not match claim ({claimed})"
                )));
            }
            let account = bound["serviceaccount"]["name"].as_str().unwrap_or_default();
            let user = json!({
                "username": format!("system:serviceaccount:{namespace}:{account}"),
                "uid": bound["serviceaccount"]["uid"],
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [pod_name],
                    "authentication.kubernetes.io/pod-uid": [claimed],
                },
            });
            store
                .tokens
                .cache
                .insert(token.to_string(), (Instant::now(), user.clone()));
            user
        }
    };
    json!({"authenticated": true, "user": user, "audiences": granted})
}

/// The token's claims: `None` if it is no JWT at all, `Some(None)` if its signature is not
/// this server's.
fn verified_claims(tokens: &Tokens, token: &str) -> Option<Option<Value>> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header.get("alg")?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signed = &token[..header_and_payload_len(token)];
    Some(
        hmac::verify(&tokens.key, signed.as_bytes(), &signature)
            .ok()
            .map(|()| claims),
    )
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("{item:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `POST .../serviceaccounts/SA/token`: the TokenRequest answered, with `status.token`.
pub(crate) fn token_request(
    store: &mut Store,
    namespace: &str,
    account: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut audiences = string_list(&spec["audiences"]);
    if audiences.is_empty() {
        audiences.push(SERVER_AUDIENCE.to_string());
    }
    spec["audiences"] = json!(audiences);
    let seconds = spec["expirationSeconds"].as_u64().unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::bad_request(
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    spec["expirationSeconds"] = json!(seconds);
    let bound = &spec["boundObjectRef"];
    if bound["kind"] != "Pod" {
        return Err(ApiError::bad_request(
            "the double binds tokens to pods only (boundObjectRef.kind: Pod)",
        ));
    }
    let pod_name = bound["name"].as_str().unwrap_or_default().to_string();
    let pod_uid = bound["uid"].as_str().map(str::to_string);
    let (token, expires) = issue(
        store,
        namespace,
        account,
        (&pod_name, pod_uid.as_deref()),
        &audiences,
        Duration::from_secs(seconds),
    )?;
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {
            "selfLink": format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
            "creationTimestamp": null,
        },
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": ids::rfc3339(expires)},
    }))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub(crate) fn token_review(store: &mut Store, body: &[u8]) -> Result<Value, ApiError> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec["token"].as_str().unwrap_or_default();
    let audiences = string_list(&spec["audiences"]);
    let status = review(store, token, &audiences);
    Ok(json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    }))
}
