//! Free loopback ports for servers started by a test.

use std::net::TcpListener;

/// A free loopback port (bound then released). Another process may take it
/// before the caller binds it: harnesses retry with a new one.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}
