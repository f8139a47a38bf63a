//! The house: the model in rooms by concern, imports that only point down a floor, and no
//! import circles, in the model or in the host. A module depends on another when it names
//! it: in a `use` (nested groups included), inline (`crate::oci::fetch(..)`), or inside a
//! macro or an attribute (`#[error("{}", crate::kube::keys::INJECT)]`). What only tests
//! use (items under `#[cfg(test)]`) is not part of the house.
//!
//! The source is read with syn, as the compiler parses it: the line scan this replaced
//! stopped at a file's first `#[cfg(test)]` and at the first `}` of a nested group, and so
//! missed what came after. `cargo modules dependencies` (0.27) draws only `use` edges and
//! compiles the crate with rust-analyzer's front end (minutes per run); this takes a second.

use proc_macro2::{TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syn::visit::{self, Visit};

/// The model's rooms, floor by floor from the ground: a room names only rooms on floors
/// below its own. The three policy rooms share a floor and so never name each other.
const MODEL_FLOORS: &[&[&str]] = &[
    &["json", "rule"],
    &["kube"],
    &["lifecycle", "ordering", "resources"],
    &["inject", "explain"],
];

/// A crate's modules (`kube::pod`, `kube`, `explain`) and, for each, the modules it names.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<String>,
    names: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
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
        let mut graph = Graph::default();
        let mut paths = Vec::new();
        for file in &files {
            let Some(module) = module_of(src, file) else {
                continue;
            };
            let text = std::fs::read_to_string(file).unwrap();
            let syntax = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", file.display()));
            let mut named = Named::default();
            named.visit_file(&syntax);
            graph.modules.insert(module.join("::"));
            paths.push((module, named.paths));
        }
        for (module, named) in paths {
            let from = module.join("::");
            for path in named {
                let absolute = match path.first().map(String::as_str) {
                    Some("crate") => path[1..].to_vec(),
                    Some("super") => {
                        [&module[..module.len().saturating_sub(1)], &path[1..]].concat()
                    }
                    Some("self") => [&module[..], &path[1..]].concat(),
                    _ => continue,
                };
                // The module a path lands in: its longest prefix that is a module.
                let target = (1..=absolute.len())
                    .rev()
                    .map(|n| absolute[..n].join("::"))
                    .find(|m| graph.modules.contains(m));
                if let Some(target) = target.filter(|t| *t != from) {
                    graph.names.entry(from.clone()).or_default().insert(target);
                }
            }
        }
        graph
    }

    /// Rooms (a crate's top-level modules) and the rooms each names.
    fn rooms(&self) -> BTreeMap<String, BTreeSet<String>> {
        let room = |m: &str| m.split("::").next().unwrap_or(m).to_string();
        let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for module in &self.modules {
            rooms.entry(room(module)).or_default();
        }
        for (from, targets) in &self.names {
            for target in targets {
                if room(from) != room(target) {
                    rooms.entry(room(from)).or_default().insert(room(target));
                }
            }
        }
        rooms
    }

    /// The files of one room and which of its files each names; the room's face (its
    /// `mod.rs`, which re-exports its files) is left out.
    fn within(&self, room: &str) -> BTreeMap<String, BTreeSet<String>> {
        let inside = |m: &str| m.starts_with(&format!("{room}::"));
        let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for module in self.modules.iter().filter(|m| inside(m)) {
            let targets = self.names.get(module).into_iter().flatten();
            files
                .entry(module.clone())
                .or_default()
                .extend(targets.filter(|t| inside(t)).cloned());
        }
        files
    }

    fn edges(&self) -> usize {
        self.names.values().map(BTreeSet::len).sum()
    }
}

/// `src/kube/pod.rs` → `[kube, pod]`; `src/kube/mod.rs` → `[kube]`; the crate root → none.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let crate_root =
        matches!(parts.as_slice(), [] | [_]) && parts.iter().all(|p| p == "lib" || p == "main");
    (!crate_root).then_some(parts)
}

/// Every path a file names outside its tests, as segments (`crate`, `kube`, `pod`, ..).
#[derive(Default)]
struct Named {
    paths: Vec<Vec<String>>,
}

