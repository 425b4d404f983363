//! A directory as the bucket: object key `a/b/c` is the file `<root>/a/b/c`.
//!
//! ETags are the MD5 of the content in hex, as S3 computes them for a single
//! PUT, so the same bytes get the same ETag here and there. A file's
//! modification time is its object's last write time, as `LastModified` is
//! on S3: rewriting the same bytes moves it. There are no
//! versions: the directory is an unversioned bucket. The bucket name in a location is not checked: one directory is
//! one bucket.

use std::io::{BufRead, ErrorKind, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use md5::{Digest, Md5};
use tally_core::ports::{
    ListedObject, ObjectBody, ObjectLocation, ObjectMeta, ObjectStore, ObjectVersion, ObjectWriter,
    StoreError,
};

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    root: PathBuf,
}

impl DirectoryStore {
    pub fn new(root: impl Into<PathBuf>) -> DirectoryStore {
        DirectoryStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file an object key maps to. Keys whose segments a file system
    /// would read as something else (`..`, `.`, empty, a NUL byte) have no file.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let plain = !key.contains('\0')
            && key
                .split('/')
                .all(|segment| !matches!(segment, "" | "." | ".."));
        if !plain {
            return Err(StoreError::new(
                format!("mapping key {key:?} to a file"),
                "the key has an empty, '.' or '..' segment or a NUL byte, which a directory cannot hold",
            ));
        }
        Ok(self.root.join(key))
    }

    /// The S3-style ETag of some bytes.
    pub fn etag_of(bytes: &[u8]) -> String {
        hex(&Md5::digest(bytes))
    }

    fn read_error(path: &Path, error: std::io::Error) -> StoreError {
        StoreError::new(format!("reading {}", path.display()), error)
    }
}

impl ObjectStore for DirectoryStore {
    async fn get(
        &self,
        location: &ObjectLocation,
        max_bytes: u64,
    ) -> Result<Option<(ObjectMeta, ObjectBody)>, StoreError> {
        let path = self.path_of(&location.key)?;
        let size = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::read_error(&path, e)),
        };
        if size > max_bytes {
            // The ETag would need the whole body; an over-cap object is
            // refused by its size alone, so it gets none.
            let meta = ObjectMeta {
                etag: String::new(),
                version_id: None,
                size,
            };
            return Ok(Some((meta, ObjectBody::OverCap)));
        }
        // The file may have grown since its size was read: read at most one
        // byte past the cap.
        let mut bytes = Vec::with_capacity(size as usize);
        let read = std::fs::File::open(&path)
            .and_then(|file| file.take(max_bytes + 1).read_to_end(&mut bytes));
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::read_error(&path, e)),
        }
        if bytes.len() as u64 > max_bytes {
            let meta = ObjectMeta {
                etag: String::new(),
                version_id: None,
                size: bytes.len() as u64,
            };
            return Ok(Some((meta, ObjectBody::OverCap)));
        }
        let meta = ObjectMeta {
            etag: Self::etag_of(&bytes),
            version_id: None,
            size: bytes.len() as u64,
        };
        Ok(Some((meta, ObjectBody::Read(Bytes::from(bytes)))))
    }

    async fn head(&self, _bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path_of(key)?;
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::read_error(&path, e)),
        };
        // Hash the file as it streams by, whatever its size.
        let mut hasher = Md5::new();
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        let mut size = 0u64;
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == ErrorKind::IsADirectory => return Ok(None),
                Err(e) => return Err(Self::read_error(&path, e)),
            };
            if chunk.is_empty() {
                break;
            }
            hasher.update(chunk);
            let len = chunk.len();
            size += len as u64;
            reader.consume(len);
        }
        Ok(Some(ObjectMeta {
            etag: hex(&hasher.finalize()),
            version_id: None,
            size,
        }))
    }

    /// A directory keeps no versions: an empty history, so ingest keeps the
    /// last accepted body it read, as on an unversioned bucket.
    async fn versions(
        &self,
        _bucket: &str,
        _key: &str,
        _after: Option<&str>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        Ok(Vec::new())
    }
}

