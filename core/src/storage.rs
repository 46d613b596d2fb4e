//! Object storage for uploaded documents: S3 (any S3-compatible server) or
//! the local filesystem, behind one small enum so callers never care which.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use secrecy::ExposeSecret;

use crate::config::{Config, StorageLocation};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0:?} not found")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("storage I/O failed for {key:?}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading or deleting the inline document {key:?} failed: {message}")]
    Database { key: String, message: String },
    #[error("S3 request {op} failed for {key:?}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
}

/// Where documents are kept: the object store (S3 or a local folder), and,
/// under keys starting with [`INLINE_PREFIX`], the database, for small
/// documents submitted with their job ([`inline_key`]).
#[derive(Debug, Clone)]
pub struct Storage {
    backend: Backend,
    /// Reads and deletes the inline documents; a store opened without it
    /// ([`Storage::from_config`]) refuses their keys.
    db: Option<sqlx::PgPool>,
}

#[derive(Debug, Clone)]
enum Backend {
    Fs(FsStorage),
    S3(S3Storage),
}

/// Keys of documents kept in the database (table `inline_documents`), not
/// in the object store: a submission no larger than
/// `inline_document_max_bytes` is written by the statement that inserts its
/// job, so accepting it takes one durable commit and no file to write and
/// flush. Readers and deleters go through [`Storage`] as for any key;
/// writers are the job insert alone.
pub const INLINE_PREFIX: &str = "inline/";

/// The folder of submitted documents (and their ZIP entries) in the
/// object store: `documents/<account>/<job>[-doc-<split>-<n>]`.
pub const DOCUMENTS_PREFIX: &str = "documents/";

/// The key of a submitted document in the object store. No folder per job:
/// on a local disk each one is an inode to allocate.
pub fn document_key(account_id: uuid::Uuid, job_id: uuid::Uuid) -> String {
    format!("{DOCUMENTS_PREFIX}{account_id}/{job_id}")
}

/// The key of a submitted document kept in the database.
pub fn inline_key(account_id: uuid::Uuid, job_id: uuid::Uuid) -> String {
    format!("{INLINE_PREFIX}{account_id}/{job_id}")
}

fn is_inline(key: &str) -> bool {
    key.starts_with(INLINE_PREFIX)
}

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    /// Flush each file and its directory entry to the disk before a write
    /// returns (`storage_fsync`), so an accepted document survives a crash
    /// or power loss as its job row does.
    fsync: bool,
    /// Folders this process has flushed into their parents, up to the root.
    durable: std::sync::Arc<DurableDirs>,
}

/// The folders known to be on the disk: their entries, and their parents'
/// up to the root, were flushed after they existed. Folders are never
/// removed, so a folder stays durable once it is. Writing into a folder not
/// in the set flushes its ancestors first, whoever created it: a concurrent
/// writer (or another process) may have just made it and not yet flushed it.
#[derive(Debug, Default)]
struct DurableDirs {
    dirs: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// Directory flushes done, for tests.
    syncs: std::sync::atomic::AtomicU64,
}

/// The set holds a folder per account; past this many it starts over (the
/// folders are flushed again on their next write).
const DURABLE_DIRS_MAX: usize = 65_536;

#[derive(Debug, Clone)]
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
    /// The slowest upload a PutObject is given time for, bytes a second.
    upload_min_rate: u64,
}

/// How long a PutObject of `size` bytes may take before its answer: the
/// SDK's read timeout runs from the start of the request, the upload of the
/// body included, so a large document on a slow link would time out with
/// the read timeout alone; it gets its upload at `min_rate` on top, in
/// whole seconds rounded up to a power of two. The SDK keeps an HTTP client
/// (and its connection pool) for each timeout it is given, for good: a
/// handful of values, not one per document size.
fn put_timeout(read: std::time::Duration, min_rate: u64, size: u64) -> std::time::Duration {
    // At most about a day and a half: a timer that far is as good as none.
    const MAX_UPLOAD_SECS: u64 = 1 << 17;
    let upload_secs = match size.div_ceil(min_rate.max(1)) {
        0 => 0,
        secs => secs.min(MAX_UPLOAD_SECS).next_power_of_two(),
    };
    read.saturating_add(std::time::Duration::from_secs(upload_secs))
}

