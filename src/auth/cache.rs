//! The refresh-token cache. Servers that rotate refresh tokens (Google, Xero, QuickBooks)
//! kill the old one the moment they issue a new one, so the new one must outlive the run that
//! received it. It is kept outside the output folder, which is often shared or uploaded: by
//! default `$XDG_CACHE_HOME/harvest/tokens/<job>-<hash>.json` (else `~/.cache/harvest/...`),
//! written atomically with mode 0600. It remembers which configured refresh token it grew from
//! (a SHA-256, never the token) and is used only while that is still the one configured: a
//! new configured token wins.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Cached {
    version: u32,
    /// SHA-256 of the configured refresh token this one descends from.
    configured: String,
    refresh_token: String,
}

/// The default cache file of a job's refresh token; `None` when there is no cache folder
/// (neither `XDG_CACHE_HOME` nor `HOME` set).
pub fn default_path(job: &str, token_url: &url::Url, client_id: &str) -> Option<PathBuf> {
    let which = sha256(&format!("{token_url}\n{client_id}"));
    Some(crate::cache::root()?.join("tokens").join(format!("{job}-{}.json", &which[..12])))
}

/// The cached refresh token, if the cache grew from `configured`.
pub fn load(path: &Path, configured: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    (cached.configured == sha256(configured) && !cached.refresh_token.is_empty()).then_some(cached.refresh_token)
}

/// Keep `token`, grown from `configured`: a temporary file of mode 0600 beside it, fsynced,
/// renamed over it.
pub fn save(path: &Path, configured: &str, token: &str) -> std::io::Result<()> {
    let cached = Cached { version: 1, configured: sha256(configured), refresh_token: token.to_string() };
    crate::cache::write_private(path, &serde_json::to_vec_pretty(&cached).expect("the cache serializes"))?;
    if let Ok(folder) = std::fs::File::open(crate::store::fs::folder_of(path)) {
        let _ = folder.sync_all();
    }
    Ok(())
}

fn sha256(text: &str) -> String {
    crate::cache::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_used_only_while_its_configured_token_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens/job-abc.json");
        save(&path, "configured-1", "rotated-2").unwrap();
        assert_eq!(load(&path, "configured-1").as_deref(), Some("rotated-2"));
        assert_eq!(load(&path, "configured-new"), None, "a new configured token wins");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("configured-1"), "only a hash of the configured token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
