//! How the sensor reaches the collector: mutual TLS (rustls) for an
//! `https://` URL, with the CA the collector's certificate must chain to and
//! this sensor's client certificate; plain HTTP/2 only for an `http://` URL
//! to a loopback address, and only when `collector.plaintext` says so.
//!
//! Everything is read and checked once, at start-up, so a missing or broken
//! file is a config error (exit code 2) rather than an endless reconnect loop.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::config::{CollectorConfig, ConfigError};

/// How long one connection attempt (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The collector's URL and how to connect to it.
#[derive(Clone, Debug)]
pub struct CollectorUrl {
    url: String,
    // Boxed: an Endpoint is large, and this travels by value in enums.
    endpoint: Box<Endpoint>,
}

impl fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Reads a PEM file named by `key`, which must hold a `label` block.
fn read_pem(
    key: &'static str,
    path: Option<&PathBuf>,
    label: &str,
) -> Result<Vec<u8>, ConfigError> {
    let path: &Path =
        path.ok_or_else(|| invalid(key, "must be set for an https:// collector.url"))?;
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    if !text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----")))
    {
        return Err(invalid(
            key,
            format!("{} holds no PEM {label}", path.display()),
        ));
    }
    Ok(pem)
}

/// Whether `host` (a URL's host, IPv6 in brackets or not) is this machine's
/// loopback: `localhost`, 127.0.0.0/8 or ::1.
#[must_use]
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl CollectorUrl {
    /// Checks the `[collector]` transport keys and reads the TLS files.
    ///
    /// # Errors
    /// A config error naming the key at fault.
    pub fn from_config(cfg: &CollectorConfig) -> Result<Self, ConfigError> {
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| invalid("collector.url", format!("{:?} is not a URL: {e}", cfg.url)))?;
        let host = uri
            .host()
            .ok_or_else(|| invalid("collector.url", format!("{:?} has no host", cfg.url)))?
            .to_owned();
        let endpoint = Endpoint::from(uri.clone()).connect_timeout(CONNECT_TIMEOUT);
        let endpoint = match uri.scheme_str() {
            Some("https") => {
                if cfg.plaintext {
                    return Err(invalid(
                        "collector.plaintext",
                        "is true but collector.url is https://; drop one of them",
                    ));
                }
                let ca = read_pem("collector.ca_file", cfg.ca_file.as_ref(), "CERTIFICATE")?;
                let cert = read_pem("collector.cert_file", cfg.cert_file.as_ref(), "CERTIFICATE")?;
                let key = read_pem("collector.key_file", cfg.key_file.as_ref(), "PRIVATE KEY")?;
                let server_name = if cfg.server_name.is_empty() {
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned()
                } else {
                    cfg.server_name.clone()
                };
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .identity(Identity::from_pem(cert, key))
                    .domain_name(server_name)
                    .timeout(CONNECT_TIMEOUT);
                endpoint.tls_config(tls).map_err(|e| {
                    invalid(
                        "collector.cert_file",
                        format!(
                            "with collector.key_file and collector.server_name: {}",
                            error_chain(&e)
                        ),
                    )
                })?
            }
            Some("http") => {
                if !cfg.plaintext {
                    return Err(invalid(
                        "collector.plaintext",
                        format!(
                            "must be true for an http:// collector.url ({}): events would travel \
                             unencrypted and unauthenticated; use https:// with ca_file, cert_file \
                             and key_file",
                            cfg.url
                        ),
                    ));
                }
                if !is_loopback_host(&host) {
                    return Err(invalid(
                        "collector.url",
                        format!(
                            "{} is http:// to a host that is not loopback; plaintext is allowed \
                             only to localhost, 127.0.0.0/8 or [::1]",
                            cfg.url
                        ),
                    ));
                }
                endpoint
            }
            _ => {
                return Err(invalid(
                    "collector.url",
                    format!("must start with https:// or http://, not {:?}", cfg.url),
                ));
            }
        };
        Ok(Self {
            url: cfg.url.clone(),
            endpoint: Box::new(endpoint),
        })
    }

    /// A plaintext `http://` URL to a loopback collector, as
    /// `plaintext = true` allows; for tests and tools on one machine.
    ///
    /// # Errors
    /// The URL is not `http://` to a loopback host.
    pub fn plaintext(url: &str) -> Result<Self, ConfigError> {
        Self::from_config(&CollectorConfig {
            url: url.to_owned(),
            plaintext: true,
            ..CollectorConfig::default()
        })
    }

    /// Connects (TCP, TLS, HTTP/2).
    ///
    /// # Errors
    /// Why not, with every cause (a refused certificate shows as the TLS
    /// alert the collector sent).
    pub async fn connect(&self) -> Result<Channel, String> {
        Endpoint::clone(&self.endpoint)
            .connect()
            .await
            .map_err(|e| error_chain(&e))
    }
}

/// `error: cause: cause ...` in one line; tonic's own text is only
/// "transport error".
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(toml: &str) -> Result<CollectorUrl, ConfigError> {
        crate::config::Config::parse(toml).and_then(|cfg| CollectorUrl::from_config(&cfg.collector))
    }

    fn key_of(err: ConfigError) -> &'static str {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not a key error: {other}"),
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "collector.example",
            "[::2]",
            "localhost.example",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn http_needs_plaintext_and_a_loopback_host() {
        let err = collector("[collector]\nurl = \"http://127.0.0.1:50051\"\n").unwrap_err();
        assert_eq!(key_of(err), "collector.plaintext");
        let err =
            collector("[collector]\nurl = \"http://collector.example:50051\"\nplaintext = true\n")
                .unwrap_err();
        assert_eq!(key_of(err), "collector.url");
        let ok =
            collector("[collector]\nurl = \"http://[::1]:50051\"\nplaintext = true\n").unwrap();
        assert_eq!(ok.to_string(), "http://[::1]:50051");
        assert_eq!(
            CollectorUrl::plaintext("http://localhost:1")
                .unwrap()
                .to_string(),
            "http://localhost:1"
        );
        assert!(CollectorUrl::plaintext("http://collector.example:1").is_err());
    }

    #[test]
    fn https_names_the_first_missing_or_unreadable_file() {
        let err = collector("[collector]\nurl = \"https://127.0.0.1:50051\"\n").unwrap_err();
        assert_eq!(key_of(err), "collector.ca_file");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = collector(&format!(
            "[collector]\nurl = \"https://127.0.0.1:50051\"\nca_file = {ca:?}\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM CERTIFICATE"),
            "{err}"
        );
        assert_eq!(key_of(err), "collector.ca_file");
        let err = collector("[collector]\nurl = \"https://127.0.0.1:50051\"\nplaintext = true\n")
            .unwrap_err();
        assert_eq!(key_of(err), "collector.plaintext");
    }

    #[test]
    fn other_schemes_are_refused() {
        let err = collector("[collector]\nurl = \"ftp://127.0.0.1:50051\"\n").unwrap_err();
        assert_eq!(key_of(err), "collector.url");
    }
}
