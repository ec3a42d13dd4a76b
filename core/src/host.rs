//! The name of this host, for journals, provenance and lock holders.

/// The host name, for journals and provenance.
pub fn host_name() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    if name.is_empty() {
        "unknown-host".to_string()
    } else {
        name.into_owned()
    }
}
