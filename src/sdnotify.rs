//! The systemd notify protocol (`sd_notify(3)`), so arc-node can run as a `Type=notify` unit.
//!
//! With `Type=notify`, systemd considers the service started only when the process says
//! `READY=1`, not when it has forked. That lets `systemctl start arc-node` (and units ordered
//! after it) wait until the WAL has been replayed and `/ready` answers 200, instead of racing a
//! node that is still recovering. The same socket carries `STATUS=` lines (shown by
//! `systemctl status`), `STOPPING=1` when a drain starts, and `WATCHDOG=1` keep-alive pings when
//! the unit sets `WatchdogSec=`.
//!
//! The protocol is one `AF_UNIX` datagram per message, sent to the socket named by
//! `NOTIFY_SOCKET`: a filesystem path, or a Linux abstract address written with a leading `@`.
//! It is small enough to speak with `std` alone; no libsystemd is linked.
//!
//! Hazards:
//! - Outside systemd (a terminal, the tests) `NOTIFY_SOCKET` is unset and [`Notifier::from_env`]
//!   returns `None`: that is normal, not an error. Callers log a failed send and carry on; a
//!   lost notification must never stop the node.
//! - The environment is left as it is (removing variables is `unsafe` in Rust 2024 and racy
//!   with other threads), so a child process would inherit `NOTIFY_SOCKET`. arc-node spawns
//!   none; `NotifyAccess=main` in the unit makes systemd ignore any that might.
//! - A send blocks at most [`SEND_TIMEOUT`] if the manager's queue is full, so calling it from
//!   async code cannot stall a runtime worker for long.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// The environment variable that names the notify socket.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The environment variable holding the watchdog period in microseconds.
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";

/// The environment variable naming the process the watchdog applies to.
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Longest time one send may block. systemd drains its socket promptly; this only bounds the
/// pathological case (a stuck manager, or a test receiver that never reads).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A handle for sending notifications to the service manager.
///
/// Cheap to keep for the life of the process; `notify` takes `&self`, so one `Notifier` can be
/// shared (e.g. in an `Arc`) between the lifecycle code and a watchdog task.
#[derive(Debug)]
pub struct Notifier {
    /// An unbound datagram socket; every message is sent to `address`.
    socket: UnixDatagram,
    /// The manager's socket, from `NOTIFY_SOCKET` or given to [`Notifier::at`].
    address: SocketAddr,
}

impl Notifier {
    /// Returns a notifier for the socket named by `NOTIFY_SOCKET`, or `None` when the process
    /// is not supervised by systemd (the variable is unset or empty).
    ///
    /// A variable that is set but unusable (a relative path, an unsupported `vsock:` address,
    /// a path too long for `sun_path`) is logged as a warning and also gives `None`: the node
    /// runs fine without notifications, and systemd will report the missing `READY=1`.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        if value.is_empty() {
            return None;
        }
        match Notifier::from_socket_value(&value) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                tracing::warn!(
                    notify_socket = %value.to_string_lossy(),
                    %error,
                    "NOTIFY_SOCKET is set but unusable; systemd notifications disabled"
                );
                None
            }
        }
    }

    /// Returns a notifier that sends to the datagram socket bound at `path` (a filesystem
    /// path). Used by tests, which bind their own socket instead of setting `NOTIFY_SOCKET`.
    ///
    /// # Errors
    /// When the path does not fit a Unix socket address or the sending socket cannot be created.
    pub fn at(path: impl AsRef<Path>) -> io::Result<Notifier> {
        Notifier::with_address(SocketAddr::from_pathname(path)?)
    }

    /// Parses a `NOTIFY_SOCKET` value: `@name` is an abstract address, an absolute path a
    /// filesystem socket. Anything else (relative paths, `vsock:` from newer systemd) is refused.
    fn from_socket_value(value: &OsStr) -> io::Result<Notifier> {
        let bytes = value.as_bytes();
        let address = if let Some(name) = bytes.strip_prefix(b"@") {
            SocketAddr::from_abstract_name(name)?
        } else if bytes.starts_with(b"/") {
            SocketAddr::from_pathname(Path::new(value))?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unsupported NOTIFY_SOCKET address (expected an absolute path or @abstract-name)",
            ));
        };
        Notifier::with_address(address)
    }

    fn with_address(address: SocketAddr) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Notifier { socket, address })
    }

    /// Sends `state` as one datagram: newline-separated `KEY=VALUE` assignments, e.g.
    /// `"READY=1\nSTATUS=serving"`.
    ///
    /// # Errors
    /// When the datagram cannot be sent: the manager's socket is gone (`ECONNREFUSED`,
    /// `ENOENT`), its queue stayed full for [`SEND_TIMEOUT`] (`WouldBlock`/`TimedOut`), or the
    /// message is empty. The caller logs it; it is never fatal.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        if state.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty notification",
            ));
        }
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.address)?;
        // Datagrams are all or nothing; a short count would mean a truncated assignment.
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notification datagram truncated",
            ));
        }
        Ok(())
    }

    /// Tells the manager that start-up is complete (`READY=1`) with a status line.
    ///
    /// # Errors
    /// As [`Notifier::notify`].
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", single_line(status)))
    }

    /// Sets the free-form status shown by `systemctl status` (`STATUS=`). Newlines in `text`
    /// become spaces, since a newline would start a new assignment.
    ///
    /// # Errors
    /// As [`Notifier::notify`].
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", single_line(text)))
    }

    /// Tells the manager that a graceful stop has begun (`STOPPING=1`), so it shows the unit as
    /// deactivating while buffers drain.
    ///
    /// # Errors
    /// As [`Notifier::notify`].
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// Sends one watchdog keep-alive ping (`WATCHDOG=1`); see [`Notifier::watchdog_interval`]
    /// for how often.
    ///
    /// # Errors
    /// As [`Notifier::notify`].
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// Returns how often to send [`Notifier::watchdog`] pings: half of `WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` recommends, so one late ping does not trip the watchdog.
    ///
    /// `None` when the unit has no `WatchdogSec=` (the variable is unset, empty, zero or not a
    /// number) or when `WATCHDOG_PID` names another process (the variables were inherited from
    /// a parent that is the one being watched).
    pub fn watchdog_interval() -> Option<Duration> {
        let period = std::env::var(WATCHDOG_USEC).ok();
        let pid = std::env::var(WATCHDOG_PID).ok();
        watchdog_interval_from(period.as_deref(), pid.as_deref(), std::process::id())
    }
}

