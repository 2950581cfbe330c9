//! The objects a `ModelDeployment` owns: the serving pods' Deployment and their Service. Pure
//! functions of the resource, applied with server-side apply, so re-applying them is a no-op.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::ModelDeployment;

/// The port serving listens on inside the pod, and the Service's port.
pub const SERVING_PORT: i32 = 8080;

/// The label naming the owning `ModelDeployment` on children and pods.
pub const OWNER_LABEL: &str = "ferry.dev/model-deployment";

/// `app.kubernetes.io/managed-by` on every child: the operator watches only these.
pub const MANAGED_BY: &str = "ferry-operator";

/// Where serving keeps downloaded models (an `emptyDir`: the root filesystem is read-only).
const CACHE_DIR: &str = "/var/cache/ferry";

/// How long a terminating serving pod keeps accepting before it drains (`--shutdown-delay`).
const SHUTDOWN_DELAY: &str = "5s";

/// Where the tokens file of `spec.auth.tokensSecret` is mounted.
const TOKENS_DIR: &str = "/etc/ferry/tokens";

/// The unprivileged user serving runs as (the conventional non-root id of minimal images).
const SERVING_UID: i64 = 65532;

/// Why a child cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    /// The resource has no name, namespace or uid yet (it was never stored).
    #[error("the ModelDeployment has no {0} yet")]
    Missing(&'static str),
}

/// Labels on the Deployment, the Service and the pods.
pub fn labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    let name = md.name_any();
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "ferry-serving".into()),
        ("app.kubernetes.io/instance".into(), name.clone()),
        ("app.kubernetes.io/component".into(), "serving".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
        (OWNER_LABEL.into(), name),
    ])
}

/// What selects the pods (immutable on a Deployment, so it never changes).
pub fn selector(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/component".into(), "serving".into()),
        (OWNER_LABEL.into(), md.name_any()),
    ])
}

