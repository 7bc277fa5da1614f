//! Mutual TLS for `collector serve` (rustls): the server's identity, the CA
//! every sensor's client certificate must chain to, and the accept loop that
//! runs the handshakes.
//!
//! The handshakes run here rather than inside tonic so that a refused client
//! is logged with its address and reason (tonic only logs them at debug), a
//! client that never finishes its handshake is dropped after a timeout, and a
//! failing `accept` (e.g. out of file descriptors) pauses the loop instead of
//! ending the server.

use std::{
    fs,
    io::{self, ErrorKind},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client gets to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the
/// listen backlog, so a flood of silent clients costs bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Connections accepted but not yet taken by the gRPC server.
const ACCEPTED_QUEUE_DEPTH: usize = 64;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} is not PEM", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what} {} holds no certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("client CA {} holds no usable CA certificate", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the server certificate {} and key {} do not make an identity", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The certificates of a PEM file, in file order.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "server key";
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Pem {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The server side of mutual TLS: clients must present a certificate that
/// chains to the client CA.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Loads the server's certificate chain and key and the client CA.
    ///
    /// # Errors
    /// A file cannot be read or parsed, or the key does not match.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, TlsError> {
        let chain = read_certs("server certificate", cert)?;
        let private = read_key(key)?;
        let mut roots = RootCertStore::empty();
        // Certificates rustls cannot use as anchors are skipped; an empty
        // store is refused by the verifier builder below.
        roots.add_parsable_certificates(read_certs("client CA", client_ca)?);
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|source| TlsError::ClientCa {
                path: client_ca.to_owned(),
                source,
            })?;
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .map_err(|source| TlsError::Identity {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            })?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Accepts TCP connections on `listener` and hands them on: as they are for
/// plaintext, after a successful handshake for TLS. Ends when the receiver
/// is dropped.
pub(crate) fn accept_plaintext(listener: TcpListener) -> mpsc::Receiver<io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_DEPTH);
    tokio::spawn(async move {
        while let Some((stream, _)) = accept(&listener, &tx).await {
            if tx.send(Ok(stream)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// See [`accept_plaintext`]. Each handshake runs in its own task, so a slow
/// or silent client holds up nobody else.
pub fn accept_tls(
    listener: TcpListener,
    tls: &ServerTls,
    handshake_timeout: Duration,
) -> mpsc::Receiver<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_DEPTH);
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = pending.clone().acquire_owned().await else {
                return;
            };
            let Some((stream, peer)) = accept(&listener, &tx).await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(%peer, timeout = ?handshake_timeout, "TLS handshake not completed in time; connection closed");
                    }
                }
            });
        }
    });
    rx
}

/// The next connection, or None once nobody takes connections any more.
/// Errors of a single connection are skipped; others (out of file
/// descriptors) pause the loop briefly rather than spin or stop serving.
async fn accept<T>(
    listener: &TcpListener,
    tx: &mpsc::Sender<T>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Acks are small and latency matters to the sensor's buffer.
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                        | ErrorKind::Interrupted
                        | ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
