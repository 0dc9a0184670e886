//! Bounds on what a user-made tree can make tabula do: how deep the walks go, the stack they run on,
//! and the file descriptors they hold.
//!
//! Any user can make a directory chain tens of thousands deep in their home. The walks (diff, restore)
//! hold an fd per level on each side (every object is reached fd-relative, never by path) and recurse,
//! so they stop at [`MAX_DEPTH`] with a clear error instead of overflowing the stack or running out of
//! fds. Real trees stay far below it: a path of more than 2048 components is longer than `PATH_MAX`
//! and cannot be opened by path at all.

use std::os::fd::AsFd;

/// How many directories deep a walk goes below its top before it stops with an error.
pub const MAX_DEPTH: usize = 2048;

/// Stack for a walk thread: [`MAX_DEPTH`] levels of the deepest walk (diff's `pair`/`child`/`both`,
/// measured at about 4 KiB a level unoptimised) with room to spare. Reserved, not committed: only
/// the pages a walk touches cost memory.
const WALK_STACK: usize = 64 << 20;

/// The message of a walk that stopped at [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!(
        "more than {MAX_DEPTH} directories deep: tabula does not go further (the path is longer than \
         any program can open by name)"
    )
}

/// Runs `f` (a recursive walk) on a thread with a stack sized for [`MAX_DEPTH`] levels, so the bound,
/// not the caller's stack (2 MiB in a test thread, 8 MiB in `main`), decides how deep it may go.
pub fn with_walk_stack<T: Send>(f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("tabula-walk".into())
            .stack_size(WALK_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| anyhow::Error::new(e).context("starting the tree walk"))?;
        match handle.join() {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Raises the soft limit on open files to the hard limit (as systemd advises for programs that do not
/// use `select()`): a walk at [`MAX_DEPTH`] holds two fds per level.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        // Failure only means deep walks meet EMFILE, reported as an error for that directory.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Whether `fd` is a pipe or socket whose reader has gone (`tabula … | head -1`): writing to it can
/// only fail with `EPIPE`.
pub fn reader_gone(fd: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::ERR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_stack_runs_and_returns() {
        assert_eq!(with_walk_stack(|| 6 * 7).unwrap(), 42);
    }

    #[test]
    fn a_pipe_without_reader_is_gone() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(!reader_gone(&w));
        drop(r);
        assert!(reader_gone(&w));
    }
}
