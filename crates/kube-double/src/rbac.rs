//! Users, credentials, RBAC-style rules and impersonation: who a request comes from, whether
//! it may do what it asks, and the API server's wording when it may not.

use std::collections::HashMap;

use crate::status::{ApiError, GroupResource};

/// The group every authenticated user belongs to.
pub(crate) const AUTHENTICATED: &str = "system:authenticated";
/// The group that may do everything, before any rule is looked at.
pub const MASTERS: &str = "system:masters";

/// What a restarted kube-apiserver answers while its RBAC caches sync: the reason its RBAC
/// authorizer adds after the ordinary refusal (`...in the namespace "jobs": <this>`) when it
/// finds the default bindings but not yet their cluster roles. Exactly as a real v1.37.2 server
/// answered a service account a moment after a restart (seen by `tests/real/restart.rs`).
pub(crate) const UNSYNCED_REASON: &str = "rbac: RBAC: [\
    clusterrole.rbac.authorization.k8s.io \"system:basic-user\" not found, \
    clusterrole.rbac.authorization.k8s.io \"system:discovery\" not found, \
    clusterrole.rbac.authorization.k8s.io \"system:public-info-viewer\" not found, \
    clusterrole.rbac.authorization.k8s.io \"system:service-account-issuer-discovery\" not found, \
    clusterrole.rbac.authorization.k8s.io \"system:cluster-trust-bundle-discovery\" not found]";

/// A user known to the double: a name, groups and an optional uid, like the user info an
/// authenticator hands to the API server.
///
/// ```
/// use kube_double::User;
/// let user = User::new("tracker").groups(["workers"]).uid("u-1");
/// assert_eq!(user.name(), "tracker");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    groups: Vec<String>,
    uid: Option<String>,
}

impl User {
    /// A user with this name, no groups (besides `system:authenticated`, which every
    /// authenticated user gets) and no uid.
    pub fn new(name: impl Into<String>) -> User {
        User {
            name: name.into(),
            groups: Vec::new(),
            uid: None,
        }
    }

    /// A member of `system:masters`: allowed everything.
    pub fn admin(name: impl Into<String>) -> User {
        User::new(name).groups([MASTERS])
    }

    /// Adds groups.
    pub fn groups<S: Into<String>>(mut self, groups: impl IntoIterator<Item = S>) -> User {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Sets the uid.
    pub fn uid(mut self, uid: impl Into<String>) -> User {
        self.uid = Some(uid.into());
        self
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The groups, as given (without `system:authenticated`).
    pub fn group_names(&self) -> &[String] {
        &self.groups
    }

    /// The uid, if any.
    pub fn uid_value(&self) -> Option<&str> {
        self.uid.as_deref()
    }

    /// The user as a request carries it: with `system:authenticated` among its groups.
    pub(crate) fn authenticated(&self) -> User {
        let mut user = self.clone();
        if !user.groups.iter().any(|g| g == AUTHENTICATED) {
            user.groups.push(AUTHENTICATED.to_string());
        }
        user
    }

    pub(crate) fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// Whom a [`Rule`] is granted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user, by name.
    User(String),
    /// Every member of a group.
    Group(String),
}

impl Subject {
    /// A user, by name.
    pub fn user(name: impl Into<String>) -> Subject {
        Subject::User(name.into())
    }

    /// Every member of a group.
    pub fn group(name: impl Into<String>) -> Subject {
        Subject::Group(name.into())
    }

    fn matches(&self, user: &User) -> bool {
        match self {
            Subject::User(name) => *name == user.name,
            Subject::Group(group) => user.groups.iter().any(|g| g == group),
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::User(name) => format!("User {name:?}"),
            Subject::Group(name) => format!("Group {name:?}"),
        }
    }
}

/// What a subject may do, like one RBAC policy rule bound by a RoleBinding (with a namespace)
/// or a ClusterRoleBinding (without).
///
/// Verbs: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `impersonate` or
/// `*`. Resources: `pods`, `pods/eviction`, `events`, `poddisruptionbudgets`, `users`,
/// `groups`, `uids`, `*` (everything, subresources included) or `*/eviction`. API groups are
/// implied by the resource names.
///
/// ```
/// use kube_double::Rule;
/// let rule = Rule::new(["get", "patch"], ["pods"]).namespace("jobs").resource_names(["worker-0"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    verbs: Vec<String>,
    resources: Vec<String>,
    namespace: Option<String>,
    resource_names: Vec<String>,
    name: Option<String>,
}

impl Rule {
    /// A cluster-wide rule for these verbs on these resources.
    pub fn new<V: Into<String>, R: Into<String>>(
        verbs: impl IntoIterator<Item = V>,
        resources: impl IntoIterator<Item = R>,
    ) -> Rule {
        Rule {
            verbs: verbs.into_iter().map(Into::into).collect(),
            resources: resources.into_iter().map(Into::into).collect(),
            namespace: None,
            resource_names: Vec::new(),
            name: None,
        }
    }

