//! A real, current Kubernetes control plane for the tests, the way envtest gives one to Go
//! controllers: kube-apiserver, etcd and kube-controller-manager built from their published Go
//! modules (`go/`, built and cached by `tools.sh`), started on loopback with a CA, client
//! certificates and service-account keys made for them, and stopped when the test binary ends.
//!
//! ```no_run
//! let cluster = testenv::Cluster::shared();
//! let namespace = cluster.namespace("counting");
//! let pods = cluster.admin().get(&format!("/api/v1/namespaces/{namespace}/pods"));
//! assert_eq!(pods.status, 200);
//! ```

mod api;
mod cluster;
mod pki;
mod process;
pub mod release;
mod tools;

pub use api::{Answer, Api};
pub use cluster::{Cluster, Credentials, Options};
pub use pki::{Authority, Pair};
pub use tools::{script as tools_script, tool};