fn metadata(md: &ModelDeployment) -> Result<ObjectMeta, ChildError> {
    let owner = md
        .controller_owner_ref(&())
        .ok_or(ChildError::Missing("uid"))?;
    // Foreground deletion of the resource waits for its children.
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..owner
    };
    Ok(ObjectMeta {
        name: Some(md.meta().name.clone().ok_or(ChildError::Missing("name"))?),
        namespace: Some(md.namespace().ok_or(ChildError::Missing("namespace"))?),
        labels: Some(labels(md)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The Redis stores the serving pods share, as the operator was told.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stores<'a> {
    /// The prediction index for joining feedback at any replica.
    pub feedback: Option<&'a str>,
    /// The online feature store.
    pub features: Option<&'a str>,
}

/// The Deployment of serving pods: `ferry serving --registry <url> --endpoint <name>`, the
/// tokens its clients present from `spec.auth.tokensSecret` (a file the kubelet mounts), its
/// registry token from `spec.registry.servingTokenSecret` (never the operator's), probes on the Open Inference Protocol's health routes,
/// the spec's resources, and a locked-down non-root container. `default_image` is used when the
/// spec names none; `stores.feedback`, the Redis the pods share for joining feedback at any
/// replica, reaches them as `FERRY_FEEDBACK_STORE`, and `stores.features`, the online feature
/// store, as `FERRY_FEATURE_STORE`.
///
/// # Errors
/// [`ChildError`] for a resource that was never stored.
pub fn deployment(
    md: &ModelDeployment,
    default_image: &str,
    stores: Stores<'_>,
) -> Result<Deployment, ChildError> {
    let name = md.name_any();
    let spec = &md.spec;
    let image = spec.image.clone().unwrap_or_else(|| default_image.into());
    let mut env = vec![EnvVar {
        name: "FERRY_LOG_FORMAT".into(),
        value: Some("json".into()),
        ..EnvVar::default()
    }];
    for (name, url) in [
        ("FERRY_FEEDBACK_STORE", stores.feedback),
        ("FERRY_FEATURE_STORE", stores.features),
    ] {
        if let Some(url) = url {
            env.push(EnvVar {
                name: name.into(),
                value: Some(url.into()),
                ..EnvVar::default()
            });
        }
    }
    if let Some(secret) = &spec.registry.serving_token_secret {
        env.push(EnvVar {
            name: "FERRY_REGISTRY_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let container = Container {
        name: "serving".into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["ferry".into()]),
        args: Some(vec![
            "serving".into(),
            "--registry".into(),
            spec.registry.url.clone(),
            "--endpoint".into(),
            name,
            "--listen".into(),
            format!("0.0.0.0:{SERVING_PORT}"),
            "--cache-dir".into(),
            CACHE_DIR.into(),
            "--tokens-file".into(),
            format!("{TOKENS_DIR}/tokens"),
            // A deleted pod leaves the Service's endpoints asynchronously: keep accepting
            // until kube-proxy has stopped sending, then drain (within the 30 s grace period).
            "--shutdown-delay".into(),
            SHUTDOWN_DELAY.into(),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: SERVING_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Ready only once the endpoint's versions are loaded and warmed up.
        readiness_probe: Some(probe("/v2/health/ready", 5, 3)),
        // Live as long as the server answers; loading a big model must not get it killed.
        liveness_probe: Some(probe("/v2/health/live", 10, 6)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "cache".into(),
                mount_path: CACHE_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tokens".into(),
                mount_path: TOKENS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    Ok(Deployment {
        metadata: metadata(md)?,
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(md)),
                ..LabelSelector::default()
            },
            // A new pod is ready before an old one goes: serving never drops below replicas.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(md)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // Serving talks to the registry, never to the Kubernetes API.
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(SERVING_UID),
                        run_as_group: Some(SERVING_UID),
                        fs_group: Some(SERVING_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![
                        empty_dir("cache"),
                        empty_dir("tmp"),
                        Volume {
                            name: "tokens".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(spec.auth.tokens_secret.name.clone()),
                                // Owner root, group fsGroup: readable by serving's user only.
                                default_mode: Some(0o440),
                                items: Some(vec![KeyToPath {
                                    key: spec.auth.tokens_secret.key.clone(),
                                    path: "tokens".into(),
                                    ..KeyToPath::default()
                                }]),
                                optional: Some(false),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// The Service in front of the serving pods: `http://<name>.<namespace>.svc:8080`.
///
/// # Errors
/// [`ChildError`] for a resource that was never stored.
pub fn service(md: &ModelDeployment) -> Result<Service, ChildError> {
    Ok(Service {
        metadata: metadata(md)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(md)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVING_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> ModelDeployment {
        let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "1234-abcd"},
            "spec": {
                "model": "fraud",
                "alias": "production",
                "replicas": 3,
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "registry": {
                    "url": "http://ferry-registry.ferry.svc:8080",
                    "tokenSecret": {"name": "ferry-tokens", "key": "write"},
                    "servingTokenSecret": {"name": "ferry-tokens", "key": "serving"}
                },
                "auth": {"tokensSecret": {"name": "ferry-tokens", "key": "serving-tokens"}}
            }
        }))
        .unwrap();
        md.spec.image = None;
        md
    }

    #[test]
    fn the_pods_get_the_shared_stores_when_the_operator_has_them() {
        let env = |store: Option<&str>| {
            let stores = Stores {
                feedback: store,
                features: store.map(|_| "redis://features:6379/1"),
            };
            let d = deployment(&md(), "ferry:test", stores).unwrap();
            let pod = d.spec.template.spec.unwrap();
            pod.containers[0].env.clone().unwrap_or_default()
        };
        let with = env(Some("redis://redis.ferry.svc:6379/0"));
        let store = with
            .iter()
            .find(|e| e.name == "FERRY_FEEDBACK_STORE")
            .unwrap();
        assert_eq!(
            store.value.as_deref(),
            Some("redis://redis.ferry.svc:6379/0")
        );
        let features = with
            .iter()
            .find(|e| e.name == "FERRY_FEATURE_STORE")
            .unwrap();
        assert_eq!(features.value.as_deref(), Some("redis://features:6379/1"));
        assert!(env(None).iter().all(|e| !e.name.ends_with("_STORE")));
    }

    #[test]
    fn the_deployment_runs_serving_for_the_endpoint_with_the_pods_tokens_never_the_operators() {
        let d = deployment(&md(), "ferry:test", Stores::default()).unwrap();
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("ModelDeployment", "fraud", "1234-abcd", Some(true))
        );
        assert_eq!(owner.api_version, "ferry.dev/v1alpha1");
        assert_eq!(d.metadata.namespace.as_deref(), Some("ml"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ferry:test"));
        assert_eq!(
            c.args.as_ref().unwrap()[..5],
            [
                "serving",
                "--registry",
                "http://ferry-registry.ferry.svc:8080",
                "--endpoint",
                "fraud"
            ]
        );
        let token = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "FERRY_REGISTRY_TOKEN")
            .unwrap();
        let secret = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("ferry-tokens", "serving")
        );
        assert!(token.value.is_none(), "the token never appears in the spec");
        // Clients are checked against the tokens file of spec.auth, mounted read-only.
        let args = c.args.as_ref().unwrap();
        let at = args.iter().position(|a| a == "--tokens-file").unwrap();
        assert_eq!(args[at + 1], "/etc/ferry/tokens/tokens");
        let at = args.iter().position(|a| a == "--shutdown-delay").unwrap();
        assert_eq!(args[at + 1], "5s");
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "tokens")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/ferry/tokens", Some(true))
        );
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "tokens")
            .unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("ferry-tokens"));
        let items = source.items.as_ref().unwrap();
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("serving-tokens", "tokens")
        );
        assert_eq!(source.default_mode, Some(0o440));
        // The operator's write token never reaches the pods.
        let text = serde_json::to_string(&pod).unwrap();
        assert!(!text.contains("\"write\""), "{text}");
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(
            path(&c.readiness_probe).as_deref(),
            Some("/v2/health/ready")
        );
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/v2/health/live"));
        assert_eq!(c.resources, md().spec.resources);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(SERVING_UID));
        // The selector is a subset of the pod labels.
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v), "{k}");
        }
    }

    #[test]
    fn the_spec_image_wins_and_no_serving_secret_means_no_token_variable() {
        let mut md = md();
        md.spec.image = Some("registry.example/ferry:1.2".into());
        md.spec.registry.serving_token_secret = None;
        let d = deployment(&md, "ferry:test", Stores::default()).unwrap();
        let c = &d.spec.template.spec.unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.example/ferry:1.2"));
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.name != "FERRY_REGISTRY_TOKEN")
        );
    }

    #[test]
    fn the_service_selects_the_serving_pods_on_the_http_port() {
        let s = service(&md()).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("fraud"));
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].uid,
            "1234-abcd"
        );
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), selector(&md()));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, SERVING_PORT);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    }

    #[test]
    fn a_resource_never_stored_has_no_children() {
        let mut md = md();
        md.metadata.uid = None;
        assert_eq!(
            deployment(&md, "x", Stores::default()).unwrap_err(),
            ChildError::Missing("uid")
        );
    }
}
