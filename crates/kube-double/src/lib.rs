//! A Kubernetes API server test double.