/// Keys are ours (`documents/<account>/<job>...`), but check them anyway so a
/// bug can never write outside the root.
fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_owned()))
    }
}

fn db_err(key: &str) -> impl FnOnce(sqlx::Error) -> StorageError + '_ {
    move |e| StorageError::Database {
        key: key.to_owned(),
        message: e.to_string(),
    }
}

fn io_err(key: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(key.to_owned())
        } else {
            StorageError::Io {
                key: key.to_owned(),
                source,
            }
        }
    }
}

impl Storage {
    /// The object store `storage_url` names, and the inline documents in
    /// the database `pool` connects to: what every binary uses.
    pub async fn open(config: &Config, pool: &sqlx::PgPool) -> anyhow::Result<Storage> {
        Ok(Storage {
            db: Some(pool.clone()),
            ..Storage::from_config(config).await?
        })
    }

    /// The object store alone: inline keys are refused.
    pub async fn from_config(config: &Config) -> anyhow::Result<Storage> {
        let backend = match config.storage_location()? {
            StorageLocation::File(root) => {
                Backend::Fs(FsStorage::new(root, config.storage_fsync).await?)
            }
            StorageLocation::S3 { bucket, prefix } => {
                Backend::S3(S3Storage::new(config, bucket, prefix).await)
            }
        };
        Ok(Storage { backend, db: None })
    }

    /// A local store alone.
    pub fn local(fs: FsStorage) -> Storage {
        Storage {
            backend: Backend::Fs(fs),
            db: None,
        }
    }

    /// The database holding the inline documents, for an inline `key`.
    fn inline_db(&self, key: &str) -> Result<&sqlx::PgPool, StorageError> {
        self.db.as_ref().ok_or_else(|| StorageError::Database {
            key: key.to_owned(),
            message: "this store was opened without the database that keeps inline documents"
                .into(),
        })
    }

    /// Refuses to write an inline key: only the job insert writes those.
    fn check_writable(key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        if is_inline(key) {
            return Err(StorageError::InvalidKey(key.to_owned()));
        }
        Ok(())
    }