    /// Limits the rule to one namespace (a Role instead of a ClusterRole).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Rule {
        self.namespace = Some(namespace.into());
        self
    }

    /// Limits the rule to objects with these names (requests that name no object, such as
    /// `list` and `create`, then never match).
    pub fn resource_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Rule {
        self.resource_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Names the role and its binding, as shown in an access review's reason
    /// (`RBAC: allowed by RoleBinding "<name>/<namespace>" of Role "<name>" to User "u"`).
    /// Unnamed rules are called `kube-double-<n>`.
    pub fn named(mut self, name: impl Into<String>) -> Rule {
        self.name = Some(name.into());
        self
    }

    fn allows(&self, attributes: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == attributes.verb);
        let combined = attributes.combined_resource();
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!attributes.subresource.is_empty()
                    && *r == format!("*/{}", attributes.subresource))
        });
        let name = self.resource_names.is_empty()
            || (!attributes.name.is_empty() && self.resource_names.contains(&attributes.name));
        let namespace = match &self.namespace {
            None => true,
            Some(ns) => *ns == attributes.namespace,
        };
        verb && resource && name && namespace
    }
}

/// What a request asks to do, as the authorizer sees it (`authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// Empty at the cluster scope.
    pub namespace: String,
    /// Empty when the request names no object.
    pub name: String,
}

impl Attributes {
    pub(crate) fn new(
        verb: &str,
        resource: GroupResource,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: resource.group.into(),
            resource: resource.resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub(crate) fn subresource(mut self, subresource: &str) -> Attributes {
        self.subresource = subresource.into();
        self
    }

    fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The 403 answer for a user refused these attributes, in the API server's words.
    pub(crate) fn forbidden(&self, user: &str) -> ApiError {
        self.forbidden_because(user, None)
    }

    /// The 403 answer, with the authorizer's reason after the refusal if it gave one.
    fn forbidden_because(&self, user: &str, reason: Option<&str>) -> ApiError {
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        let mut why = format!(
            "User {user:?} cannot {} resource {:?} in API group {:?} {scope}",
            self.verb,
            self.combined_resource(),
            self.group
        );
        if let Some(reason) = reason {
            why = format!("{why}: {reason}");
        }
        // The qualified resource leaves the subresource out (`pods "x" is forbidden`).
        ApiError::forbidden(&self.group, &self.resource, &self.name, &why)
    }
}

/// The 403 answer of an authorizer whose caches have not synced since a restart, for a
/// request that is not about a resource (`/version`, `/healthz`, paths the double does not
/// serve): `forbidden: User "u" cannot get path "/version": RBAC: [...]`.
pub(crate) fn unsynced_path_forbidden(user: &str, method: &str, path: &str) -> ApiError {
    ApiError::forbidden_path(&format!(
        "User {user:?} cannot {} path {path:?}: {UNSYNCED_REASON}",
        method.to_ascii_lowercase()
    ))
}

/// An authorization decision and, when allowed by a rule, the RBAC reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub allowed: bool,
    pub reason: Option<String>,
}

/// Credentials and rules.
#[derive(Debug, Default)]
pub(crate) struct Rbac {
    tokens: HashMap<String, User>,
    basic: HashMap<(String, String), User>,
    certificates: HashMap<Vec<u8>, User>,
    bindings: Vec<(Subject, Rule)>,
}

impl Rbac {
    pub(crate) fn add_token(&mut self, token: &str, user: User) {
        self.tokens.insert(token.to_string(), user);
    }

    pub(crate) fn add_basic_auth(&mut self, username: &str, password: &str, user: User) {
        self.basic
            .insert((username.to_string(), password.to_string()), user);
    }

