//! The read-only questions `doctor` asks: a namespace's budgets and pods, and access reviews,
//! each bounded in time, every failure one [`ReadFailure`] (so `doctor` knows no kube types).

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};

use super::{KubeOverrides, connect, error_chain};
use crate::error::Result;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadFailure {
    /// The API server refused (403).
    pub(crate) forbidden: bool,
    /// What went wrong, in the API server's words where it answered.
    pub(crate) message: String,
}

/// A client for reads, each limited to `limit`.
pub(crate) struct Reader {
    client: kube::Client,
    limit: Duration,
}

impl Reader {
    /// Connects as [`connect`] does.
    pub(crate) async fn connect(overrides: &KubeOverrides, limit: Duration) -> Result<Reader> {
        Ok(Reader {
            client: connect(overrides).await?,
            limit,
        })
    }

    /// The namespace's PodDisruptionBudgets.
    pub(crate) async fn budgets(
        &self,
        namespace: &str,
    ) -> std::result::Result<Vec<PodDisruptionBudget>, ReadFailure> {
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), namespace);
        self.limited(api.list(&ListParams::default()))
            .await
            .map(|list| list.items)
    }

    /// The namespace's pods.
    pub(crate) async fn pods(&self, namespace: &str) -> std::result::Result<Vec<Pod>, ReadFailure> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.limited(api.list(&ListParams::default()))
            .await
            .map(|list| list.items)
    }

    /// Whether the identity is allowed what `review` asks (a SelfSubjectAccessReview).
    pub(crate) async fn allowed(
        &self,
        review: SelfSubjectAccessReview,
    ) -> std::result::Result<bool, ReadFailure> {
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = self
            .limited(api.create(&PostParams::default(), &review))
            .await?;
        Ok(answer.status.is_some_and(|status| status.allowed))
    }

    /// Whether the service account `namespace/account` may `verb` pods in `namespace` (a
    /// SubjectAccessReview: doctor asks about an identity other than its own).
    pub(crate) async fn account_may(
        &self,
        account: &str,
        namespace: &str,
        verb: &str,
    ) -> std::result::Result<bool, ReadFailure> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{namespace}:{account}")),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".to_owned(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_owned()),
                    verb: Some(verb.to_owned()),
                    resource: Some("pods".to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = self
            .limited(api.create(&PostParams::default(), &review))
            .await?;
        Ok(answer.status.is_some_and(|status| status.allowed))
    }

    async fn limited<T>(
        &self,
        call: impl Future<Output = kube::Result<T>>,
    ) -> std::result::Result<T, ReadFailure> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(kube::Error::Api(status))) => Err(ReadFailure {
                forbidden: status.code == 403,
                message: if status.message.is_empty() {
                    format!("{} {}", status.code, status.reason)
                } else {
                    status.message.clone()
                },
            }),
            Ok(Err(other)) => Err(ReadFailure {
                forbidden: false,
                message: error_chain(&other),
            }),
            Err(_) => Err(ReadFailure {
                forbidden: false,
                message: format!(
                    "no answer within {}",
                    humantime::format_duration(self.limit)
                ),
            }),
        }
    }
}