    /// Stores a local file under `key`, streaming it; returns its size.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        Self::check_writable(key)?;
        let started = std::time::Instant::now();
        let stored = match &self.backend {
            Backend::Fs(fs) => fs.put_file(key, path).await,
            Backend::S3(s3) => s3.put_file(key, path).await,
        };
        stored_metrics(started, stored.as_ref().ok().copied());
        stored
    }

    /// Stores `data` under `key`, replacing what was there whole: a reader
    /// sees the old file or the new one, never half of one.
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_bytes_as(key, data, false).await
    }

    /// [`Storage::put_bytes`] for a key nothing was stored under (a new
    /// submission's): the local store writes the file in place, refusing a
    /// key that exists, without the temporary file and rename that keep a
    /// rewritten key whole (a third of a small submission's file system
    /// time). Nothing reads the key before the caller's job row commits; a
    /// half-written file is deleted, or swept as an orphan after a crash.
    pub async fn put_new_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_bytes_as(key, data, true).await
    }

    async fn put_bytes_as(&self, key: &str, data: Bytes, new: bool) -> Result<(), StorageError> {
        Self::check_writable(key)?;
        let started = std::time::Instant::now();
        let size = data.len() as u64;
        let stored = match &self.backend {
            Backend::Fs(fs) if new => fs.put_new_bytes(key, data).await,
            Backend::Fs(fs) => fs.put_bytes(key, data).await,
            Backend::S3(s3) => {
                let size = data.len() as u64;
                s3.put(key, ByteStream::from(data), size).await
            }
        };
        stored_metrics(started, stored.as_ref().ok().map(|_| size));
        stored
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        check_key(key)?;
        if is_inline(key) {
            let data: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT data FROM inline_documents WHERE key = $1")
                    .bind(key)
                    .fetch_optional(self.inline_db(key)?)
                    .await
                    .map_err(db_err(key))?;
            return data
                .map(Bytes::from)
                .ok_or_else(|| StorageError::NotFound(key.to_owned()));
        }
        match &self.backend {
            Backend::Fs(fs) => tokio::fs::read(fs.path(key))
                .await
                .map(Bytes::from)
                .map_err(io_err(key)),
            Backend::S3(s3) => s3.get(key).await,
        }
    }

    /// Deletes `key`; deleting a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        let deleted = match &self.backend {
            _ if is_inline(key) => {
                let size: Option<i32> = sqlx::query_scalar(
                    "DELETE FROM inline_documents WHERE key = $1 RETURNING length(data)",
                )
                .bind(key)
                .fetch_optional(self.inline_db(key)?)
                .await
                .map_err(db_err(key))?;
                Ok(size.unwrap_or(0) as u64)
            }
            Backend::Fs(fs) => {
                // The size (for the metric) and the removal in one trip to
                // the blocking pool.
                let path = fs.path(key);
                let removed = blocking(move || {
                    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                    std::fs::remove_file(&path).map(|()| size)
                })
                .await;
                match removed {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                    Err(e) => Err(io_err(key)(e)),
                    Ok(size) => Ok(size),
                }
            }
            Backend::S3(s3) => s3.delete(key).await,
        }?;
        crate::metrics::STORAGE_DELETED_BYTES.inc_by(deleted);
        Ok(())
    }

    /// Deletes the local store's temporary files (`.tmp/`, where a file is
    /// written before it is renamed into place) last written before
    /// `before`: copies of documents that a process killed mid-write left
    /// behind. Nothing to do on S3, where an upload that never completed
    /// leaves no object. Returns how many went.
    pub async fn delete_stale_temporary_files(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StorageError> {
        let Backend::Fs(fs) = &self.backend else {
            return Ok(0);
        };
        let dir = fs.root.join(".tmp");
        let before = std::time::SystemTime::from(before);
        blocking(move || {
            let mut deleted = 0;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let stale = match entry.metadata().and_then(|m| m.modified()) {
                    Ok(modified) => modified < before,
                    // Renamed into place (or deleted) meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                };
                if stale {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => deleted += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(deleted)
        })
        .await
        .map_err(io_err(".tmp"))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        check_key(key)?;
        if is_inline(key) {
            return sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM inline_documents WHERE key = $1)",
            )
            .bind(key)
            .fetch_one(self.inline_db(key)?)
            .await
            .map_err(db_err(key));
        }
        match &self.backend {
            Backend::Fs(fs) => Ok(tokio::fs::try_exists(fs.path(key))
                .await
                .map_err(io_err(key))?),
            Backend::S3(s3) => s3.exists(key).await,
        }
    }

    /// The stored objects under `prefix` (a folder, ending in `/`), a page
    /// of at most [`PAGE`] at a time, so that listing a large store takes
    /// bounded memory. Objects written or deleted meanwhile may or may not
    /// be listed. The object store's alone: inline documents are rows.
    pub fn pages(&self, prefix: &str) -> Pages<'_> {
        if let Err(e) = check_key(prefix.trim_end_matches('/')) {
            return Pages(PagesFrom::Refused(Some(e)));
        }
        match &self.backend {
            Backend::Fs(fs) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let root = fs.root.clone();
                let prefix = prefix.to_owned();
                tokio::task::spawn_blocking(move || {
                    let walked = walk_dir(&root, &prefix, PAGE, |page| {
                        tx.blocking_send(Ok(page)).is_ok()
                    });
                    if let Err(e) = walked {
                        let _ = tx.blocking_send(Err(e));
                    }
                });
                Pages(PagesFrom::Fs(rx))
            }
            Backend::S3(s3) => Pages(PagesFrom::S3 {
                s3,
                prefix: prefix.to_owned(),
                cursor: None,
                done: false,
            }),
        }
    }

    /// The keys of the stored objects whose key starts with `prefix`, which
    /// need not end at a folder (`documents/<account>/<job>-doc-`): the
    /// local store reads the one folder the prefix ends in, not below it.
    /// All of them at once: for a few (a job's files), not a whole store.
    /// The object store's alone (a ZIP's entries are stored there, even
    /// when the ZIP was kept inline).
    pub async fn keys_starting_with(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        check_key(prefix)?;
        match &self.backend {
            Backend::Fs(fs) => {
                let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
                let (folder, dir, start) = (fs.root.join(dir), dir.to_owned(), start.to_owned());
                blocking(move || {
                    let entries = match std::fs::read_dir(&folder) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                        other => other?,
                    };
                    let mut keys = Vec::new();
                    for entry in entries {
                        let entry = entry?;
                        let name = entry.file_name();
                        let Some(name) = name.to_str() else { continue };
                        if name.starts_with(&start) && entry.file_type()?.is_file() {
                            keys.push(if dir.is_empty() {
                                name.to_owned()
                            } else {
                                format!("{dir}/{name}")
                            });
                        }
                    }
                    Ok(keys)
                })
                .await
                .map_err(io_err(prefix))
            }
            Backend::S3(s3) => {
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let (listed, next) = s3.list(prefix, cursor).await?;
                    keys.extend(listed.into_iter().map(|l| l.key));
                    match next {
                        Some(next) => cursor = Some(next),
                        None => return Ok(keys),
                    }
                }
            }
        }
    }

    /// Readiness: the bucket or directory is reachable.
    pub async fn check(&self) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Fs(fs) => tokio::fs::metadata(&fs.root)
                .await
                .map(|_| ())
                .map_err(io_err("")),
            Backend::S3(s3) => s3
                .client
                .head_bucket()
                .bucket(&s3.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_err("HeadBucket", "", e)),
        }
    }
}

