//! Routing: which resource a request path addresses, the request's kind and what the
//! authorizer is asked about it; query parameters and field selectors.

use kube_labels::Selector;

use crate::rbac::Attributes;
use crate::record::Verb;
use crate::status::{ApiError, GroupResource};

/// The two versions of the policy API that serve disruption budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyVersion {
    V1,
    V1beta1,
}

impl PolicyVersion {
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            PolicyVersion::V1 => "policy/v1",
            PolicyVersion::V1beta1 => "policy/v1beta1",
        }
    }

    pub(crate) fn parse(version: &str) -> Option<PolicyVersion> {
        match version {
            "v1" => Some(PolicyVersion::V1),
            "v1beta1" => Some(PolicyVersion::V1beta1),
            _ => None,
        }
    }
}

/// The two event APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventsApi {
    /// `/api/v1/namespaces/{ns}/events`
    Core,
    /// `/apis/events.k8s.io/v1/namespaces/{ns}/events`
    EventsV1,
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Pods of a namespace, or of all namespaces.
    Pods {
        namespace: Option<String>,
    },
    Pod {
        namespace: String,
        name: String,
    },
    Eviction {
        namespace: String,
        name: String,
    },
    Events {
        namespace: String,
        api: EventsApi,
    },
    /// Disruption budgets of a namespace, or of all namespaces.
    Pdbs {
        version: PolicyVersion,
        namespace: Option<String>,
    },
    Pdb {
        version: PolicyVersion,
        namespace: String,
        name: String,
    },
    AccessReview,
    /// `serviceaccounts/NAME/token`: a TokenRequest.
    ServiceAccountToken {
        namespace: String,
        name: String,
    },
    /// `tokenreviews`.
    TokenReviews,
    /// `subjectaccessreviews`: what another user may do.
    SubjectAccessReview,
    /// `mutatingwebhookconfigurations` (cluster-scoped).
    WebhookConfigs,
    WebhookConfig {
        name: String,
    },
    /// `/version`, `/healthz`, `/livez`, `/readyz`.
    Info(String),
    Unknown,
}

