//! The deployment artefacts under `deploy/` are checked as their tools check them: the
//! systemd units by `systemd-analyze verify` (unknown keys, bad values, a command that
//! cannot run) and `systemd-analyze security --offline` (how much of the host a unit
//! exposes), with the binary path pointed at the binary this build made.

mod common;

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = ["hale-agent", "hale-collector", "hale-healer"];

/// The units as shipped, but running this build's `hale`, in `dir`.
fn units_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let hale = env!("CARGO_BIN_EXE_hale");
    UNITS
        .iter()
        .map(|unit| {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/systemd/{unit}.service"));
            let text = std::fs::read_to_string(&shipped).expect("unit");
            assert!(text.contains("ExecStart=/usr/local/bin/hale"), "{unit}: installed as README says");
            let text =
                text.replace("/usr/local/bin/hale-agent", hale).replace("/usr/local/bin/hale ", &format!("{hale} "));
            common::file(dir, &format!("{unit}.service"), &text)
        })
        .collect()
}

#[test]
fn the_systemd_units_verify_and_expose_little() {
    let analyze = common::need("systemd-analyze");
    let dir = tempfile::tempdir().expect("tmp");
    let units = units_in(dir.path());
    let out = Command::new(&analyze).args(["verify", "--man=no"]).args(&units).output().expect("verify");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for unit in &units {
        let out = Command::new(&analyze).args(["security", "--offline=yes"]).arg(unit).output().expect("security");
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr)));
        assert!(level <= 2.5, "{}: exposure {level} (hardening lost?)\n{text}", unit.display());
    }
}

// ------------------------------------------------------------------ Kubernetes

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

fn kubernetes_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of a multi-document YAML text, as JSON values.
fn documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `doc` as the Kubernetes type its `kind` names and checks that nothing was lost
/// on the way (a misspelt field would be): the typed value written back is the document.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &serde_json::Value) -> T {
    let value: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]));
    let back = serde_json::to_value(&value).expect("json");
    if let Err(at) = kept(&back, doc, "") {
        panic!("{} {}: {at} is not a field of Kubernetes's", doc["kind"], doc["metadata"]["name"]);
    }
    value
}

/// Whether everything in `doc` is in `back` as written; `back` may add only the
/// `apiVersion` and `kind` the types fill in (a volume claim template's). `Err`: where not.
fn kept(back: &serde_json::Value, doc: &serde_json::Value, at: &str) -> Result<(), String> {
    use serde_json::Value;
    match (back, doc) {
        (Value::Object(b), Value::Object(d)) => {
            for (k, v) in d {
                let path = format!("{at}.{k}");
                kept(b.get(k).ok_or_else(|| path.clone())?, v, &path)?;
            }
            match b.keys().find(|k| !d.contains_key(*k) && *k != "apiVersion" && *k != "kind") {
                Some(extra) => Err(format!("{at}.{extra} (added)")),
                None => Ok(()),
            }
        }
        (Value::Array(b), Value::Array(d)) if b.len() == d.len() => {
            b.iter().zip(d).enumerate().try_for_each(|(i, (b, d))| kept(b, d, &format!("{at}[{i}]")))
        }
        (b, d) if b == d => Ok(()),
        _ => Err(at.to_string()),
    }
}

#[derive(Default)]
struct Manifests {
    pods: Vec<(String, PodSpec, std::collections::BTreeMap<String, String>)>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    policies: Vec<NetworkPolicy>,
    config_maps: Vec<ConfigMap>,
    accounts: Vec<ServiceAccount>,
    daemon_sets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
    roles: Vec<k8s_openapi::api::rbac::v1::ClusterRole>,
    role_bindings: Vec<k8s_openapi::api::rbac::v1::RoleBinding>,
    cluster_role_bindings: Vec<k8s_openapi::api::rbac::v1::ClusterRoleBinding>,
}

fn read_manifests(docs: &[serde_json::Value]) -> Manifests {
    let mut m = Manifests::default();
    let pod = |name: &str, spec: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
        let spec = spec.expect("a pod template");
        let labels = spec.metadata.as_ref().and_then(|md| md.labels.clone()).unwrap_or_default();
        (name.to_string(), spec.spec.expect("a pod spec"), labels)
    };
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match doc["kind"].as_str().unwrap_or_default() {
            "Namespace" => drop(typed::<Namespace>(doc)),
            "ClusterRole" => m.roles.push(typed(doc)),
            "RoleBinding" => m.role_bindings.push(typed(doc)),
            "ClusterRoleBinding" => m.cluster_role_bindings.push(typed(doc)),
            "ServiceAccount" => m.accounts.push(typed(doc)),
            "ConfigMap" => m.config_maps.push(typed(doc)),
            "Service" => m.services.push(typed(doc)),
            "PodDisruptionBudget" => m.pdbs.push(typed(doc)),
            "NetworkPolicy" => m.policies.push(typed(doc)),
            "StatefulSet" => {
                let s: StatefulSet = typed(doc);
                m.pods.push(pod(&name, s.spec.map(|s| s.template)));
            }
            "Deployment" => {
                let d: Deployment = typed(doc);
                m.pods.push(pod(&name, d.spec.clone().map(|s| s.template)));
                m.deployments.push(d);
            }
            "DaemonSet" => {
                let d: DaemonSet = typed(doc);
                m.pods.push(pod(&name, d.spec.clone().map(|s| s.template)));
                m.daemon_sets.push(d);
            }
            other => panic!("{name}: no check knows kind {other}"),
        }
    }
    m
}