impl FsStorage {
    pub async fn new(root: PathBuf, fsync: bool) -> std::io::Result<FsStorage> {
        tokio::fs::create_dir_all(root.join(".tmp")).await?;
        Ok(FsStorage {
            root,
            fsync,
            durable: Default::default(),
        })
    }

    /// How many directories this store has flushed to the disk.
    pub fn dir_syncs(&self) -> u64 {
        self.durable
            .syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<u64, StorageError> {
        let src = src.to_path_buf();
        self.put_with(key, move |tmp| std::fs::copy(&src, tmp))
            .await
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_with(key, move |tmp| std::fs::write(tmp, &data).map(|()| 0))
            .await
            .map(drop)
    }

    async fn put_new_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let dest = self.path(key);
        let (root, fsync, durable) = (self.root.clone(), self.fsync, self.durable.clone());
        blocking(move || {
            use std::io::Write;
            let create = || {
                std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
            };
            let mut file = match create() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    create()?
                }
                other => other?,
            };
            let written = file.write_all(&data).and_then(|()| {
                if fsync {
                    file.sync_data()?;
                    durable.sync(&root, &dest)?;
                }
                Ok(())
            });
            if written.is_err() {
                drop(file);
                let _ = std::fs::remove_file(&dest);
            }
            written
        })
        .await
        .map_err(io_err(key))
    }

    /// Writes through a temporary file (`write` fills it) and a rename, so
    /// readers never see half a file; the temporary file goes on error. One
    /// trip to the blocking pool (three cost a third of a small upload's time).
    async fn put_with(
        &self,
        key: &str,
        write: impl FnOnce(&Path) -> std::io::Result<u64> + Send + 'static,
    ) -> Result<u64, StorageError> {
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().to_string());
        let dest = self.path(key);
        let (root, fsync, durable) = (self.root.clone(), self.fsync, self.durable.clone());
        blocking(move || {
            let written = write(&tmp).and_then(|size| {
                if fsync {
                    std::fs::File::open(&tmp)?.sync_data()?;
                }
                let parent = dest.parent().filter(|p| !p.exists());
                if let Some(parent) = parent {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&tmp, &dest)?;
                if fsync {
                    durable.sync(&root, &dest)?;
                }
                Ok(size)
            });
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })
        .await
        .map_err(io_err(key))
    }
}

impl DurableDirs {
    /// Flushes the directory entry of `file` to the disk: its folder's, and
    /// the folder's own up to `root` unless that was done before.
    fn sync(&self, root: &Path, file: &Path) -> std::io::Result<()> {
        let Some(folder) = file.parent() else {
            return Ok(());
        };
        self.sync_dir(folder)?;
        if folder == root || !folder.starts_with(root) || self.known(folder) {
            return Ok(());
        }
        let mut dir = folder.parent();
        while let Some(d) = dir {
            self.sync_dir(d)?;
            if d == root || !d.starts_with(root) {
                break;
            }
            dir = d.parent();
        }
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if dirs.len() >= DURABLE_DIRS_MAX {
            dirs.clear();
        }
        dirs.insert(folder.to_path_buf());
        Ok(())
    }

