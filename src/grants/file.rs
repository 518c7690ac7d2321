//! Grant state for `dev`: the in-memory store, saved to a file in the state folder after
//! every change, so that a revoked or rotated token stays dead across a restart.
//!
//! Saves are group commits: a change is answered once a save that includes it has
//! finished, and one save covers every change made while the previous one was written.
//! Only one save runs at a time, off the runtime's threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;

use super::memory::{MemoryGrants, State};
use super::{GrantError, GrantStore, Refresh};

/// In-memory grant state, persisted to one JSON file.
pub struct FileGrants {
    inner: Arc<MemoryGrants>,
    path: PathBuf,
    /// Numbers the changes: bumped after each change is applied in memory.
    changes: AtomicU64,
    /// Held while a save runs, by the blocking write itself, so that a caller that gives
    /// up waiting cannot let a second write start; holds the number of the last change on
    /// disk.
    saved: Arc<tokio::sync::Mutex<u64>>,
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
            inner: Arc::new(MemoryGrants::from_state(state)),
            path: path.to_path_buf(),
            changes: AtomicU64::new(0),
            saved: Arc::new(tokio::sync::Mutex::new(0)),
        })
    }

    /// Returns once the change just applied in memory is on disk: saved by this call, or
    /// by a save that started after it.
    async fn save(&self) -> Result<(), GrantError> {
        let mine = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        let mut saved = self.saved.clone().lock_owned().await;
        if *saved >= mine {
            return Ok(());
        }

        // Every change numbered up to `upto` was applied before its number was taken, so
        // the state read after this load holds them all.
        let upto = self.changes.load(Ordering::Acquire);
        let inner = self.inner.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            write_state(&inner, &path)?;
            *saved = upto;
            Ok(())
        })
        .await
        .map_err(|e| GrantError(format!("saving the grant state: {e}")))?
    }
}

/// Writes the state to a temporary file first, then renames it over the old one, so a
/// crash never leaves half a file. Only one runs at a time (`FileGrants::saved`).
fn write_state(grants: &MemoryGrants, path: &Path) -> Result<(), GrantError> {
    let state = grants.state(Timestamp::now());
    let bytes = serde_json::to_vec(&state).map_err(|e| GrantError(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");

    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| GrantError(format!("{}: {e}", path.display())))
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
            self.save().await?;
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
            self.save().await?;
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
            self.save().await
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

    /// Many changes at once all reach the file, and none fails: before group commits,
    /// concurrent saves shared one temporary file and some answered "No such file".
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_all_reach_the_file() {
        let dir = std::env::temp_dir().join(format!("mcpc-grants-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grants.json");
        let later = Timestamp::now() + SignedDuration::from_hours(1);
        let grants = Arc::new(FileGrants::open(&path).unwrap());

        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let grants = grants.clone();
                tokio::spawn(async move {
                    grants.redeem_code("c", &format!("code-{i}"), later).await?;
                    grants.revoke("c", &format!("grant-{i}"), later).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        drop(grants);

        let reopened = FileGrants::open(&path).unwrap();
        for i in 0..200 {
            assert!(reopened.is_revoked("c", &format!("grant-{i}")), "grant-{i}");
            let code = format!("code-{i}");
            assert!(
                !reopened.redeem_code("c", &code, later).await.unwrap(),
                "{code}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
