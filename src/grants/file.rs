//! Grant state for `dev`: the in-memory store, saved to a file in the state folder after
//! every change, so that a revoked or rotated token stays dead across a restart.

use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;

use super::memory::{MemoryGrants, State};
use super::{GrantError, GrantStore, Refresh};

/// In-memory grant state, persisted to one JSON file.
pub struct FileGrants {
    inner: MemoryGrants,
    path: PathBuf,
}

impl FileGrants {
    /// Loads the state saved at `path`, or starts empty when there is none. A file that
    /// does not parse is an error rather than a silent reset: it may hold revocations.
    pub fn open(path: &Path) -> Result<FileGrants, GrantError> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| GrantError(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(GrantError(format!("{}: {e}", path.display()))),
        };
        Ok(FileGrants {
            inner: MemoryGrants::from_state(state),
            path: path.to_path_buf(),
        })
    }

    /// Writes the current state: to a temporary file first, then renamed over the old one,
    /// so a crash never leaves half a file.
    fn save(&self) -> Result<(), GrantError> {
        let state = self.inner.state(Timestamp::now());
        let bytes = serde_json::to_vec(&state).map_err(|e| GrantError(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");

        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| GrantError(format!("{}: {e}", self.path.display())))
    }
}

impl GrantStore for FileGrants {
    fn redeem_code<'a>(
        &'a self,
        connector: &'a str,
        code_id: &'a str,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<bool, GrantError>> {
        async move {
            let first = self.inner.redeem_code(connector, code_id, expires).await?;
            self.save()?;
            Ok(first)
        }
        .boxed()
    }

    fn refresh<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        presented: u64,
        now: Timestamp,
        expires: Timestamp,
    ) -> BoxFuture<'a, Result<Refresh, GrantError>> {
        async move {
            let outcome = self
                .inner
                .refresh(connector, grant, presented, now, expires)
                .await?;
            self.save()?;
            Ok(outcome)
        }
        .boxed()
    }

    fn revoke<'a>(
        &'a self,
        connector: &'a str,
        grant: &'a str,
        until: Timestamp,
    ) -> BoxFuture<'a, Result<(), GrantError>> {
        async move {
            self.inner.revoke(connector, grant, until).await?;
            self.save()
        }
        .boxed()
    }

    fn is_revoked(&self, connector: &str, grant: &str) -> bool {
        self.inner.is_revoked(connector, grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    #[tokio::test]
    async fn revocations_and_generations_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("mcpc-grants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grants.json");
        let now = Timestamp::now();
        let later = now + SignedDuration::from_hours(1);

        let first = FileGrants::open(&path).unwrap();
        first.refresh("c", "g1", 0, now, later).await.unwrap();
        first.revoke("c", "g2", later).await.unwrap();
        first.redeem_code("c", "code", later).await.unwrap();
        drop(first);

        let reopened = FileGrants::open(&path).unwrap();
        assert!(reopened.is_revoked("c", "g2"));
        assert_eq!(
            reopened.refresh("c", "g1", 0, now, later).await.unwrap(),
            Refresh::Raced(1)
        );
        assert!(!reopened.redeem_code("c", "code", later).await.unwrap());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(FileGrants::open(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
