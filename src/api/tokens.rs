//! TokenReview: who a caller's bearer token belongs to, as the API server says.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};

use super::recovery::Kind;
use super::{ApiFailure, PodClient};
use crate::core::callers::{Identity, POD_NAME_EXTRA, POD_UID_EXTRA};

impl PodClient {
    /// Asks the API server whether the tracker may create TokenReviews.
    pub(crate) async fn may_create_token_reviews(&self) -> Result<bool, ApiFailure> {
        let mut review = super::access_review("create", "tokenreviews", "", None);
        if let Some(attributes) = review.spec.resource_attributes.as_mut() {
            attributes.group = Some("authentication.k8s.io".to_owned());
            attributes.namespace = None;
        }
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

    /// Reviews `token` for `audience`: the identity, or why the API server did not accept the
    /// token (`Ok(Err(..))`, a 401 for the caller); `Err` when the review itself failed.
    pub(crate) async fn review_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<Result<Identity, String>, ApiFailure> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![audience.to_owned()]),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = self
            .limited(
                Kind::cluster("create", "tokenreviews"),
                None,
                api.create(&PostParams::default(), &review),
            )
            .await?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the API server did not authenticate it".to_owned());
            return Ok(Err(format!("the token was not accepted: {why}")));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == audience)
        {
            return Ok(Err(format!("the token is not for the audience {audience}")));
        }
        let user = status.user.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|values| values.first()).cloned();
        let pod = match (first(POD_NAME_EXTRA), first(POD_UID_EXTRA)) {
            (Some(name), Some(uid)) => Some((name, uid)),
            _ => None,
        };
        Ok(Ok(Identity {
            username: user.username.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            pod,
        }))
    }
}
