//! The user's cache folder (`$XDG_CACHE_HOME/harvest`, else `~/.cache/harvest`), never the
//! output folder nor the job's: where rotated refresh tokens (`auth/cache.rs`) and the
//! response cache of `run --cache` (`fetch/cache.rs`) are kept, written whole with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// `$XDG_CACHE_HOME/harvest`, else `$HOME/.cache/harvest`; `None` with neither set.
pub fn root() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("harvest"))
}

/// Write `bytes` to `path` whole, readable by its owner only: a temporary file of mode 0600
/// beside it, fsynced, renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = crate::store::fs::folder_of(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where cached responses are kept.
pub fn responses_dir() -> Option<PathBuf> {
    root().map(|r| r.join("responses"))
}

/// `harvest cache clear`: remove every cached response; the folder and how many went.
pub fn clear() -> std::io::Result<(PathBuf, usize)> {
    let dir = responses_dir().ok_or_else(|| std::io::Error::other("neither XDG_CACHE_HOME nor HOME is set"))?;
    let mut removed = 0;
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok((dir, removed))
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
