//! Serving the control API: the Unix socket, the TCP listener with its TLS, and the services
//! beside the control one (health, reflection).

use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::auth::SharedAccess;
use super::service::ControlService;
use super::{pb, ApiError};
use crate::engine::Engine;

/// Binds the control socket, replacing a stale socket file left by a crash, and restricts it
/// to the owner and group.
///
/// # Errors
/// `InUse` when a live server answers on it, `Bind` otherwise.
pub async fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, ApiError> {
    let shown = path.display().to_string();
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(ApiError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(|source| ApiError::Bind {
            path: shown.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: shown.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ApiError::Bind {
            path: shown,
            source,
        }
    })?;
    Ok(listener)
}

/// TLS settings of the TCP listener, already read from their files.
pub struct TcpTls {
    /// Server certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Server key, PEM (zeroized on drop).
    pub key_pem: zeroize::Zeroizing<Vec<u8>>,
    /// Client CA, PEM: mutual TLS when set.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Whether a client may connect without a certificate (and use a bearer token).
    pub client_cert_optional: bool,
}

impl std::fmt::Debug for TcpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTls")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TcpTls {
    /// Checks the certificate chain, key and client CA as the listener will use them, naming
    /// the setting that is wrong: called before the journal is opened, and by `validate`.
    ///
    /// # Errors
    /// `Tls`, naming `tcp.tls_cert`, `tcp.tls_key` or `tcp.client_ca` and the remedy.
    pub fn check(&self) -> Result<(), ApiError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = |what: &str, pem: &[u8]| {
            match CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(c) if !c.is_empty() => Ok(()),
            Ok(_) => Err(ApiError::Tls(format!(
                "{what} holds no PEM CERTIFICATE block; give a PEM file (-----BEGIN CERTIFICATE-----)"
            ))),
            Err(e) => Err(ApiError::Tls(format!(
                "{what} is not a readable PEM certificate file ({e}); give a PEM file (-----BEGIN CERTIFICATE-----)"
            ))),
        }
        };
        certs(
            "tcp.tls_cert (the daemon's certificate, then its intermediates)",
            &self.cert_pem,
        )?;
        // The parser's own error is not shown: it may quote a line of the key file.
        if PrivateKeyDer::from_pem_slice(&self.key_pem).is_err() {
            return Err(ApiError::Tls(
                "tcp.tls_key holds no readable PEM private key; give the key of tcp.tls_cert \
                 (PKCS#8, PKCS#1 or SEC1 PEM)"
                    .into(),
            ));
        }
        if let Some(ca) = &self.client_ca_pem {
            certs("tcp.client_ca (the CA that signs client certificates)", ca)?;
        }
        // What PEM parsing cannot see (a key that is not the certificate's, a certificate the
        // TLS stack refuses) is asked of the TLS stack, first without the client CA so that a
        // refusal names the right setting.
        tls_builder(self, false).map_err(|e| {
            ApiError::Tls(format!(
                "tcp.tls_cert and tcp.tls_key are refused by the TLS stack ({e}); check that the \
                 key is the certificate's own and the certificate is X.509 v3"
            ))
        })?;
        if self.client_ca_pem.is_some() {
            tls_builder(self, true).map_err(|e| {
                ApiError::Tls(format!(
                    "tcp.client_ca is refused by the TLS stack ({e}); give the PEM of the CA that \
                     signs client certificates (X.509 v3)"
                ))
            })?;
        }
        Ok(())
    }
}

/// A server builder with `t`'s TLS settings (the client CA only when `with_client_ca`), or the
/// TLS stack's refusal with its causes.
fn tls_builder(t: &TcpTls, with_client_ca: bool) -> Result<tonic::transport::Server, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let mut cfg =
        ServerTlsConfig::new().identity(Identity::from_pem(&t.cert_pem, t.key_pem.as_slice()));
    if let (true, Some(ca)) = (with_client_ca, &t.client_ca_pem) {
        cfg = cfg
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(t.client_cert_optional);
    }
    tonic::transport::Server::builder()
        .tls_config(cfg)
        .map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        })
}

async fn routes(
    builder: tonic::transport::Server,
    engine: Engine,
    access: SharedAccess,
) -> Result<tonic::transport::server::Router, ApiError> {
    let mut builder = builder;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::control_service_server::ControlServiceServer<ControlService>>()
        .await;
    // Both reflection versions: grpcurl and grpcio-reflection's descriptor database still
    // speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e: tonic_reflection::server::Error| ApiError::Bind {
        path: "reflection".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let v1 = reflection().build_v1().map_err(reflection_error)?;
    let v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    Ok(builder
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(pb::control_service_server::ControlServiceServer::new(
            ControlService { engine, access },
        )))
}

/// Serves the control API on `listener` until `shutdown` resolves, then stops accepting
/// and lets in-flight calls finish. `access` decides who may call what.
///
/// # Errors
/// `Transport` when the server fails.
pub async fn serve(
    engine: Engine,
    access: SharedAccess,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ApiError> {
    routes(tonic::transport::Server::builder(), engine, access)
        .await?
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Prepares the control API over TCP (TLS unless `tls` is `None`, which config validation
/// allows only on loopback): the TLS settings are checked here, before the daemon says it is
/// ready; the returned future serves until `shutdown` resolves.
///
/// # Errors
/// `Transport` when the TLS settings are invalid (a key that is not a key, a certificate
/// that does not parse).
pub async fn tcp_server(
    engine: Engine,
    access: SharedAccess,
    listener: tokio::net::TcpListener,
    tls: Option<TcpTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<impl std::future::Future<Output = Result<(), ApiError>> + Send, ApiError> {
    let builder = match &tls {
        Some(t) => tls_builder(t, true).map_err(ApiError::Tls)?,
        None => tonic::transport::Server::builder(),
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = routes(builder, engine, access).await?;
    Ok(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(ApiError::from)
    })
}
