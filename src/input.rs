//! Files and stdin as the commands read them: one line naming the file when it fails.

use anyhow::Context;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

use sidecarctl::admission;

pub fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A document from a file, or from stdin for `-`.
pub fn read_document(path: &str) -> anyhow::Result<Value> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        text
    } else {
        read_file(Path::new(path))?
    };
    admission::parse_document(&text, if path == "-" { "stdin" } else { path })
}
