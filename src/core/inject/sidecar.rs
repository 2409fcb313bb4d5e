//! The containers and volumes the injector adds: the same tracker sidecar, installer and
//! token volume that `manifests/sidecar/job.yaml` and `job-with-run.yaml` spell out by hand.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
    DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::core::inject::settings::Sidecar;

/// The tracker's container.
pub const TRACKER: &str = "tracker";
/// The init container that copies the program for `run`.
pub const INSTALLER: &str = "install-run";
/// The volume with the tracker's service-account token.
pub const API_VOLUME: &str = "tracker-api-access";
/// The volume with the program, for `run`.
pub const PROGRAM_VOLUME: &str = "tracker-program";
/// Where the pod's containers find the program: `/opt/pod-webhook-tracker/pod-webhook-tracker run -- …`.
pub const PROGRAM_DIR: &str = "/opt/pod-webhook-tracker";
/// The name of the tracker's admin port.
pub const ADMIN_PORT_NAME: &str = "tracker-admin";
/// Where a container's service-account token is expected.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The variable that tells the pod's containers where their tracker is.
pub const TRACKER_URL: &str = "TRACKER_URL";
/// The program's path in its image.
const PROGRAM: &str = "/pod-webhook-tracker";
/// The user the image runs as (distroless `nonroot`).
const NONROOT: i64 = 65532;

/// The counting API's URL for the pod's containers.
pub fn tracker_url(sidecar: &Sidecar) -> String {
    format!("http://127.0.0.1:{}", sidecar.port)
}

/// The tracker: a native sidecar (an init container with `restartPolicy: Always`).
pub fn tracker(sidecar: &Sidecar) -> Container {
    let mut args = vec![
        "serve".to_owned(),
        format!("--admin-address=0.0.0.0:{}", sidecar.admin_port),
    ];
    if sidecar.port != 8080 {
        args.push(format!("--address=127.0.0.1:{}", sidecar.port));
    }
    if sidecar.label != "active-jobs" {
        args.push(format!("--label={}", sidecar.label));
    }
    args.push(format!("--max-job-duration={}", sidecar.max_job_duration));
    if let Some(annotation) = sidecar.autoscaler.active_annotation() {
        args.push(format!("--active-annotation={annotation}"));
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: TRACKER.to_owned(),
        image: Some(sidecar.image.clone()),
        restart_policy: Some("Always".to_owned()),
        command: Some(vec![PROGRAM.to_owned()]),
        args: Some(args),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_owned()),
            container_port: i32::from(sidecar.admin_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/readyz", 1, 60)),
        readiness_probe: Some(probe("/readyz", 10, 3)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(resources(sidecar)),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![VolumeMount {
            name: API_VOLUME.to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The installer: a regular init container that copies the program into the program volume.
pub fn installer(sidecar: &Sidecar) -> Container {
    Container {
        name: INSTALLER.to_owned(),
        image: Some(sidecar.image.clone()),
        command: Some(vec![PROGRAM.to_owned()]),
        args: Some(vec!["install".to_owned(), PROGRAM_DIR.to_owned()]),
        resources: Some(resources(sidecar)),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![program_mount(false)]),
        ..Container::default()
    }
}

/// The program volume as the pod's containers mount it (read-only), or the installer (to write).
pub fn program_mount(read_only: bool) -> VolumeMount {
    VolumeMount {
        name: PROGRAM_VOLUME.to_owned(),
        mount_path: PROGRAM_DIR.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// What the automatic `kube-api-access` volume would hold, for the tracker alone.
pub fn api_volume() -> Volume {
    Volume {
        name: API_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3607),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: "metadata.namespace".to_owned(),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The emptyDir the installer fills with the program.
pub fn program_volume() -> Volume {
    Volume {
        name: PROGRAM_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// `TRACKER_URL` for the pod's containers.
pub fn url_env(sidecar: &Sidecar) -> EnvVar {
    EnvVar {
        name: TRACKER_URL.to_owned(),
        value: Some(tracker_url(sidecar)),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn resources(sidecar: &Sidecar) -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(&[
            ("cpu", &sidecar.cpu_request),
            ("memory", &sidecar.memory_request),
        ])),
        limits: Some(quantities(&[("memory", &sidecar.memory_limit)])),
        ..ResourceRequirements::default()
    }
}

/// The restricted Pod Security Standard, as every container of the tracker's manifests has it.
fn restricted() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT),
        run_as_group: Some(NONROOT),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}
