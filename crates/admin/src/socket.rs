//! `STATE_DIR/admin.sock`: the API on a Unix socket only the tier's owner can connect to,
//! the CLI's reserved way in.
//!
//! Why a socket beside the TCP port: whoever can reach loopback can open TCP connections,
//! and however well they are bounded, a local client can keep the TCP side busy. Connecting
//! to a Unix socket needs write permission on its file, which is the owner's alone (mode
//! 0600, in the 0711 state directory), so the CLI's connections there have their own
//! limits that no other user's clients touch.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UnixListener;

/// The socket's backlog: the CLI connects once per call.
const BACKLOG: i32 = 128;

/// The socket file this server created: removed at the end only if it is still that file
/// (a newer `up` on the same directory may have replaced it).
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    /// Device, inode and change time: the inode number alone may be reused at once.
    id: (u64, u64, i64, i64),
}

fn identity(meta: &fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

impl SocketFile {
    pub fn remove_if_ours(&self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| identity(&m) == self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Listens on `path`, mode 0600, replacing a socket an earlier run left there (a killed
/// `up` cannot remove its own). Anything else at `path` is left alone and refused.
pub fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // socket2 sets close-on-exec: the instances `up` starts do not inherit it.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    // Owner-only before anyone can connect: bind creates the file with the umask's mode,
    // and connections are refused until listen(). The directory is the owner's, so
    // nobody else can swap the file in between.
    let owned = (|| {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        let meta = fs::symlink_metadata(path)?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))?;
        Ok((
            listener,
            SocketFile {
                path: path.to_path_buf(),
                id: identity(&meta),
            },
        ))
    })();
    if owned.is_err() {
        let _ = fs::remove_file(path);
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_owner_only_replaces_a_stale_one_and_refuses_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let (first, file) = bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // A killed server leaves its socket: the next one takes its place.
        drop(first);
        let (_second, second_file) = bind(&path).unwrap();
        tokio::net::UnixStream::connect(&path).await.unwrap();
        // The first's cleanup must not remove the second's socket.
        file.remove_if_ours();
        assert!(path.exists());
        second_file.remove_if_ours();
        assert!(!path.exists());

        let plain = dir.path().join("plain");
        fs::write(&plain, "keep me").unwrap();
        let err = bind(&plain).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&plain).unwrap(), "keep me");

        let long = dir.path().join("x".repeat(120));
        assert!(bind(&long).is_err(), "longer than sun_path");
    }
}