#[test]
fn the_kubernetes_manifests_are_kubernetes_objects_that_keep_their_promises() {
    let dir = kubernetes_dir();
    let kustomization: serde_json::Value =
        documents(&std::fs::read_to_string(dir.join("kustomization.yaml")).expect("kustomization")).remove(0);
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_string())
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    listed.sort();
    files.sort();
    assert_eq!(listed, files, "the kustomization lists every manifest");
    let docs: Vec<serde_json::Value> =
        files.iter().flat_map(|f| documents(&std::fs::read_to_string(dir.join(f)).expect("manifest"))).collect();
    let m = read_manifests(&docs);

    // Every pod: not root, nothing to escalate to, a read-only root, no API token (but the
    // healer's, whose rights are rbac.yaml's), limits.
    for (name, spec, _) in &m.pods {
        let token = name == "hale-healer" || name == "hale-agent";
        assert_eq!(
            spec.automount_service_account_token,
            Some(token),
            "{name}: an API token for the healer and agents only"
        );
        let pod_non_root = spec.security_context.as_ref().and_then(|s| s.run_as_non_root) == Some(true);
        for c in &spec.containers {
            let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{name}/{}: a securityContext", c.name));
            assert!(pod_non_root || sc.run_as_non_root == Some(true), "{name}/{}: runs as non-root", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}/{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}/{}", c.name);
            let drops = sc.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
            assert_eq!(drops, ["ALL"], "{name}/{}: drops every capability", c.name);
            let resources = c.resources.as_ref().unwrap_or_else(|| panic!("{name}/{}: resources", c.name));
            assert!(
                resources.requests.is_some() && resources.limits.is_some(),
                "{name}/{}: requests and limits",
                c.name
            );
            assert!(c.readiness_probe.is_some(), "{name}/{}: a readiness probe", c.name);
            // Secrets come from the Secrets the README tells the user to make, never inline.
            for env in c.env.iter().flatten() {
                let secretish = ["TOKEN", "SECRET"].iter().any(|s| env.name.contains(s));
                assert!(!secretish || env.value.is_none(), "{name}/{}: {} inline", c.name, env.name);
                if let Some(r) = env.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
                    assert_eq!(r.name, "hale-tokens", "{name}: {}", env.name);
                }
            }
        }
    }
    // The agent sees the host as node_exporter does, read-only.
    let agent = &m.daemon_sets[0].spec.as_ref().expect("spec").template;
    let agent_pod = agent.spec.as_ref().expect("pod");
    assert_eq!((agent_pod.host_pid, agent_pod.host_network), (Some(true), Some(true)));
    let container = &agent_pod.containers[0];
    for mount in container.volume_mounts.iter().flatten().filter(|v| v.mount_path.starts_with("/host")) {
        assert_eq!(mount.read_only, Some(true), "{} is read-only", mount.mount_path);
    }
    // Two healers, on etcd, with a budget that keeps one through a drain.
    let healer = m.deployments.iter().find(|d| d.metadata.name.as_deref() == Some("hale-healer")).expect("healer");
    let healer_spec = healer.spec.as_ref().expect("spec");
    assert_eq!(healer_spec.replicas, Some(2));
    let args = healer_spec.template.spec.as_ref().expect("pod").containers[0].args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a.starts_with("--etcd=")), "{args:?}");
    let pdb = m.pdbs.iter().find(|p| p.metadata.name.as_deref() == Some("hale-healer")).expect("pdb");
    let pdb_spec = pdb.spec.as_ref().expect("spec");
    assert_eq!(pdb_spec.min_available, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
    assert_eq!(
        pdb_spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
        healer_spec.selector.match_labels,
        "the budget covers the healers"
    );
    // Every Service reaches some pod; every ServiceAccount named exists; deny by default.
    for service in &m.services {
        let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector");
        assert!(
            m.pods.iter().any(|(_, _, labels)| selector.iter().all(|(k, v)| labels.get(k) == Some(v))),
            "{:?} selects no pod",
            service.metadata.name
        );
    }
    for (name, spec, _) in &m.pods {
        if let Some(account) = &spec.service_account_name {
            assert!(m.accounts.iter().any(|a| a.metadata.name.as_ref() == Some(account)), "{name}: {account}");
        }
    }
    // The API rights go to the healer's account only, and name roles that exist.
    let subjects = m.role_bindings.iter().flat_map(|b| b.subjects.iter().flatten().map(move |s| (s, &b.role_ref)));
    let cluster_subjects =
        m.cluster_role_bindings.iter().flat_map(|b| b.subjects.iter().flatten().map(move |s| (s, &b.role_ref)));
    for (subject, role) in subjects.chain(cluster_subjects) {
        assert_eq!(subject.kind, "ServiceAccount");
        assert!(role.name.starts_with(&subject.name), "{} is bound to {}", subject.name, role.name);
        assert!(m.roles.iter().any(|r| r.metadata.name.as_ref() == Some(&role.name)), "{}", role.name);
    }
    // The agents' rights are exactly what their pod discovery calls.
    let agent_rules: std::collections::BTreeSet<(String, String, String)> = m
        .roles
        .iter()
        .filter(|r| r.metadata.name.as_deref().is_some_and(|n| n.starts_with("hale-agent")))
        .flat_map(|r| r.rules.iter().flatten())
        .flat_map(|rule| {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            groups.into_iter().flat_map(move |g| {
                let verbs = rule.verbs.clone();
                resources.clone().into_iter().flat_map(move |r| {
                    let g = g.clone();
                    verbs.clone().into_iter().map(move |v| (g.clone(), r.clone(), v))
                })
            })
        })
        .collect();
    let used: std::collections::BTreeSet<(String, String, String)> = hale_agent::kubernetes_sd::RBAC
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert_eq!(agent_rules, used, "rbac.yaml's hale-agent-pods and hale_agent::kubernetes_sd::RBAC");
    let deny = m.policies.iter().find(|p| p.metadata.name.as_deref() == Some("default-deny-ingress")).expect("deny");
    assert_eq!(deny.spec.as_ref().expect("spec").pod_selector, Some(Default::default()), "every pod of the namespace");
    // The round trip catches what serde alone would let through: a misspelt field.
    let typo = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"selectr": {"app": "x"}}});
    let parsed: Service = serde_json::from_value(typo.clone()).expect("serde takes it");
    assert_eq!(kept(&serde_json::to_value(&parsed).expect("json"), &typo, ""), Err(".spec.selectr".into()));
    // The collector's rules and the healer's policies in the ConfigMap pass Hale's checks.
    let config = m.config_maps.iter().find(|c| c.metadata.name.as_deref() == Some("hale-config")).expect("config");
    let data = config.data.clone().expect("data");
    let tmp = tempfile::tempdir().expect("tmp");
    hale_agent::config::AgentConfig::parse(&data["agent.toml"]).expect("the agents' agent.toml");
    for file in ["rules.yml", "policies.yaml", "healer.toml"] {
        common::file(tmp.path(), file, &data[file]);
    }
    let hale = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hale")).args(args).current_dir(tmp.path()).output().expect("hale");
        assert!(out.status.success(), "hale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    hale(&["rules", "check", "rules.yml"]);
    hale(&["policies", "check", "--inventory", "healer.toml", "policies.yaml"]);

    // kubectl, where it is installed, renders the kustomization to the same objects.
    if let Ok(out) = Command::new("kubectl").args(["kustomize"]).arg(&dir).output() {
        assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
        let rendered = documents(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(rendered.len(), docs.len(), "every object rendered");
        read_manifests(&rendered);
    } else {
        eprintln!("kubectl is not installed: the kustomization is checked by parsing only");
    }
}

#[test]
fn the_container_image_and_compose_file_keep_their_promises() {
    let docker = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker");
    let dockerfile = std::fs::read_to_string(docker.join("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a small runtime stage: {stages:?}");
    let runtime = &dockerfile[dockerfile.rfind("FROM ").expect("runtime")..];
    let user = runtime.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as an unprivileged user: {user}");
    assert!(runtime.contains("HEALTHCHECK"), "a health check");
    let copied: Vec<&str> = runtime.lines().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(copied, ["COPY --from=build /src/target/release/hale /usr/local/bin/hale"], "one binary");

    let compose: serde_json::Value =
        documents(&std::fs::read_to_string(docker.join("compose.yaml")).expect("compose")).remove(0);
    let services = compose["services"].as_object().expect("services");
    for name in ["collector", "healer", "agent-1", "agent-2", "prometheus"] {
        assert!(services.contains_key(name), "{name}");
    }
    for (name, service) in services {
        for (key, value) in service["environment"].as_object().into_iter().flatten() {
            if key.contains("TOKEN") || key.contains("SECRET") {
                let v = value.as_str().unwrap_or_default();
                assert!(v.starts_with("${") && v.contains(":?"), "{name}: {key} comes from .env, never inline");
            }
        }
        for volume in service["volumes"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
            if let Some(file) = volume.strip_prefix("./") {
                let file = file.split(':').next().expect("path");
                assert!(docker.join(file).exists(), "{name}: {file} is shipped");
            }
        }
    }
    let hale = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hale")).args(args).current_dir(&docker).output().expect("hale");
        assert!(out.status.success(), "hale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    hale(&["rules", "check", "rules.yml"]);
    hale(&["policies", "check", "--inventory", "healer.toml", "policies.yaml"]);
}
