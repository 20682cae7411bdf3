//! The workspace as `cargo metadata` sees it: who may depend on whom (the layering of
//! `docs/ARCHITECTURE.md`), the toolchain the lock file really needs, and the licences of
//! everything that is built.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

const PURE: &[&str] = &["callback-calendar", "callback-contracts", "callback-rules"];
/// Crates a pure crate may not depend on: they do IO or carry a runtime.
const IO_CRATES: &[&str] = &["sqlx", "tokio", "tonic", "prost", "hyper", "reqwest"];
const SERVICES: &[&str] = &[
    "callback-scheduling",
    "callback-call-logging",
    "callback-complaint-routing",
    "callback-analytics",
    "callback-integration-gateway",
];

/// The internal crates each workspace member may depend on (normal and build dependencies;
/// dev-dependencies are free). `None`: anything (test and benchmark harnesses).
fn allowed(package: &str) -> Option<BTreeSet<&'static str>> {
    let service_deps = [
        "callback-calendar",
        "callback-contracts",
        "callback-eventstore",
        "callback-feed",
        "callback-host",
        "callback-kit",
        "callback-proto",
        "callback-rules",
        "callback-vault",
    ];
    let list: &[&'static str] = match package {
        "callback-calendar"
        | "callback-proto"
        | "callback-eventstore"
        | "callback-pgrunner"
        | "callback-vault"
        | "callback-rules" => &[],
        "callback-devpki" => &["callback-vault"],
        "callback-contracts" => &["callback-calendar"],
        "callback-testkit" => &["callback-pgrunner"],
        "callback-kit" => &[
            "callback-contracts",
            "callback-eventstore",
            "callback-proto",
            "callback-rules",
            "callback-vault",
        ],
        "callback-feed" => &[
            "callback-eventstore",
            "callback-kit",
            "callback-proto",
            "callback-rules",
        ],
        "callback-host" => &[
            "callback-eventstore",
            "callback-feed",
            "callback-kit",
            "callback-rules",
            "callback-vault",
        ],
        s if SERVICES.contains(&s) => &service_deps,
        "callbackd" => &[
            "callback-scheduling",
            "callback-call-logging",
            "callback-complaint-routing",
            "callback-analytics",
            "callback-integration-gateway",
            "callback-eventstore",
            "callback-feed",
            "callback-host",
            "callback-kit",
            "callback-pgrunner",
            "callback-devpki",
            "callback-rules",
            "callback-vault",
        ],
        "callback-tests" | "callback-bench" => return None,
        other => {
            panic!("{other} is a new workspace member: say in this test what it may depend on")
        }
    };
    Some(list.iter().copied().collect())
}

fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn workspace_members(meta: &Value) -> Vec<&Value> {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .collect()
}

/// The packages the resolved graph builds for this platform.
fn resolved_packages(meta: &Value) -> Vec<&Value> {
    let ids: BTreeSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().unwrap()))
        .collect()
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let meta = metadata();
    let members = workspace_members(&meta);
    let names: BTreeSet<&str> = members
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut faults = Vec::new();
    for package in &members {
        let name = package["name"].as_str().unwrap();
        let deps: Vec<(&str, bool)> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| {
                let dep = d["name"].as_str().unwrap();
                (dep, names.contains(dep))
            })
            .collect();
        if let Some(allowed) = allowed(name) {
            for (dep, internal) in &deps {
                if *internal && !allowed.contains(dep) {
                    faults.push(format!("{name} may not depend on {dep}"));
                }
            }
        }
        if PURE.contains(&name) {
            for (dep, _) in &deps {
                if IO_CRATES.contains(dep) {
                    faults.push(format!("{name} is pure and may not depend on {dep}"));
                }
            }
        }
        let path = package["manifest_path"].as_str().unwrap();
        if path.contains("/crates/") {
            for (dep, _) in &deps {
                if SERVICES.contains(dep) || *dep == "callbackd" || *dep == "callback-bench" {
                    faults.push(format!("{name} (in crates/) may not depend on {dep}"));
                }
            }
        }
    }
    assert!(faults.is_empty(), "layering broken:\n{}", faults.join("\n"));
}

/// `1.89` and `1.89.0` are the same version.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text.split('.').map(|part| part.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn the_declared_rust_version_is_what_the_lock_file_needs() {
    let meta = metadata();
    let members = workspace_members(&meta);
    let declared: BTreeSet<&str> = members
        .iter()
        .map(|p| {
            p["rust_version"]
                .as_str()
                .expect("every member declares rust-version")
        })
        .collect();
    assert_eq!(
        declared.len(),
        1,
        "members declare different rust-versions: {declared:?}"
    );
    let declared = version(declared.first().unwrap());
    let mut newer = Vec::new();
    let mut highest = (Vec::new(), String::new());
    for package in resolved_packages(&meta) {
        let Some(needs) = package["rust_version"].as_str() else {
            continue;
        };
        let needs_version = version(needs);
        if needs_version > declared {
            newer.push(format!(
                "{} {} needs {needs}",
                package["name"], package["version"]
            ));
        }
        if needs_version > highest.0 {
            highest = (needs_version, needs.to_owned());
        }
    }
    assert!(
        newer.is_empty(),
        "the workspace says rust-version {declared:?}, but:\n{}",
        newer.join("\n")
    );
    // The declaration is not higher than needed either: it says what the lock file needs.
    assert_eq!(
        declared, highest.0,
        "rust-version could be {} (the highest any locked package needs)",
        highest.1
    );
}

