//! The deployment files against the binaries: every Kubernetes manifest parses, every service
//! has its Deployment (two replicas, probes on the endpoints the binaries serve, resources),
//! Service and disruption budget, the migration job runs `callbackd migrate`, every setting
//! the manifests and the compose file give is one the binaries read (no misspelt name), and
//! every setting a deployment needs is given.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use callback_kit::config::is_variable;
use callback_kit::ServiceKind;
use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn base() -> Vec<(String, Value)> {
    let dir = deploy().join("k8s/base");
    let kustomization = &documents(&dir.join("kustomization.yaml"))[0];
    let listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    // Every manifest in the folder is listed, and every listed one exists.
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        present,
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        "kustomization resources"
    );
    listed
        .iter()
        .flat_map(|file| {
            documents(&dir.join(file))
                .into_iter()
                .map(move |d| (file.clone(), d))
        })
        .collect()
}

fn of_kind<'a>(manifests: &'a [(String, Value)], kind: &str) -> BTreeMap<String, &'a Value> {
    manifests
        .iter()
        .filter(|(_, m)| m["kind"] == kind)
        .map(|(_, m)| (m["metadata"]["name"].as_str().unwrap().to_owned(), m))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_match_the_binaries() {
    let manifests = base();
    let config = of_kind(&manifests, "ConfigMap");
    let config = &config["callback-config"]["data"];
    let settings: BTreeMap<String, String> = config
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .unwrap_or_else(|| panic!("{k}: quote it"))
                    .to_owned(),
            )
        })
        .collect();
    for key in settings.keys() {
        assert!(
            is_variable(key),
            "config.yaml sets {key}, which no binary reads"
        );
    }
    // The secrets the overlay generates, by name and key.
    let overlay = &documents(&deploy().join("k8s/overlays/trial/kustomization.yaml"))[0];
    assert!(strings(&overlay["resources"]).contains(&"../../base".to_owned()));
    let mut secret_keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for generator in overlay["secretGenerator"].as_array().unwrap() {
        let name = generator["name"].as_str().unwrap().to_owned();
        let keys = strings(&generator["literals"])
            .iter()
            .map(|l| l.split('=').next().unwrap().to_owned())
            .chain(
                strings(&generator["files"])
                    .iter()
                    .map(|f| f.rsplit('/').next().unwrap().to_owned()),
            )
            .collect();
        secret_keys.insert(name, keys);
    }
    for key in &secret_keys["callback-database"] {
        assert!(
            is_variable(key),
            "the database secret sets {key}, which no binary reads"
        );
    }
    // What a deployment needs.
    let mut needed: Vec<String> = [
        "CALLBACK_MASTER_KEY_FILE",
        "CALLBACK_TLS_CERT",
        "CALLBACK_TLS_KEY",
        "CALLBACK_TLS_CA",
        "CALLBACK_JWKS_FILE",
        "CALLBACK_JWT_ISSUER",
        "CALLBACK_METRICS_ADDR",
        "CALLBACK_MLLP_ADDR",
        "CALLBACK_INTEGRATION_HTTP_ADDR",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for kind in ServiceKind::ALL {
        needed.push(kind.addr_var());
        needed.push(kind.url_var());
    }
    for key in &needed {
        assert!(settings.contains_key(key), "config.yaml lacks {key}");
    }
    for key in ["DATABASE_URL", "CALLBACK_MIGRATION_DATABASE_URL"] {
        assert!(
            secret_keys["callback-database"].contains(key),
            "the database secret lacks {key}"
        );
    }
    // Files named by settings are in a mounted secret under the path given.
    let mounts: BTreeMap<&str, &str> = [
        ("/etc/callback/credentials/", "callback-credentials"),
        ("/etc/callback/keys/", "callback-keys"),
    ]
    .into_iter()
    .collect();
    for (key, value) in &settings {
        if let Some((dir, secret)) = mounts.iter().find(|(dir, _)| value.starts_with(**dir)) {
            let file = &value[dir.len()..];
            assert!(
                secret_keys[*secret].contains(file),
                "{key} names {value}, not in secret {secret}"
            );
        }
    }

    let deployments = of_kind(&manifests, "Deployment");
    let services = of_kind(&manifests, "Service");
    let budgets = of_kind(&manifests, "PodDisruptionBudget");
    let metrics_port: u16 = settings["CALLBACK_METRICS_ADDR"]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for kind in ServiceKind::ALL {
        let name = kind.name();
        let deployment = deployments
            .get(name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        assert!(services.contains_key(name), "no Service {name}");
        assert!(budgets.contains_key(name), "no PodDisruptionBudget {name}");
        let spec = &deployment["spec"];
        // One until several instances of a service are safe (issue 19), then two.
        assert!(spec["replicas"].as_u64().unwrap() >= 1, "{name}: replicas");
        let container = &spec["template"]["spec"]["containers"][0];
        assert_eq!(
            strings(&container["command"]),
            vec![format!("callback-{name}")],
            "{name}: command"
        );
        let sources: Vec<&str> = container["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["configMapRef"]["name"]
                    .as_str()
                    .or(s["secretRef"]["name"].as_str())
                    .unwrap()
            })
            .collect();
        assert_eq!(
            sources,
            vec!["callback-config", "callback-database"],
            "{name}: envFrom"
        );
        for env in container["env"].as_array().into_iter().flatten() {
            let key = env["name"].as_str().unwrap();
            assert!(is_variable(key), "{name} sets {key}, which no binary reads");
        }
        let ports: BTreeMap<String, u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        let grpc_port: u64 = settings[&kind.addr_var()]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            ports["grpc"], grpc_port,
            "{name}: the gRPC port is the configured one"
        );
        assert_eq!(
            ports["metrics"],
            u64::from(metrics_port),
            "{name}: metrics port"
        );
        let readiness = &container["readinessProbe"]["httpGet"];
        assert_eq!(
            (readiness["path"].as_str(), readiness["port"].as_str()),
            (Some("/readyz"), Some("metrics"))
        );
        let liveness = strings(&container["livenessProbe"]["exec"]["command"]);
        assert_eq!(liveness[..2], ["callbackd".to_owned(), "health".to_owned()]);
        assert!(
            liveness[2].ends_with(&format!(":{grpc_port}")),
            "{name}: liveness asks its own port"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{name}: cpu request"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
        let mounted: BTreeSet<String> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["mountPath"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches('/')
                    .to_owned()
                    + "/"
            })
            .collect();
        for dir in mounts.keys() {
            assert!(mounted.contains(*dir), "{name}: {dir} is not mounted");
        }
        if kind == ServiceKind::IntegrationGateway {
            for (port, variable) in [
                ("mllp", "CALLBACK_MLLP_ADDR"),
                ("http", "CALLBACK_INTEGRATION_HTTP_ADDR"),
            ] {
                let configured: u64 = settings[variable]
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(ports[port], configured, "gateway {port} port");
            }
        }
    }
    let jobs = of_kind(&manifests, "Job");
    let job = &jobs["callback-migrate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(strings(&job["command"]), vec!["callbackd", "migrate"]);
    assert!(!of_kind(&manifests, "NetworkPolicy").is_empty());
}

/// The keys of every `environment` mapping anywhere in `value` (through YAML merge keys too).
fn environment_keys(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "environment" {
                    for (name, inner) in child.as_object().into_iter().flatten() {
                        if name == "<<" {
                            environment_keys(&serde_json::json!({"environment": inner}), out);
                        } else {
                            out.insert(name.clone());
                        }
                    }
                } else {
                    environment_keys(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| environment_keys(item, out)),
        _ => {}
    }
}

#[test]
fn the_compose_file_sets_only_settings_the_binaries_read() {
    let mut compose = documents(&deploy().join("compose.yaml")).remove(0);
    // PostgreSQL's own settings are not ours.
    compose["services"]
        .as_object_mut()
        .unwrap()
        .remove("postgres");
    let mut keys = BTreeSet::new();
    environment_keys(&compose, &mut keys);
    assert!(keys.len() > 10, "{keys:?}");
    for key in &keys {
        assert!(
            is_variable(key),
            "the compose file sets {key}, which no binary reads"
        );
    }
    for kind in ServiceKind::ALL {
        assert!(
            keys.contains(&kind.url_var()),
            "the compose file lacks {}",
            kind.url_var()
        );
    }
}