    fn known(&self, folder: &Path) -> bool {
        let dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        dirs.contains(folder)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()?;
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// Runs file system work on the blocking pool; a panic in it is an error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The `store` stage and the bytes written, for every write.
fn stored_metrics(started: std::time::Instant, size: Option<u64>) {
    crate::metrics::observe_stage("store", size.is_some(), started.elapsed().as_secs_f64());
    crate::metrics::STORAGE_WRITTEN_BYTES.inc_by(size.unwrap_or(0));
}

/// A stored object: its key and when it was last written.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub key: String,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// Most objects in one page of [`Storage::pages`].
pub const PAGE: usize = 1000;

/// Walks the files under `root/prefix` and hands them to `emit` in pages of
/// at most `page` (keys relative to `root`), until `emit` answers false. A
/// missing folder lists nothing; a file or folder removed during the walk
/// (a worker deleting a delivered job's files) is skipped.
fn walk_dir(
    root: &Path,
    prefix: &str,
    page: usize,
    mut emit: impl FnMut(Vec<Listed>) -> bool,
) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut out = Vec::new();
    let mut dirs = vec![root.join(prefix)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if gone(&e) => continue,
            other => other?,
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Err(e) if gone(&e) => continue,
                other => other?,
            };
            let path = entry.path();
            if meta.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(Listed {
                    key: rel.to_string_lossy().into_owned(),
                    modified: meta.modified()?.into(),
                });
                if out.len() == page && !emit(std::mem::take(&mut out)) {
                    return Ok(());
                }
            }
        }
    }
    if !out.is_empty() {
        emit(out);
    }
    Ok(())
}

/// The pages of a listing, from [`Storage::pages`].
pub struct Pages<'a>(PagesFrom<'a>);

enum PagesFrom<'a> {
    /// Filled by a thread walking the folders; it stops when this is dropped.
    Fs(tokio::sync::mpsc::Receiver<std::io::Result<Vec<Listed>>>),
    S3 {
        s3: &'a S3Storage,
        prefix: String,
        cursor: Option<String>,
        done: bool,
    },
    Refused(Option<StorageError>),
}

impl Pages<'_> {
    /// The next page (never empty), an error (the listing ends there), or
    /// None after the last.
    pub async fn next(&mut self) -> Option<Result<Vec<Listed>, StorageError>> {
        match &mut self.0 {
            PagesFrom::Fs(rx) => rx.recv().await.map(|r| r.map_err(io_err(""))),
            PagesFrom::S3 {
                s3,
                prefix,
                cursor,
                done,
            } => loop {
                if *done {
                    return None;
                }
                match s3.list(prefix, cursor.take()).await {
                    Err(e) => {
                        *done = true;
                        return Some(Err(e));
                    }
                    Ok((listed, next)) => {
                        *done = next.is_none();
                        *cursor = next;
                        if !listed.is_empty() {
                            return Some(Ok(listed));
                        }
                    }
                }
            },
            PagesFrom::Refused(e) => e.take().map(Err),
        }
    }
}

fn s3_err<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    key: &str,
    err: aws_sdk_s3::error::SdkError<E>,
) -> StorageError {
    // DisplayErrorContext prints the whole chain; the service error code is in it.
    let message = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
    StorageError::S3 {
        op,
        key: key.to_owned(),
        message,
    }
}