impl Route {
    /// Routes a request path (without its query).
    pub(crate) fn parse(path: &str) -> Route {
        let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let owned = |x: &str| x.to_string();
        match s.as_slice() {
            ["version"] | ["healthz"] | ["livez"] | ["readyz"] => Route::Info(owned(s[0])),
            ["api", "v1", "pods"] => Route::Pods { namespace: None },
            ["api", "v1", "namespaces", ns, "pods"] => Route::Pods {
                namespace: Some(owned(ns)),
            },
            ["api", "v1", "namespaces", ns, "pods", name] => Route::Pod {
                namespace: owned(ns),
                name: owned(name),
            },
            ["api", "v1", "namespaces", ns, "pods", name, "eviction"] => Route::Eviction {
                namespace: owned(ns),
                name: owned(name),
            },
            ["api", "v1", "namespaces", ns, "events"] => Route::Events {
                namespace: owned(ns),
                api: EventsApi::Core,
            },
            ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => Route::Events {
                namespace: owned(ns),
                api: EventsApi::EventsV1,
            },
            ["apis", "policy", version, "poddisruptionbudgets"] => {
                match PolicyVersion::parse(version) {
                    Some(version) => Route::Pdbs {
                        version,
                        namespace: None,
                    },
                    None => Route::Unknown,
                }
            }
            [
                "apis",
                "policy",
                version,
                "namespaces",
                ns,
                "poddisruptionbudgets",
            ] => match PolicyVersion::parse(version) {
                Some(version) => Route::Pdbs {
                    version,
                    namespace: Some(owned(ns)),
                },
                None => Route::Unknown,
            },
            [
                "apis",
                "policy",
                version,
                "namespaces",
                ns,
                "poddisruptionbudgets",
                name,
            ] => match PolicyVersion::parse(version) {
                Some(version) => Route::Pdb {
                    version,
                    namespace: owned(ns),
                    name: owned(name),
                },
                None => Route::Unknown,
            },
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ] => Route::AccessReview,
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "serviceaccounts",
                name,
                "token",
            ] => Route::ServiceAccountToken {
                namespace: owned(ns),
                name: owned(name),
            },
            ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Route::TokenReviews,
            ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
                Route::SubjectAccessReview
            }
            [
                "apis",
                "admissionregistration.k8s.io",
                "v1",
                "mutatingwebhookconfigurations",
            ] => Route::WebhookConfigs,
            [
                "apis",
                "admissionregistration.k8s.io",
                "v1",
                "mutatingwebhookconfigurations",
                name,
            ] => Route::WebhookConfig { name: owned(name) },
            _ => Route::Unknown,
        }
    }

    /// The request's kind, or `None` if the route does not take this method (405).
    pub(crate) fn verb(&self, method: &str, query: &Query) -> Option<Verb> {
        let collection_read = || {
            if query.flag("watch") {
                Verb::Watch
            } else {
                Verb::List
            }
        };
        match (self, method) {
            (Route::Info(_), "GET") => Some(Verb::Get),
            (Route::Pods { .. } | Route::Pdbs { .. }, "GET") => Some(collection_read()),
            (
                Route::Pods { namespace: Some(_) }
                | Route::Pdbs {
                    namespace: Some(_), ..
                },
                "POST",
            ) => Some(Verb::Create),
            (Route::Pod { .. } | Route::Pdb { .. }, "GET") => Some(Verb::Get),
            (Route::Pod { .. }, "PUT") => Some(Verb::Update),
            (Route::Pod { .. }, "PATCH") => Some(Verb::Patch),
            (Route::Pod { .. } | Route::Pdb { .. }, "DELETE") => Some(Verb::Delete),
            (Route::Eviction { .. }, "POST") => Some(Verb::Evict),
            (
                Route::Events { .. }
                | Route::AccessReview
                | Route::SubjectAccessReview
                | Route::ServiceAccountToken { .. }
                | Route::TokenReviews,
                "POST",
            ) => Some(Verb::Create),
            (Route::WebhookConfigs, "GET") => Some(collection_read()),
            (Route::WebhookConfigs, "POST") => Some(Verb::Create),
            (Route::WebhookConfig { .. }, "GET") => Some(Verb::Get),
            (Route::WebhookConfig { .. }, "PATCH") => Some(Verb::Patch),
            (Route::WebhookConfig { .. }, "DELETE") => Some(Verb::Delete),
            (Route::Unknown, _) => Some(match method {
                "POST" => Verb::Create,
                "PUT" => Verb::Update,
                "PATCH" => Verb::Patch,
                "DELETE" => Verb::Delete,
                _ => Verb::Get,
            }),
            _ => None,
        }
    }

    /// The resource the route is about (for messages of injected statuses).
    pub(crate) fn resource(&self) -> GroupResource {
        match self {
            Route::Events { .. } => GroupResource::EVENTS,
            Route::Pdbs { .. } | Route::Pdb { .. } => GroupResource::PDBS,
            Route::WebhookConfigs | Route::WebhookConfig { .. } => GroupResource::WEBHOOK_CONFIGS,
            _ => GroupResource::PODS,
        }
    }

    /// The object the request names, if any.
    pub(crate) fn object_name(&self) -> Option<&str> {
        match self {
            Route::Pod { name, .. }
            | Route::Eviction { name, .. }
            | Route::Pdb { name, .. }
            | Route::WebhookConfig { name } => Some(name),
            _ => None,
        }
    }

    /// The pod the request is about, if any (for faults limited to one pod).
    pub(crate) fn pod_name(&self) -> Option<&str> {
        match self {
            Route::Pod { name, .. } | Route::Eviction { name, .. } => Some(name),
            _ => None,
        }
    }

    /// What the authorizer is asked, or `None` for requests every authenticated user may
    /// make (`/version`, health checks, unknown paths).
    pub(crate) fn attributes(&self, verb: Verb, query: &Query) -> Option<Attributes> {
        let verb = verb.rbac();
        let attributes = match self {
            Route::Pods { namespace } => Attributes::new(
                verb,
                GroupResource::PODS,
                namespace.as_deref().unwrap_or_default(),
                &list_name(query),
            ),
            Route::Pod { namespace, name } => {
                Attributes::new(verb, GroupResource::PODS, namespace, name)
            }
            Route::Eviction { namespace, name } => {
                Attributes::new(verb, GroupResource::PODS, namespace, name).subresource("eviction")
            }
            Route::Events { namespace, api } => {
                let group = match api {
                    EventsApi::Core => GroupResource::EVENTS,
                    EventsApi::EventsV1 => GroupResource {
                        group: "events.k8s.io",
                        resource: "events",
                    },
                };
                Attributes::new(verb, group, namespace, "")
            }
            Route::Pdbs { namespace, .. } => Attributes::new(
                verb,
                GroupResource::PDBS,
                namespace.as_deref().unwrap_or_default(),
                &list_name(query),
            ),
            Route::Pdb {
                namespace, name, ..
            } => Attributes::new(verb, GroupResource::PDBS, namespace, name),
            Route::AccessReview => Attributes::new(
                verb,
                GroupResource {
                    group: "authorization.k8s.io",
                    resource: "selfsubjectaccessreviews",
                },
                "",
                "",
            ),
            Route::ServiceAccountToken { namespace, name } => Attributes::new(
                verb,
                GroupResource {
                    group: "",
                    resource: "serviceaccounts",
                },
                namespace,
                name,
            )
            .subresource("token"),
            Route::TokenReviews => Attributes::new(
                verb,
                GroupResource {
                    group: "authentication.k8s.io",
                    resource: "tokenreviews",
                },
                "",
                "",
            ),
            Route::SubjectAccessReview => Attributes::new(
                verb,
                GroupResource {
                    group: "authorization.k8s.io",
                    resource: "subjectaccessreviews",
                },
                "",
                "",
            ),
            Route::WebhookConfigs => {
                Attributes::new(verb, GroupResource::WEBHOOK_CONFIGS, "", &list_name(query))
            }
            Route::WebhookConfig { name } => {
                Attributes::new(verb, GroupResource::WEBHOOK_CONFIGS, "", name)
            }
            Route::Info(_) | Route::Unknown => return None,
        };
        Some(attributes)
    }
}

