//! Kubernetes label rules: validation of keys, values and names, and label selectors.
//!
//! Everything here follows `k8s.io/apimachinery` (Kubernetes v1.19) closely enough that the
//! error messages are the API server's own, word for word, so a test double can answer with
//! them and users see the wording they would get from `kubectl`.

// No panic is reachable from input: outside tests, these are denied (see the README's
// architecture section); an `#[allow]` beside its invariant marks each exception.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod parser;
mod quote;
mod requirement;
mod selector;
mod validation;

pub use quote::go_quote;
pub use requirement::{Operator, Requirement, SelectorError};
pub use selector::Selector;
pub use validation::{
    DNS1123_LABEL_MAX_LENGTH, DNS1123_SUBDOMAIN_MAX_LENGTH, LABEL_KEY_NAME_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH, validate_dns1123_label, validate_dns1123_subdomain, validate_label_key,
    validate_label_value,
};
