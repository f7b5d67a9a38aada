//! The API over TLS: the node's certificate (the one genesis pins for it)
//! and a listener that completes handshakes beside the accept loop, so a
//! client that stalls its handshake delays no one else.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::NodeError;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// The address of an API client, for per-client limits (plain or TLS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The server side of the API's TLS: reads the certificate and key files
/// and refuses a certificate other than the one genesis pins for this node
/// (clients would refuse it).
pub fn server_config(cert: &Path, key: &Path, pinned: &[u8]) -> Result<Arc<ServerConfig>, NodeError> {
    let setup = |what: &Path, e: &dyn std::fmt::Display| NodeError::Setup(format!("{}: {e}", what.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| setup(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(cert, &e))?;
    let leaf = certs
        .first()
        .ok_or_else(|| setup(cert, &"no certificate in the file"))?;
    if pinned.is_empty() {
        return Err(setup(
            cert,
            &"genesis pins no API certificate for this node, so clients holding it could not check this one",
        ));
    }
    if leaf.as_ref() != pinned {
        return Err(setup(
            cert,
            &"not the API certificate genesis pins for this node (clients would refuse it)",
        ));
    }
    let text = genesis::read_secret(key).map_err(|e| NodeError::Setup(e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| setup(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| setup(key, &e))?;
    Ok(Arc::new(config))
}

/// A listener whose connections have completed their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and hands over each connection once its handshake
    /// is done; must be called inside a Tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!("API accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake from {addr}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake from {addr} timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (its runtime is stopping): no more
            // connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
