//! Files the host keeps for itself (compiled and pulled modules): written whole or not at
//! all, so a process that dies mid-write, or two that write at once, never leave half a
//! module for the next run to read.

use std::path::Path;

pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}
