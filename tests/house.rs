//! The house keeps no import circles: among the model's modules and among the host
//! library's. A module depends on another when it names it, in a `use` or inline
//! (`crate::oci::fetch(..)`): `cargo modules dependencies` (0.27) draws only `use` edges,
//! and both circles this test was written against (`lifecycle → selector → pod →
//! lifecycle`, `oci ↔ runtime`) ran through inline paths. Written here because no
//! maintained crate reads a crate's module graph without compiling it with
//! rust-analyzer's, which takes minutes per run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module (its first path segment under the crate root) → the modules it names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let module_of = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first).to_string();
        (!["lib", "main"].contains(&name.as_str())).then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // What only tests use is not part of the house.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut named = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                let list = &list[..list.find('}').unwrap_or(list.len())];
                named.extend(list.split(',').filter_map(|item| {
                    let name = item.trim().split("::").next()?.trim();
                    (!name.is_empty()).then(|| name.to_string())
                }));
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                named.insert(rest[..end].to_string());
            }
        }
        let deps = graph.entry(from.clone()).or_default();
        deps.extend(
            named
                .into_iter()
                .filter(|m| modules.contains(m) && *m != from),
        );
    }
    graph
}

/// A circle of modules, if there is one: each names the next, the last the first.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in ["policies/sidecar-model/src", "src"] {
        let graph = imports(&root.join(src));
        assert!(graph.len() > 5, "{src}: {graph:?}");
        if let Some(found) = circle(&graph) {
            panic!(
                "{src}: the modules import in a circle: {}",
                found.join(" → ")
            );
        }
    }
}

#[test]
fn the_scan_sees_inline_paths_and_finds_circles() {
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("runtime.rs", "pub fn load() { crate::oci::fetch() }"),
        ("oci.rs", "use crate::{metadata, runtime::Policy};"),
        ("metadata.rs", "use crate::runtime;"),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let graph = imports(dir.path());
    assert_eq!(
        graph["oci"],
        BTreeSet::from(["metadata".to_string(), "runtime".to_string()])
    );
    assert_eq!(
        circle(&graph).unwrap(),
        ["metadata", "runtime", "oci", "metadata"]
    );
}