/// The pure part of [`Notifier::watchdog_interval`], separate so tests need not mutate the
/// process environment.
fn watchdog_interval_from(
    period_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = watchdog_pid.map(str::trim).filter(|pid| !pid.is_empty())
        && pid.parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    let period: u64 = period_usec?.trim().parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(Duration::from_micros(period) / 2)
}

/// Replaces line breaks so a value cannot inject further assignments into the datagram.
fn single_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds a receiving socket in a fresh temp dir, as systemd would.
    fn receiver() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the receiving socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("setting a read timeout");
        (dir, path, socket)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).expect("receiving a datagram");
        String::from_utf8(buffer[..length].to_vec()).expect("notifications are UTF-8")
    }

    #[test]
    fn test_should_send_each_notification_as_one_datagram() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::at(&path).unwrap();
        notifier.ready("serving on 0.0.0.0:8000").unwrap();
        notifier.status("flushing 3 tables").unwrap();
        notifier.watchdog().unwrap();
        notifier.stopping().unwrap();
        notifier.notify("RELOADING=1\nMONOTONIC_USEC=42").unwrap();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving on 0.0.0.0:8000");
        assert_eq!(receive(&socket), "STATUS=flushing 3 tables");
        assert_eq!(receive(&socket), "WATCHDOG=1");
        assert_eq!(receive(&socket), "STOPPING=1");
        assert_eq!(receive(&socket), "RELOADING=1\nMONOTONIC_USEC=42");
    }

    #[test]
    fn test_should_keep_status_on_one_line() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::at(&path).unwrap();
        notifier.status("line one\nREADY=1\r\nline two").unwrap();
        let received = receive(&socket);
        assert_eq!(received.lines().count(), 1, "{received:?}");
        assert!(
            received.starts_with("STATUS=line one READY=1"),
            "{received:?}"
        );
    }

    #[test]
    fn test_should_send_to_abstract_address() {
        // Unique per process so parallel test runs on one machine do not collide.
        let name = format!("arc-node-sdnotify-test-{}", std::process::id());
        let receiver = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap())
            .expect("binding an abstract socket");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::from_socket_value(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.ready("ok").unwrap();
        assert_eq!(receive(&receiver), "READY=1\nSTATUS=ok");
    }

    #[test]
    fn test_should_accept_absolute_path_value() {
        let (_dir, path, socket) = receiver();
        let notifier = Notifier::from_socket_value(path.as_os_str()).unwrap();
        notifier.watchdog().unwrap();
        assert_eq!(receive(&socket), "WATCHDOG=1");
    }

    #[test]
    fn test_should_refuse_unsupported_socket_values() {
        for value in ["relative/notify.sock", "vsock:2:1234"] {
            let error = Notifier::from_socket_value(OsStr::new(value)).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{value}");
        }
        let too_long = format!("/{}", "x".repeat(200));
        assert!(Notifier::from_socket_value(OsStr::new(&too_long)).is_err());
    }

    #[test]
    fn test_should_report_missing_socket_as_error_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::at(dir.path().join("gone.sock")).unwrap();
        assert!(notifier.ready("x").is_err());
        assert!(notifier.notify("").is_err());
    }

    /// Set in the child process of `test_should_read_socket_and_watchdog_from_env`.
    const CHILD_MARKER: &str = "SDNOTIFY_TEST_CHILD";

    /// Reads the real environment in a child process (this test binary re-run on this one test),
    /// since changing the parent's environment is `unsafe` and racy with other tests.
    #[test]
    fn test_should_read_socket_and_watchdog_from_env() {
        if std::env::var_os(CHILD_MARKER).is_some() {
            let notifier = Notifier::from_env().expect("NOTIFY_SOCKET is set for the child");
            let interval = Notifier::watchdog_interval().expect("WATCHDOG_USEC is set");
            notifier
                .ready(&format!("interval_ms={}", interval.as_millis()))
                .expect("sending from the child");
            return;
        }
        let (_dir, path, socket) = receiver();
        let test_name = format!(
            "{}::test_should_read_socket_and_watchdog_from_env",
            module_path!()
                .split_once("::")
                .map_or(module_path!(), |(_crate, rest)| rest)
        );
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MARKER, "1")
            .env(NOTIFY_SOCKET, &path)
            .env(WATCHDOG_USEC, "3000000")
            .env_remove(WATCHDOG_PID)
            .output()
            .expect("re-running the test binary");
        assert!(output.status.success(), "{output:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "the child did not run the test: {output:?}"
        );
        assert_eq!(receive(&socket), "READY=1\nSTATUS=interval_ms=1500");
    }

    #[test]
    fn test_should_halve_watchdog_period_for_our_pid_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some(""), 7), half);
        assert_eq!(watchdog_interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("pid"), 7),
            None
        );
        assert_eq!(watchdog_interval_from(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("-5"), None, 7), None);
    }
}
