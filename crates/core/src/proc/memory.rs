//! Reading another process's memory, to see the arguments a blocked
//! syscall was given by pointer (a `pollfd` array, an `fd_set`).

use std::io::IoSliceMut;

use nix::errno::Errno;
use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

use super::ProcError;

/// Reads `len` bytes at `address` in the memory of `pid`.
///
/// Returns `Ok(None)` when the range is not (or no longer) fully mapped:
/// the pointer came from a syscall snapshot, and the thread may have moved
/// on and freed that memory since, so a stale pointer is expected, not an
/// error. Needs the same permission as ptrace-attaching to `pid`.
pub fn read_memory(pid: i32, address: u64, len: usize) -> Result<Option<Vec<u8>>, ProcError> {
    let Ok(base) = usize::try_from(address) else {
        return Ok(None);
    };
    let mut buffer = vec![0u8; len];
    let remote = [RemoteIoVec { base, len }];
    let mut local = [IoSliceMut::new(&mut buffer)];
    match process_vm_readv(Pid::from_raw(pid), &mut local, &remote) {
        Ok(read) if read == len => Ok(Some(buffer)),
        // A short read means the range runs into unmapped memory.
        Ok(_) | Err(Errno::EFAULT) => Ok(None),
        Err(Errno::ESRCH) => Err(ProcError::Gone { pid }),
        Err(errno) => Err(ProcError::Io {
            pid,
            about: "memory",
            source: errno.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_reads_back_what_is_there() {
        let data = [7u8, 8, 9, 10];
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        let address = data.as_ptr() as u64;
        let read = read_memory(pid, address, data.len()).expect("own memory is readable");
        assert_eq!(read.as_deref(), Some(&data[..]));
    }

    #[test]
    fn unmapped_memory_reads_as_nothing() {
        let pid = i32::try_from(std::process::id()).expect("pid fits in i32");
        // Page zero is never mapped in a Rust process.
        assert_eq!(read_memory(pid, 16, 8).expect("no error"), None);
    }
}