/// The name a list request is authorized for: like the API server, a field selector that
/// requires `metadata.name=<name>` makes the list about that name (if both selectors parse).
pub(crate) fn list_name(query: &Query) -> String {
    if Selector::parse(query.get("labelSelector").unwrap_or_default()).is_err() {
        return String::new();
    }
    let Ok(fields) = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default()) else {
        return String::new();
    };
    fields
        .terms
        .iter()
        .find(|t| t.field == "metadata.name" && t.equal)
        .map(|t| t.value.clone())
        .filter(|name| {
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
        })
        .unwrap_or_default()
}

/// Decodes `%XX` escapes (and, in queries, `+` as a space).
pub(crate) fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn percent_decode(text: &str) -> String {
    decode(text, false)
}

/// A request's query parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query(pub(crate) Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key, true), decode(value, true))
            })
            .collect();
        Query(pairs)
    }

    /// The first value of a parameter.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`watch=true`, `watch=1`).
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | ""))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.0.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
}

/// A field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    pub(crate) terms: Vec<FieldTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldTerm {
    field: String,
    /// `=`/`==` (true) or `!=` (false).
    equal: bool,
    value: String,
}

impl FieldSelector {
    pub(crate) fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for part in split_unescaped(text, ',') {
            if part.trim().is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], false, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], true, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], true, &part[i + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                equal,
                value: unescape(value.trim()),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Checks the fields against those the resource supports.
    pub(crate) fn check(&self, supported: &[&str]) -> Result<(), ApiError> {
        match self
            .terms
            .iter()
            .find(|t| !supported.contains(&t.field.as_str()))
        {
            Some(term) => Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                term.field
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn matches(&self, field_value: impl Fn(&str) -> String) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(&t.field) == t.value) == t.equal)
    }
}