/// Whether an SPDX expression can be satisfied with the allowed licences.
fn licence_allowed(expression: &str, allowed: &BTreeSet<String>) -> bool {
    // Old-style `MIT/Apache-2.0` means either.
    let expression = expression.replace('/', " OR ");
    let tokens: Vec<String> = expression
        .replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut at = 0;
    let ok = or_expression(&tokens, &mut at, allowed);
    ok && at == tokens.len()
}

fn or_expression(tokens: &[String], at: &mut usize, allowed: &BTreeSet<String>) -> bool {
    let mut ok = and_expression(tokens, at, allowed);
    while tokens.get(*at).map(String::as_str) == Some("OR") {
        *at += 1;
        let right = and_expression(tokens, at, allowed);
        ok = ok || right;
    }
    ok
}

fn and_expression(tokens: &[String], at: &mut usize, allowed: &BTreeSet<String>) -> bool {
    let mut ok = term(tokens, at, allowed);
    while tokens.get(*at).map(String::as_str) == Some("AND") {
        *at += 1;
        let right = term(tokens, at, allowed);
        ok = ok && right;
    }
    ok
}

fn term(tokens: &[String], at: &mut usize, allowed: &BTreeSet<String>) -> bool {
    match tokens.get(*at).map(String::as_str) {
        Some("(") => {
            *at += 1;
            let ok = or_expression(tokens, at, allowed);
            if tokens.get(*at).map(String::as_str) == Some(")") {
                *at += 1;
                ok
            } else {
                false
            }
        }
        Some(id) => {
            *at += 1;
            let ok = allowed.contains(id.trim_end_matches('+'));
            if tokens.get(*at).map(String::as_str) == Some("WITH") {
                // An exception only grants more; the base licence decides.
                *at += 2;
            }
            ok
        }
        None => false,
    }
}

#[test]
fn the_licence_checker_reads_spdx_expressions() {
    let allowed: BTreeSet<String> = ["MIT", "Apache-2.0", "Unicode-3.0"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert!(licence_allowed("MIT OR Apache-2.0", &allowed));
    assert!(licence_allowed("MIT/Apache-2.0", &allowed));
    assert!(licence_allowed(
        "(MIT OR Apache-2.0) AND Unicode-3.0",
        &allowed
    ));
    assert!(licence_allowed(
        "Apache-2.0 WITH LLVM-exception OR GPL-3.0",
        &allowed
    ));
    assert!(!licence_allowed("GPL-3.0", &allowed));
    assert!(!licence_allowed("MIT AND GPL-3.0", &allowed));
    assert!(!licence_allowed("(MIT", &allowed));
}

#[test]
fn every_locked_package_carries_an_allowed_licence() {
    let list =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/licenses-allowed.txt"))
            .unwrap();
    let allowed: BTreeSet<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let meta = metadata();
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for package in resolved_packages(&meta) {
        let name = format!("{} {}", package["name"], package["version"]);
        match package["license"].as_str() {
            Some(expression) if licence_allowed(expression, &allowed) => {
                *seen.entry(expression.to_owned()).or_default() += 1;
            }
            Some(expression) => refused.entry(expression.to_owned()).or_default().push(name),
            None => refused
                .entry("(no licence field)".into())
                .or_default()
                .push(name),
        }
    }
    assert!(
        refused.is_empty(),
        "licences outside tests/licenses-allowed.txt: {refused:#?}"
    );
    assert!(seen.len() > 3, "the licence scan read too little: {seen:?}");
}

/// Every `.rs` file under `tops` (relative to the workspace root), without `tests` folders
/// and build output, with its text.
fn rust_files(tops: &[&str]) -> Vec<(std::path::PathBuf, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for top in tops {
        let mut dirs = vec![root.join(top)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "tests" && name != "target" {
                        dirs.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.push((path, text));
                }
            }
        }
    }
    files
}

/// Production code (before a file's `#[cfg(test)]`) stays in files a reader can hold in mind.
#[test]
fn no_production_file_is_over_600_lines() {
    const LIMIT: usize = 600;
    let files = rust_files(&["crates", "services", "tools"]);
    let mut long = Vec::new();
    for (path, text) in &files {
        let production = text
            .lines()
            .take_while(|line| line.trim() != "#[cfg(test)]")
            .count();
        if production > LIMIT {
            long.push(format!("{} ({production} lines)", path.display()));
        }
    }
    assert!(files.len() > 50, "read only {} files", files.len());
    assert!(
        long.is_empty(),
        "over {LIMIT} lines of production code:\n{}",
        long.join("\n")
    );
}

/// The benchmarks' unauthenticated baseline is reachable from the benchmarks only: no
/// service, binary or setting can switch authentication off.
#[test]
fn only_the_benchmarks_switch_authentication_off() {
    let callers: Vec<String> = rust_files(&["crates", "services", "tools", "tests"])
        .into_iter()
        .filter(|(path, text)| {
            let path = path.display().to_string();
            text.contains("unauthenticated_for_benchmarks")
                && !path.contains("tools/bench/")
                && !path.ends_with("crates/kit/src/security/mod.rs")
                && !path.ends_with("tests/src/workspace.rs")
                && !path.ends_with("tests/workspace.rs")
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(callers.is_empty(), "{callers:?}");
}