/// How a file looked when scanned: enough to notice it changed.
///
/// The modification time and length alone miss a second upload of the same
/// size renamed into place within one tick of the file system's clock (or
/// copied with its modification time kept, as `cp -p` and `rsync -t` do).
/// On Unix the stamp also holds the file's device and inode number, which a
/// rename into place always changes (the new body is a file created while
/// the old one still existed, so it cannot have the old one's inode), and
/// its status-change time, which every write, rename and change of the
/// modification time moves; a change that is not an upload (a `chmod`)
/// costs one read and no write, as ingest skips an identical body.
/// Elsewhere the stamp is the modification time and length only: two
/// same-size uploads within one tick are seen as one until the next start,
/// whose first scan reads every file. A file rewritten in place keeps its
/// inode, so a same-size rewrite within one tick is missed on Unix too:
/// write aside and rename, as upload tools do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    /// Device, inode, and status-change time (seconds, nanoseconds); `None`
    /// where the platform does not give them.
    identity: Option<(u64, u64, i64, i64)>,
}

impl FileStamp {
    /// A stamp no file has: a key stamped with it is seen as changed (or,
    /// with no file, as removed) at the next scan.
    pub const NO_FILE: FileStamp = FileStamp {
        modified: None,
        len: u64::MAX,
        identity: None,
    };

    /// The stamp of a file from its metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            identity: identity(meta),
        }
    }
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> Option<(u64, u64, i64, i64)> {
    None
}

impl DirectoryStore {
    /// Every file under `prefix` (a key prefix such as `counters/`), as
    /// object keys with their stamps; files and folders whose names start
    /// with `.` are temporary files of editors and copy tools, and skipped. Files whose names are not UTF-8 have
    /// no key and are reported back so the caller can say so.
    pub fn scan(
        &self,
        prefix: &str,
    ) -> Result<(std::collections::BTreeMap<String, FileStamp>, Vec<PathBuf>), StoreError> {
        let mut found = std::collections::BTreeMap::new();
        let mut unnamed = Vec::new();
        let start = self.root.join(prefix.trim_end_matches('/'));
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::read_error(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Self::read_error(&dir, e))?;
                let path = entry.path();
                // Editors', rsync's and our own temporary files.
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted between the listing and the look.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Self::read_error(&path, e)),
                };
                if meta.is_dir() {
                    pending.push(path);
                    continue;
                }
                // A half-written snapshot or upload in progress by a tool
                // that writes then renames.
                if !meta.is_file() {
                    continue;
                }
                let key = path
                    .strip_prefix(&self.root)
                    .ok()
                    .and_then(|relative| relative.to_str())
                    .map(|relative| relative.replace(std::path::MAIN_SEPARATOR, "/"));
                match key {
                    Some(key) => {
                        found.insert(key, FileStamp::of(&meta));
                    }
                    None => unnamed.push(path),
                }
            }
        }
        Ok((found, unnamed))
    }
}

impl ObjectWriter for DirectoryStore {
    /// Writes a temporary file beside the target and renames it over the
    /// target: readers see the old file or the new one, never a part.
    async fn put(
        &self,
        _bucket: &str,
        key: &str,
        body: Bytes,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let write_error =
            |e: std::io::Error| StoreError::new(format!("writing {}", path.display()), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(".{file_name}.{}.partial", std::process::id()));
        std::fs::write(&temporary, &body).map_err(write_error)?;
        std::fs::rename(&temporary, &path).map_err(write_error)
    }

    /// Hashes every file listed for its ETag, as S3 lists one: a listing
    /// reads the prefix's bytes whole.
    async fn list(&self, _bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        let directory = match prefix.rfind('/') {
            Some(end) => &prefix[..end],
            None => "",
        };
        let (files, _) = self.scan(directory)?;
        let mut listed = Vec::new();
        for (key, stamp) in files.into_iter().filter(|(key, _)| key.starts_with(prefix)) {
            let Some(modified) = stamp.modified else {
                return Err(StoreError::new(
                    format!("listing {}", self.root.join(&key).display()),
                    "the file system gives no modification time, which is the object's last write time",
                ));
            };
            // Gone since the scan: not listed, as S3 would not list it.
            if let Some(meta) = self.head("", &key).await? {
                listed.push(ListedObject {
                    key,
                    etag: meta.etag,
                    last_modified: chrono::DateTime::<chrono::Utc>::from(modified),
                    size: meta.size,
                });
            }
        }
        Ok(listed)
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(key: &str) -> ObjectLocation {
        ObjectLocation {
            bucket: "local".into(),
            key: key.into(),
            version_id: None,
        }
    }

    #[tokio::test]
    async fn reads_files_with_s3_style_etags_and_refuses_over_cap_unread() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("counters/2015-11-16")).unwrap();
        std::fs::write(dir.path().join("counters/2015-11-16/web 1"), "a 1\n").unwrap();