    pub(crate) fn add_certificate(&mut self, der: Vec<u8>, user: User) {
        self.certificates.insert(der, user);
    }

    pub(crate) fn allow(&mut self, subject: Subject, mut rule: Rule) {
        if rule.name.is_none() {
            rule.name = Some(format!("kube-double-{}", self.bindings.len() + 1));
        }
        self.bindings.push((subject, rule));
    }

    pub(crate) fn clear_rules(&mut self) {
        self.bindings.clear();
    }

    /// The user behind a request: its client certificate first, then its `Authorization`
    /// header (`Bearer <token>` or `Basic <base64 user:password>`). `None` means 401.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&str>,
        peer_certificate: Option<&[u8]>,
    ) -> Option<User> {
        if let Some(user) = peer_certificate.and_then(|der| self.certificates.get(der)) {
            return Some(user.authenticated());
        }
        let authorization = authorization?.trim();
        let (scheme, credentials) = authorization.split_once(' ')?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.tokens.get(credentials).map(User::authenticated);
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (username, password) = decoded.split_once(':')?;
            return self
                .basic
                .get(&(username.to_string(), password.to_string()))
                .map(User::authenticated);
        }
        None
    }

    /// Whether `user` may do what `attributes` describe: `system:masters` may do everything;
    /// otherwise the first matching rule allows it (cluster-wide rules are looked at first,
    /// as RBAC visits ClusterRoleBindings before RoleBindings).
    pub(crate) fn authorize(&self, user: &User, attributes: &Attributes) -> Decision {
        if user.is_master() {
            return Decision {
                allowed: true,
                reason: None,
            };
        }
        // Every authenticated user may review its own access (system:basic-user).
        if attributes.resource == "selfsubjectaccessreviews" && attributes.verb == "create" {
            return Decision {
                allowed: true,
                reason: None,
            };
        }
        let cluster = self
            .bindings
            .iter()
            .filter(|(_, rule)| rule.namespace.is_none());
        let namespaced = self
            .bindings
            .iter()
            .filter(|(_, rule)| rule.namespace.is_some());
        for (subject, rule) in cluster.chain(namespaced) {
            if subject.matches(user) && rule.allows(attributes) {
                let name = rule.name.clone().unwrap_or_default();
                let reason = match &rule.namespace {
                    None => format!(
                        "RBAC: allowed by ClusterRoleBinding {name:?} of ClusterRole {name:?} to {}",
                        subject.describe()
                    ),
                    Some(ns) => format!(
                        "RBAC: allowed by RoleBinding {:?} of Role {name:?} to {}",
                        format!("{name}/{ns}"),
                        subject.describe()
                    ),
                };
                return Decision {
                    allowed: true,
                    reason: Some(reason),
                };
            }
        }
        Decision {
            allowed: false,
            reason: None,
        }
    }

    /// Authorizes `attributes` for `user`, or gives the 403 to answer. Unless `synced`, the
    /// authorizer is one whose caches have not synced since a restart: it finds no rule and
    /// no role, so it refuses everyone but `system:masters`, with [`UNSYNCED_REASON`].
    pub(crate) fn check(
        &self,
        user: &User,
        attributes: &Attributes,
        synced: bool,
    ) -> Result<(), ApiError> {
        if synced {
            if self.authorize(user, attributes).allowed {
                Ok(())
            } else {
                Err(attributes.forbidden(user.name()))
            }
        } else if user.is_master() {
            Ok(())
        } else {
            Err(attributes.forbidden_because(user.name(), Some(UNSYNCED_REASON)))
        }
    }

    /// Applies impersonation headers: the requestor needs `impersonate` on `users` (and on
    /// `groups` and `uids` for those headers) at the cluster scope; the request then runs as
    /// the impersonated user, who gets `system:authenticated` too. `synced`: see
    /// [`Rbac::check`].
    pub(crate) fn impersonate(
        &self,
        requestor: &User,
        request: &Impersonation,
        synced: bool,
    ) -> Result<Option<User>, ApiError> {
        if request.is_empty() {
            return Ok(None);
        }
        let Some(name) = &request.user else {
            return Err(ApiError::internal(
                "requested groups or a uid without impersonating a user",
            ));
        };
        let users = GroupResource {
            group: "",
            resource: "users",
        };
        let groups = GroupResource {
            group: "",
            resource: "groups",
        };
        let uids = GroupResource {
            group: "authentication.k8s.io",
            resource: "uids",
        };
        let mut checks = vec![Attributes::new("impersonate", users, "", name)];
        checks.extend(
            request
                .groups
                .iter()
                .map(|g| Attributes::new("impersonate", groups, "", g)),
        );
        checks.extend(
            request
                .uid
                .iter()
                .map(|u| Attributes::new("impersonate", uids, "", u)),
        );
        for attributes in checks {
            self.check(requestor, &attributes, synced)?;
        }
        let mut user = User::new(name.clone()).groups(request.groups.clone());
        user.uid = request.uid.clone();
        Ok(Some(user.authenticated()))
    }
}

