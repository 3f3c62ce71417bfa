//! The gRPC control plane: a tonic service that converts between proto and engine types and
//! holds no business logic, plus the server plumbing (Unix socket, health, reflection).

// tonic::Status is the error type of every gRPC handler; boxing it would only add noise.
#![allow(clippy::result_large_err)]

mod auth;
pub mod client;
pub mod convert;
mod server;
mod service;

use std::time::Duration;

pub use auth::{shared_access, Access, SharedAccess};
pub use server::{bind_unix, serve, tcp_server, TcpTls};
pub use service::ControlService;

/// Generated protobuf and gRPC types of `dualseal.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("dualseal.v1");
    include!(concat!(env!("OUT_DIR"), "/dualseal.v1.serde.rs"));

    /// Encoded descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("dualseal_descriptor");
}

/// How often WatchJob may send an update, at most.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(250);
/// WatchJob sends an update at least this often, so clients see liveness.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(1);

/// Errors serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}; check that the directory exists and is writable")]
    Bind {
        /// Socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another process is already serving on the socket.
    #[error("{0} is in use by a running process (another dualseald?); stop it or use another control_socket")]
    InUse(String),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TCP listener's certificate, key or client CA cannot be used.
    #[error("[tcp] TLS: {0}")]
    Tls(String),
}
