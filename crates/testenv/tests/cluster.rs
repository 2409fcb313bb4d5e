//! The harness itself: a real control plane starts, serves, restarts, and leaves nothing behind.

use std::time::Duration;

use serde_json::json;
use testenv::{Cluster, Credentials};

#[test]
fn the_shared_cluster_is_a_current_kube_apiserver_that_stores_pods_in_a_namespace_of_the_test() {
    let cluster = Cluster::shared();
    let version = cluster.admin().get("/version").expect(200, "version");
    assert_eq!(version["gitVersion"], "v1.37.2", "{version}");
    let namespace = cluster.namespace("harness");
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let stored = cluster
        .admin()
        .post(&format!("/api/v1/namespaces/{namespace}/pods"), &pod)
        .expect(201, "create a pod");
    assert_eq!(
        stored["spec"]["serviceAccountName"], "default",
        "the ServiceAccount admission plugin ran, and the default account exists"
    );
}

#[test]
fn a_service_account_token_speaks_as_the_account_and_rbac_decides() {
    let cluster = Cluster::shared();
    let namespace = cluster.namespace("harness");
    let pods = format!("/api/v1/namespaces/{namespace}/pods");
    let token = cluster.token(&namespace, "default", &[], None);
    let kubeconfig = cluster.kubeconfig("default-account", &Credentials::Token(token), &namespace);
    let account = testenv::Api::from_kubeconfig(&kubeconfig);
    let refused = account.get(&pods);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "User \"system:serviceaccount:{namespace}:default\" cannot list resource \"pods\""
        )),
        "{refused:?}"
    );
    cluster
        .admin()
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"),
            &json!({"metadata": {"name": "read"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        )
        .expect(201, "a role");
    cluster
        .admin()
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"),
            &json!({"metadata": {"name": "read"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
                    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]}),
        )
        .expect(201, "a binding");
    let started = std::time::Instant::now();
    while account.get(&pods).status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the binding took effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubectl_built_from_its_module_talks_to_the_cluster() {
    let cluster = Cluster::shared();
    let namespace = cluster.namespace("harness");
    let output = cluster
        .kubectl()
        .args(["get", "serviceaccounts", "-n", &namespace, "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "serviceaccount/default"
    );
}

#[test]
fn a_cluster_of_its_own_restarts_its_api_server_with_what_it_stored_and_leaves_no_folder() {
    let cluster = Cluster::start(testenv::Options {
        controller_manager: false,
        ..Default::default()
    });
    let namespace = cluster.namespace("restart");
    let folder = cluster.scratch("x");
    cluster.restart_apiserver(Duration::from_millis(100));
    cluster.wait_ready();
    cluster
        .admin()
        .get(&format!("/api/v1/namespaces/{namespace}"))
        .expect(200, "the namespace survived the restart");
    let root = folder
        .parent()
        .and_then(|p| p.parent())
        .expect("the cluster folder")
        .to_owned();
    drop(cluster);
    assert!(!root.exists(), "{} is removed", root.display());
}