pub(crate) fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            if let Some(last) = parts.last_mut() {
                last.push('\\');
                last.push(c);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

pub(crate) fn find_unescaped(text: &str, needle: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i..].starts_with(needle.as_bytes()) {
            return Some(i);
        }
        i += 1;
    }
    None
}

pub(crate) fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "ns";

    fn query(raw: &str) -> Query {
        Query::parse(Some(raw))
    }

    #[test]
    fn routes_are_recognised() {
        assert_eq!(
            Route::parse("/api/v1/pods"),
            Route::Pods { namespace: None }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/pods/b/eviction"),
            Route::Eviction {
                namespace: "a".into(),
                name: "b".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/policy/v1beta1/namespaces/a/poddisruptionbudgets"),
            Route::Pdbs {
                version: PolicyVersion::V1beta1,
                namespace: Some("a".into())
            }
        );
        assert_eq!(
            Route::parse("/apis/policy/v2/poddisruptionbudgets"),
            Route::Unknown
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/configmaps"),
            Route::Unknown
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/a/pods/b%2Fc"),
            Route::Pod {
                namespace: "a".into(),
                name: "b/c".into()
            }
        );
    }

    #[test]
    fn verbs_follow_method_and_route() {
        let pods = Route::Pods {
            namespace: Some(NS.into()),
        };
        assert_eq!(pods.verb("GET", &Query::default()), Some(Verb::List));
        assert_eq!(pods.verb("GET", &query("watch=true")), Some(Verb::Watch));
        assert_eq!(pods.verb("POST", &Query::default()), Some(Verb::Create));
        assert_eq!(
            Route::Pods { namespace: None }.verb("POST", &Query::default()),
            None
        );
        let pod = Route::Pod {
            namespace: NS.into(),
            name: "p".into(),
        };
        assert_eq!(pod.verb("PATCH", &Query::default()), Some(Verb::Patch));
        assert_eq!(pod.verb("POST", &Query::default()), None);
    }

    #[test]
    fn queries_decode_plus_and_percent_escapes() {
        let q = query("labelSelector=app+in+%28worker%2Cbatch%29&limit=1");
        assert_eq!(q.get("labelSelector"), Some("app in (worker,batch)"));
        assert_eq!(q.get("limit"), Some("1"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn field_selectors_understand_escapes_and_any_characters() {
        let selector =
            FieldSelector::parse(r"metadata.name=a\,b,status.phase!=Rünning").expect("parses");
        let term = |field: &str, equal, value: &str| FieldTerm {
            field: field.into(),
            equal,
            value: value.into(),
        };
        assert_eq!(
            selector.terms,
            [
                term("metadata.name", true, "a,b"),
                term("status.phase", false, "Rünning")
            ]
        );
        let error = FieldSelector::parse("é").expect_err("no operator");
        assert_eq!(error.message, "invalid selector: 'é'; can't understand 'é'");
    }

    #[test]
    fn a_name_field_selector_names_the_list_for_authorization() {
        let route = Route::Pods {
            namespace: Some(NS.into()),
        };
        let attributes = route
            .attributes(Verb::List, &query("fieldSelector=metadata.name%3Dp"))
            .expect("resource");
        assert_eq!(
            (attributes.verb.as_str(), attributes.name.as_str()),
            ("list", "p")
        );
        let attributes = route
            .attributes(Verb::List, &query("fieldSelector=metadata.name%21%3Dp"))
            .expect("resource");
        assert_eq!(attributes.name, "");
        let attributes = route
            .attributes(
                Verb::List,
                &query("fieldSelector=metadata.name%3Dp&labelSelector=a+in+%28b"),
            )
            .expect("resource");
        assert_eq!(attributes.name, "", "a bad label selector drops the name");
    }
}