/// The impersonation a request asks for (`Impersonate-User`, `Impersonate-Group`,
/// `Impersonate-Uid` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Impersonation {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

impl Impersonation {
    pub(crate) fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty() && self.uid.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(verb: &str, namespace: &str, name: &str) -> Attributes {
        Attributes::new(verb, GroupResource::PODS, namespace, name)
    }

    fn rbac() -> Rbac {
        let mut rbac = Rbac::default();
        rbac.add_token("admin-token", User::admin("admin"));
        rbac.add_token("tracker-token", User::new("tracker"));
        rbac.allow(
            Subject::user("tracker"),
            Rule::new(["get", "list", "update", "patch"], ["pods"])
                .namespace("transcripts")
                .named("tracker"),
        );
        rbac
    }

    #[test]
    fn tokens_and_basic_auth_identify_users_and_add_the_authenticated_group() {
        let mut rbac = rbac();
        rbac.add_basic_auth("alice", "secret", User::new("alice").uid("u-1"));
        let user = rbac
            .authenticate(Some("Bearer tracker-token"), None)
            .expect("known token");
        assert_eq!(user.name(), "tracker");
        assert_eq!(user.group_names(), [AUTHENTICATED]);
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:secret")
        );
        let alice = rbac
            .authenticate(Some(&basic), None)
            .expect("known password");
        assert_eq!((alice.name(), alice.uid_value()), ("alice", Some("u-1")));
        assert!(rbac.authenticate(Some("Bearer nope"), None).is_none());
        assert!(rbac.authenticate(None, None).is_none());
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:wrong")
        );
        assert!(rbac.authenticate(Some(&wrong), None).is_none());
    }

    #[test]
    fn a_client_certificate_wins_over_a_bad_token() {
        let mut rbac = rbac();
        rbac.add_certificate(vec![1, 2, 3], User::new("carol"));
        let user = rbac
            .authenticate(Some("Bearer nope"), Some(&[1, 2, 3]))
            .expect("certificate");
        assert_eq!(user.name(), "carol");
    }

    #[test]
    fn masters_may_do_everything() {
        let admin = User::admin("admin").authenticated();
        assert!(rbac().authorize(&admin, &pods("delete", "", "")).allowed);
    }

    #[test]
    fn a_role_allows_its_verbs_in_its_namespace_only() {
        let rbac = rbac();
        let tracker = User::new("tracker").authenticated();
        let decision = rbac.authorize(&tracker, &pods("patch", "transcripts", "worker-nolabels"));
        assert_eq!(
            decision.reason.as_deref(),
            Some(
                "RBAC: allowed by RoleBinding \"tracker/transcripts\" of Role \"tracker\" to User \"tracker\""
            )
        );
        assert!(!rbac.authorize(&tracker, &pods("list", "", "")).allowed);
        assert!(!rbac.authorize(&tracker, &pods("get", "other", "x")).allowed);
        assert!(
            !rbac
                .authorize(&tracker, &pods("delete", "transcripts", "x"))
                .allowed
        );
    }

    #[test]
    fn resource_names_limit_a_rule_to_named_objects() {
        let mut rbac = Rbac::default();
        rbac.allow(
            Subject::user("nobody"),
            Rule::new(["get", "patch"], ["pods"])
                .namespace("ns")
                .resource_names(["a"]),
        );
        let nobody = User::new("nobody").authenticated();
        assert!(rbac.authorize(&nobody, &pods("get", "ns", "a")).allowed);
        assert!(!rbac.authorize(&nobody, &pods("patch", "ns", "b")).allowed);
        assert!(!rbac.authorize(&nobody, &pods("list", "ns", "a")).allowed);
        assert!(!rbac.authorize(&nobody, &pods("create", "ns", "")).allowed);
    }

    #[test]
    fn group_rules_apply_to_members_and_cluster_rules_are_described_as_such() {
        let mut rbac = Rbac::default();
        rbac.allow(
            Subject::group("workers"),
            Rule::new(["*"], ["*"]).named("all"),
        );
        let member = User::new("w").groups(["workers"]).authenticated();
        let decision = rbac.authorize(&member, &pods("create", "ns", "p").subresource("eviction"));
        assert_eq!(
            decision.reason.as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"all\" of ClusterRole \"all\" to Group \"workers\""
            )
        );
        assert!(
            !rbac
                .authorize(&User::new("x").authenticated(), &pods("get", "ns", "p"))
                .allowed
        );
    }

    #[test]
    fn subresources_need_their_own_grant() {
        let mut rbac = Rbac::default();
        rbac.allow(Subject::user("u"), Rule::new(["create"], ["pods"]));
        let user = User::new("u").authenticated();
        assert!(
            !rbac
                .authorize(&user, &pods("create", "ns", "p").subresource("eviction"))
                .allowed
        );
        rbac.allow(Subject::user("u"), Rule::new(["create"], ["pods/eviction"]));
        assert!(
            rbac.authorize(&user, &pods("create", "ns", "p").subresource("eviction"))
                .allowed
        );
    }

    #[test]
    fn forbidden_messages_name_the_scope() {
        let error = pods("get", "transcripts", "worker-a")
            .forbidden("nobody")
            .to_json();
        assert_eq!(
            error["message"],
            "pods \"worker-a\" is forbidden: User \"nobody\" cannot get resource \"pods\" in API group \"\" in the namespace \"transcripts\""
        );
        let error = pods("list", "", "").forbidden("tracker").to_json();
        assert_eq!(
            error["message"],
            "pods is forbidden: User \"tracker\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        );
        assert_eq!(error["details"], serde_json::json!({"kind": "pods"}));
        let error = pods("create", "ns", "p")
            .subresource("eviction")
            .forbidden("u")
            .to_json();
        assert_eq!(
            error["message"],
            "pods \"p\" is forbidden: User \"u\" cannot create resource \"pods/eviction\" in API group \"\" in the namespace \"ns\""
        );
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb_at_the_cluster_scope() {
        let mut rbac = rbac();
        let tracker = User::new("tracker").authenticated();
        let request = Impersonation {
            user: Some("admin".into()),
            ..Impersonation::default()
        };
        let error = rbac
            .impersonate(&tracker, &request, true)
            .expect_err("no right")
            .to_json();
        assert_eq!(
            error["message"],
            "users \"admin\" is forbidden: User \"tracker\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        rbac.allow(
            Subject::user("tracker"),
            Rule::new(["impersonate"], ["users"]),
        );
        let request = Impersonation {
            user: Some("bob".into()),
            groups: vec!["g".into()],
            uid: None,
        };
        let error = rbac
            .impersonate(&tracker, &request, true)
            .expect_err("no group right")
            .to_json();
        assert_eq!(error["details"]["kind"], "groups");
        rbac.allow(
            Subject::user("tracker"),
            Rule::new(["impersonate"], ["groups", "uids"]),
        );
        let request = Impersonation {
            user: Some("bob".into()),
            groups: vec!["g".into()],
            uid: Some("u9".into()),
        };
        let bob = rbac
            .impersonate(&tracker, &request, true)
            .expect("allowed")
            .expect("impersonated");
        assert_eq!(bob.name(), "bob");
        assert_eq!(bob.group_names(), ["g", AUTHENTICATED]);
        assert_eq!(bob.uid_value(), Some("u9"));
    }

    #[test]
    fn impersonating_groups_without_a_user_is_refused() {
        let request = Impersonation {
            groups: vec!["g".into()],
            ..Impersonation::default()
        };
        let admin = User::admin("admin").authenticated();
        assert_eq!(
            rbac()
                .impersonate(&admin, &request, true)
                .expect_err("no user")
                .code,
            500
        );
    }
}
