//! Shared by the integration tests (each `tests/*.rs` file is its own crate and includes
//! this module with `mod support;`).

use std::path::PathBuf;

/// Writing test files into a throwaway `tempfile` directory (removed when it is dropped).
pub trait WriteFiles {
    /// Writes `text` to `relative` below the directory, creating the folders on the way, and
    /// returns the file's path.
    fn write(&self, relative: &str, text: &str) -> PathBuf;
}

impl WriteFiles for tempfile::TempDir {
    fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}