fn only_in_tests(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl Named {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.push(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.push(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }

    fn push(&mut self, prefix: &[String], last: &syn::Ident) {
        let mut path = prefix.to_vec();
        if last != "self" {
            path.push(last.to_string());
        }
        self.paths.push(path);
    }

    /// `crate :: a :: b` sequences in tokens the parser leaves unparsed.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if ["crate", "super", "self"].contains(&&*id.to_string()) => {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(a)),
                        Some(TokenTree::Punct(b)),
                        Some(TokenTree::Ident(next)),
                    ) = (trees.get(j), trees.get(j + 1), trees.get(j + 2))
                    {
                        if a.as_char() != ':' || b.as_char() != ':' {
                            break;
                        }
                        path.push(next.to_string());
                        j += 3;
                    }
                    if path.len() > 1 {
                        self.paths.push(path);
                    }
                    i = j - 1;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Named {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            _ => return visit::visit_item(self, item),
        };
        if !only_in_tests(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !only_in_tests(&f.attrs) {
            visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        if let syn::Meta::List(list) = &attr.meta {
            self.tokens(list.tokens.clone());
        }
    }
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

/// Imports that do not point to a lower floor, as `from → to` lines.
fn against_the_floors(
    rooms: &BTreeMap<String, BTreeSet<String>>,
    floors: &[&[&str]],
) -> Vec<String> {
    let floor = |room: &str| floors.iter().position(|f| f.contains(&room));
    let mut wrong = Vec::new();
    for (from, targets) in rooms {
        let Some(own) = floor(from) else {
            wrong.push(format!("{from} has no floor in MODEL_FLOORS"));
            continue;
        };
        for to in targets {
            if floor(to).is_none_or(|f| f >= own) {
                wrong.push(format!("{from} → {to}"));
            }
        }
    }
    wrong
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_model_keeps_its_rooms_and_floors() {
    let graph = Graph::read(&root().join("policies/sidecar-model/src"));
    let rooms = graph.rooms();
    eprintln!(
        "the model: {} modules, {} edges; {} rooms, {} edges between rooms",
        graph.modules.len(),
        graph.edges(),
        rooms.len(),
        rooms.values().map(BTreeSet::len).sum::<usize>()
    );
    let wrong = against_the_floors(&rooms, MODEL_FLOORS);
    assert!(wrong.is_empty(), "imports against the floors: {wrong:#?}");
}

#[test]
fn no_import_circles() {
    for src in ["policies/sidecar-model/src", "src"] {
        let graph = Graph::read(&root().join(src));
        assert!(graph.modules.len() > 5, "{src}: {graph:?}");
        let rooms = graph.rooms();
        if let Some(found) = circle(&rooms) {
            panic!("{src}: the rooms import in a circle: {}", found.join(" → "));
        }
        for room in rooms.keys() {
            if let Some(found) = circle(&graph.within(room)) {
                panic!(
                    "{src}: {room}'s files import in a circle: {}",
                    found.join(" → ")
                );
            }
        }
    }
}

#[test]
fn the_scan_sees_every_kind_of_path_and_finds_circles() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kube")).unwrap();
    for (file, text) in [
        ("runtime.rs", "pub fn load() { crate::oci::fetch() }"),
        (
            "oci.rs",
            "#[cfg(test)]\nmod tests { use crate::serve; }\nuse crate::{metadata::{a, b}, runtime::Policy};",
        ),
        (
            "metadata.rs",
            "#[derive(thiserror::Error)]\n#[error(\"{}\", crate::kube::pod::X)]\npub struct E;",
        ),
        ("kube/mod.rs", "mod pod;\npub use pod::X;"),
        (
            "kube/pod.rs",
            "pub struct X; fn f() { format!(\"{}\", super::keys::A); }",
        ),
        ("kube/keys.rs", "use crate::runtime;"),
        ("serve.rs", ""),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let graph = Graph::read(dir.path());
    assert_eq!(
        graph.names["oci"],
        BTreeSet::from(["metadata".to_string(), "runtime".to_string()]),
        "a nested group is read whole, and test-only items are not"
    );
    assert_eq!(
        graph.names["metadata"],
        BTreeSet::from(["kube::pod".to_string()])
    );
    assert_eq!(
        graph.names["kube::pod"],
        BTreeSet::from(["kube::keys".to_string()])
    );
    assert_eq!(
        circle(&graph.rooms()).unwrap(),
        ["kube", "runtime", "oci", "metadata", "kube"]
    );
    assert_eq!(
        against_the_floors(
            &graph.rooms(),
            &[&["kube"], &["runtime", "oci", "metadata"]]
        ),
        [
            "kube → runtime",
            "oci → metadata",
            "oci → runtime",
            "runtime → oci",
            "serve has no floor in MODEL_FLOORS"
        ]
    );
}
