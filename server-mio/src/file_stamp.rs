//! Which version of a file is on disk, from one `stat`: how the server sees that the key file
//! or the TLS certificate changed without reading them. A rename (how tools replace files)
//! changes the inode, an edit in place the size or the modification time.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    /// The file's stamp now; `None` when it cannot be read (missing, no permission).
    pub fn of(path: &Path) -> Option<FileStamp> {
        let m = fs::metadata(path).ok()?;
        Some(FileStamp {
            inode: m.ino(),
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}
