//! A TAP device: an Ethernet interface whose wire is a file descriptor.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::Error;

/// Linux limits interface names to 15 bytes.
pub const MAX_NAME: usize = 15;

/// Creates TAP device `name` in the calling thread's network namespace; frames written to
/// the returned file come out of the interface, frames the interface sends are read from
/// it (non-blocking). The device lives as long as the file is open: when its holder dies,
/// however it dies, the interface goes with it.
#[allow(unsafe_code)]
pub fn create(name: &str) -> Result<File, Error> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains(['/', ' ']) {
        return Err(Error::Invalid(format!("{name:?} is not an interface name (1 to {MAX_NAME} bytes)")));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(Error::io("opening /dev/net/tun (TAP devices need root and the tun driver)"))?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call; the fd is
    // the open tun device.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request as *mut libc::ifreq) };
    if rc < 0 {
        return Err(Error::io(format!("creating TAP device {name}"))(std::io::Error::last_os_error()));
    }
    Ok(file)
}