        let (meta, body) = store
            .get(&location("counters/2015-11-16/web 1"), 100)
            .await
            .unwrap()
            .unwrap();
        // md5("a 1\n"), as S3 would report it for this body.
        assert_eq!(meta.etag, "70e6e55ab8a13e29704a6be6cd9307ed");
        assert_eq!(
            DirectoryStore::etag_of(b""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(body, ObjectBody::Read(Bytes::from_static(b"a 1\n")));
        let head = store
            .head("local", "counters/2015-11-16/web 1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.etag, meta.etag);

        let (meta, body) = store
            .get(&location("counters/2015-11-16/web 1"), 3)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((meta.size, body), (4, ObjectBody::OverCap));

        assert!(
            store
                .get(&location("counters/2015-11-16/none"), 100)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .head("local", "counters/2015-11-16/none")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .head("local", "counters/2015-11-16")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn two_same_size_renames_within_one_mtime_tick_are_two_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let folder = dir.path().join("counters/2015-11-16");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("web 1");
        std::fs::write(&path, "a 1\n").unwrap();
        let (first, _) = store.scan("counters/").unwrap();

        // The next upload, written aside and renamed into place, has the
        // same size and, within one tick of the file system's clock, the
        // same modification time.
        let aside = folder.join(".web 1.partial");
        std::fs::write(&aside, "a 2\n").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&aside)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&aside, &path).unwrap();
        let (second, _) = store.scan("counters/").unwrap();

        let key = "counters/2015-11-16/web 1";
        assert_ne!(
            first[key], second[key],
            "a different body renamed into place must look changed"
        );
    }

    #[tokio::test]
    async fn lists_each_file_with_its_modification_time_which_a_same_bytes_rewrite_moves() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path());
        let body = || Bytes::from_static(b"a 1\n");
        let started = chrono::Utc::now();
        for key in ["counters/2015-11-16/web-1", "counters/2015-11-16/web-2"] {
            store.put("", key, body(), "text/plain").await.unwrap();
        }
        // 2015-11-16T23:59:00Z, set rather than waited for.
        let before_midnight = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_447_718_340);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("counters/2015-11-16/web-1"))
            .unwrap()
            .set_modified(before_midnight)
            .unwrap();

        let listed = store.list("", "counters/2015-11-16/").await.unwrap();
        let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            ["counters/2015-11-16/web-1", "counters/2015-11-16/web-2"]
        );
        assert_eq!(
            listed[0].last_modified.to_rfc3339(),
            "2015-11-16T23:59:00+00:00"
        );
        assert_eq!(listed[0].etag, DirectoryStore::etag_of(b"a 1\n"));
        assert_eq!(listed[0].size, 4);
        let slack = chrono::TimeDelta::seconds(1);
        assert!(listed[1].last_modified >= started - slack);
        assert!(listed[1].last_modified <= chrono::Utc::now() + slack);

        // The same bytes again: the file's time moves, as LastModified does.
        store
            .put("", "counters/2015-11-16/web-1", body(), "text/plain")
            .await
            .unwrap();
        let relisted = store.list("", "counters/2015-11-16/").await.unwrap();
        assert!(relisted[0].last_modified >= started - slack);
        assert_eq!(relisted[0].etag, listed[0].etag);
    }

    #[test]
    fn keys_that_would_escape_the_root_have_no_file() {
        let store = DirectoryStore::new("/srv/bucket");
        for key in [
            "counters/../../etc/passwd",
            "counters/2015-11-16/..",
            "counters//x",
            "/abs",
            "",
            "a/./b",
            "nul\0",
        ] {
            assert!(store.path_of(key).is_err(), "{key:?}");
        }
        assert_eq!(
            store.path_of("counters/2015-11-16/web 1+ä").unwrap(),
            PathBuf::from("/srv/bucket/counters/2015-11-16/web 1+ä")
        );
    }
}