impl S3Storage {
    pub async fn new(config: &Config, bucket: String, prefix: String) -> S3Storage {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.s3_region.clone()));
        if !config.s3_access_key_id.is_empty() {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                config.s3_access_key_id.clone(),
                config.s3_secret_access_key.expose_secret().to_owned(),
                None,
                None,
                "paperhook-config",
            ));
        }
        if !config.s3_endpoint.is_empty() {
            loader = loader.endpoint_url(config.s3_endpoint.clone());
        }
        // Without these the SDK waits for a hung server forever.
        let connect_timeout = std::time::Duration::from_secs(config.s3_connect_timeout_secs);
        let read_timeout = std::time::Duration::from_secs(config.s3_read_timeout_secs);
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(connect_timeout)
                .read_timeout(read_timeout)
                .build(),
        );
        let shared = loader.load().await;
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.s3_force_path_style)
            .build();
        S3Storage {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            bucket,
            prefix,
            connect_timeout,
            read_timeout,
            upload_min_rate: config.s3_upload_min_bytes_per_sec,
        }
    }

    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path).await.map_err(io_err(key))?.len();
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::S3 {
                op: "PutObject",
                key: key.to_owned(),
                message: e.to_string(),
            })?;
        self.put(key, body, size).await?;
        Ok(size)
    }

    async fn put(&self, key: &str, body: ByteStream, size: u64) -> Result<(), StorageError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(put_timeout(self.read_timeout, self.upload_min_rate, size))
            .build();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .body(body)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| s3_err("PutObject", key, e))
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), StorageError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object(prefix))
            .set_continuation_token(cursor)
            .send()
            .await
            .map_err(|e| s3_err("ListObjectsV2", prefix, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let listed = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?.strip_prefix(strip.as_str())?.to_owned();
                let modified = o.last_modified()?;
                let modified = chrono::DateTime::from_timestamp(modified.secs(), 0)?;
                Some(Listed { key, modified })
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((listed, next))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StorageError::NotFound(key.to_owned())
                } else {
                    s3_err("GetObject", key, e)
                }
            })?;
        let data = out.body.collect().await.map_err(|e| StorageError::S3 {
            op: "GetObject",
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        Ok(data.into_bytes())
    }

    /// Deletes `key` and returns its size (0 if it was already gone): the
    /// HEAD costs a request, but deletes are one per stored file and the
    /// size feeds `paperhook_storage_deleted_bytes_total`. A HEAD that fails
    /// still leaves the DELETE to decide: a user without `s3:ListBucket`
    /// gets 403, not 404, for a key that is gone (a worker deleted it and
    /// stopped before recording so), and DeleteObject succeeds for one.
    async fn delete(&self, key: &str) -> Result<u64, StorageError> {
        let size = match self.size(key).await {
            Ok(None) => return Ok(0),
            Ok(Some(size)) => size,
            Err(e) => {
                tracing::debug!(key, error = %e, "HEAD before a delete failed; deleting anyway");
                0
            }
        };
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
            .map(|_| size)
            .map_err(|e| s3_err("DeleteObject", key, e))
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.size(key).await?.is_some())
    }

    /// The object's size, or None when there is no such object.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object(key))
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err("HeadObject", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FsStorage, check_key, put_timeout};
    use bytes::Bytes;
    use std::time::Duration;

    /// A PutObject's read timeout covers its upload: a 50 MiB document gets
    /// the read timeout plus at least 50 s at 1 MiB/s, a small one a second
    /// more; and document sizes map to a few timeouts, not one each.
    #[test]
    fn an_upload_gets_its_time_at_the_slowest_rate_on_top() {
        let read = Duration::from_secs(15);
        let mib = 1 << 20;
        assert_eq!(
            put_timeout(read, mib, 50 * mib),
            Duration::from_secs(15 + 64)
        );
        assert_eq!(put_timeout(read, mib, 0), Duration::from_secs(15));
        assert_eq!(put_timeout(read, mib, 1000), Duration::from_secs(16));
        let distinct: std::collections::HashSet<Duration> = (0..=50 * mib)
            .step_by(4096)
            .map(|size| put_timeout(read, mib, size))
            .collect();
        assert!(distinct.len() <= 8, "{} timeouts", distinct.len());
        assert_eq!(
            put_timeout(read, 1, u64::MAX),
            Duration::from_secs(15 + (1 << 17))
        );
    }

    #[tokio::test]
    async fn a_folder_made_by_another_writer_is_flushed_up_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let store = FsStorage::new(root.path().to_path_buf(), true)
            .await
            .unwrap();
        // Another process (or a concurrent write) made the account's folder
        // and has not flushed it yet: the first write into it flushes the
        // folder, documents/ and the root.
        std::fs::create_dir_all(root.path().join("documents/acct")).unwrap();
        let data = || Bytes::from_static(b"doc");
        store
            .put_new_bytes("documents/acct/j1", data())
            .await
            .unwrap();
        assert_eq!(store.dir_syncs(), 3);
        // Later writes into it flush only the folder, whichever way.
        store
            .put_new_bytes("documents/acct/j2", data())
            .await
            .unwrap();
        store.put_bytes("documents/acct/r2", data()).await.unwrap();
        assert_eq!(store.dir_syncs(), 5);
        // A folder this write makes itself: the same three.
        store.put_bytes("documents/other/r1", data()).await.unwrap();
        assert_eq!(store.dir_syncs(), 8);
        // Without the flush, none.
        let unflushed = FsStorage::new(root.path().to_path_buf(), false)
            .await
            .unwrap();
        unflushed
            .put_new_bytes("documents/new/j", data())
            .await
            .unwrap();
        assert_eq!(unflushed.dir_syncs(), 0);
        assert_eq!(
            std::fs::read(root.path().join("documents/new/j")).unwrap(),
            b"doc"
        );
    }

    #[tokio::test]
    async fn a_large_local_store_is_listed_a_page_at_a_time() {
        let root = tempfile::tempdir().unwrap();
        let store = super::Storage::local(
            FsStorage::new(root.path().to_path_buf(), false)
                .await
                .unwrap(),
        );
        let mut want = std::collections::BTreeSet::new();
        for (dir, n) in [("documents/a", 2000), ("documents/b/c", 345)] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            for i in 0..n {
                std::fs::write(root.path().join(format!("{dir}/{i}")), b"x").unwrap();
                want.insert(format!("{dir}/{i}"));
            }
        }
        std::fs::create_dir_all(root.path().join("other")).unwrap();
        std::fs::write(root.path().join("other/x"), b"x").unwrap();

        let mut pages = store.pages("documents/");
        let (mut got, mut sizes) = (std::collections::BTreeSet::new(), Vec::new());
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            sizes.push(page.len());
            for l in page {
                assert!(got.insert(l.key.clone()), "{} listed twice", l.key);
            }
        }
        assert_eq!(got, want);
        assert!(
            sizes.iter().all(|&n| (1..=super::PAGE).contains(&n)),
            "{sizes:?}"
        );
        assert_eq!(sizes.len(), 3);
        // A folder that is not there lists nothing; a bad prefix is refused.
        assert!(store.pages("documents/none/").next().await.is_none());
        assert!(store.pages("../").next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn keys_are_found_by_a_prefix_inside_a_folder() {
        let root = tempfile::tempdir().unwrap();
        let store = super::Storage::local(
            FsStorage::new(root.path().to_path_buf(), false)
                .await
                .unwrap(),
        );
        for key in [
            "documents/a/j",
            "documents/a/j-doc-0",
            "documents/a/j-doc-11",
            "documents/a/j2",
            "documents/a/k-doc-0",
            "documents/b/j-doc-0",
        ] {
            store
                .put_bytes(key, Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let mut got = store
            .keys_starting_with("documents/a/j-doc-")
            .await
            .unwrap();
        got.sort();
        assert_eq!(got, ["documents/a/j-doc-0", "documents/a/j-doc-11"]);
        assert!(
            store
                .keys_starting_with("documents/none/j-doc-")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.keys_starting_with("../j").await.is_err());
    }

    #[test]
    fn files_deleted_during_a_walk_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("documents/a");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..10 {
            std::fs::write(dir.join(i.to_string()), b"x").unwrap();
        }
        // After the first file, a worker deletes all the others (the
        // folder's entries have been read already).
        let mut seen = Vec::new();
        super::walk_dir(root.path(), "documents/", 1, |page| {
            if seen.is_empty() {
                let keep = root.path().join(&page[0].key);
                for e in std::fs::read_dir(&dir).unwrap() {
                    let path = e.unwrap().path();
                    if path != keep {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
            seen.extend(page);
            true
        })
        .unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
    }

    #[test]
    fn keys_stay_inside_the_root() {
        assert!(check_key("documents/a/b").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a b", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
