//! `collector certs`: a private test CA and the certificates mutual TLS
//! needs, so a fresh machine can run collector and sensor securely without
//! any PKI. For production, use certificates from your own CA.
//!
//! Files written into the output directory (keys mode 0600, certificates
//! 0644, the directory 0700 when created):
//!
//! | file | what |
//! |------|------|
//! | `ca.pem`, `ca.key` | the CA: `collector serve --client-ca ca.pem`, the sensor's `ca_file` |
//! | `server.pem`, `server.key` | the collector's identity, for the given hosts |
//! | `NAME.pem`, `NAME.key` | a sensor's client identity (default NAME: `client`) |
//!
//! Files that exist already are kept, and a CA already there issues the new
//! certificates: running it again is harmless and adds missing clients.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// How long the generated certificates are valid.
const VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot create {}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} exists but {} does not: a CA needs both", present.display(), missing.display())]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error(
        "invalid client name {0:?}: use letters, digits, '.', '-' and '_', and not \"ca\" or \"server\""
    )]
    ClientName(String),
    #[error("cannot make {what}")]
    Generate { what: String, source: rcgen::Error },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct CertsRequest {
    /// Names and addresses the server certificate is valid for.
    pub hosts: Vec<String>,
    /// One client certificate per name.
    pub clients: Vec<String>,
}

/// What `generate` did with each file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertsReport {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// The CA's parameters. Its name carries a digest of its public key: two
/// test CAs never share a name (so a certificate of one is reported as of
/// an unknown issuer by the other, not as a bad signature), and the name is
/// known again from the key alone when a later run issues more certificates.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let digest = Sha256::digest(key.public_key_raw());
    let id: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sensor");
    dn.push(DnType::CommonName, format!("sensor test CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn valid_now(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks that are a little behind.
    params.not_before = now - Duration::from_secs(24 * 3600);
    params.not_after = now + VALIDITY;
}

fn is_valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name != "ca"
        && name != "server"
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Writes `contents` to a new file with `mode`; never replaces a file.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertsError> {
    let create = |source| CertsError::Create {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(create)?;
    file.write_all(contents.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)
}

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertsError + '_ {
    move |source| CertsError::Generate {
        what: what.to_owned(),
        source,
    }
}

/// Generates, into `dir`, whatever of the CA, the server certificate and the
/// client certificates is missing.
///
/// # Errors
/// A name is invalid, a file cannot be written or read, or generation fails.
pub fn generate(dir: &Path, request: &CertsRequest) -> Result<CertsReport, CertsError> {
    if let Some(bad) = request.clients.iter().find(|n| !is_valid_client_name(n)) {
        return Err(CertsError::ClientName(bad.clone()));
    }
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CertsError::Create {
                path: dir.to_owned(),
                source,
            })?;
    }
    let mut report = CertsReport::default();
    let ca_cert = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let ca_key = match (ca_cert.exists(), ca_key_path.exists()) {
        (true, true) => {
            let pem = fs::read_to_string(&ca_key_path).map_err(|source| CertsError::Read {
                path: ca_key_path.clone(),
                source,
            })?;
            report.kept.extend([ca_cert.clone(), ca_key_path.clone()]);
            KeyPair::from_pem(&pem).map_err(generate_err("the CA key"))?
        }
        (false, false) => {
            let key = KeyPair::generate().map_err(generate_err("the CA key"))?;
            let mut params = ca_params(&key);
            valid_now(&mut params);
            let cert = params
                .self_signed(&key)
                .map_err(generate_err("the CA certificate"))?;
            write_new(&ca_key_path, &key.serialize_pem(), 0o600)?;
            write_new(&ca_cert, &cert.pem(), 0o644)?;
            report
                .written
                .extend([ca_cert.clone(), ca_key_path.clone()]);
            key
        }
        (true, false) => {
            return Err(CertsError::HalfCa {
                present: ca_cert,
                missing: ca_key_path,
            });
        }
        (false, true) => {
            return Err(CertsError::HalfCa {
                present: ca_key_path,
                missing: ca_cert,
            });
        }
    };
    // The issuer is the CA's name and key; the certificate itself is not
    // needed to sign (the name follows from the key, see `ca_params`).
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);

    let server = leaf_params(
        "sensor collector",
        &request.hosts,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .map_err(generate_err("the server certificate"))?;
    issue(dir, "server", server, &issuer, &mut report)?;
    for name in &request.clients {
        let client = leaf_params(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
            .map_err(generate_err(name))?;
        issue(dir, name, client, &issuer, &mut report)?;
    }
    Ok(report)
}

fn leaf_params(
    common_name: &str,
    hosts: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "sensor");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    valid_now(&mut params);
    Ok(params)
}

/// Writes NAME.pem and NAME.key unless NAME.pem exists.
fn issue(
    dir: &Path,
    name: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    report: &mut CertsReport,
) -> Result<(), CertsError> {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    if cert_path.exists() {
        report.kept.push(cert_path);
        if key_path.exists() {
            report.kept.push(key_path);
        }
        return Ok(());
    }
    let key = KeyPair::generate().map_err(generate_err(name))?;
    let cert = params.signed_by(&key, issuer).map_err(generate_err(name))?;
    // The key first: a certificate without its key would be kept forever.
    if key_path.exists() {
        fs::remove_file(&key_path).map_err(|source| CertsError::Create {
            path: key_path.clone(),
            source,
        })?;
    }
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    report.written.extend([cert_path, key_path]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_private_and_a_second_run_adds_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tls");
        let request = CertsRequest {
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
            clients: vec!["client".into()],
        };
        let first = generate(&out, &request).unwrap();
        assert_eq!(first.written.len(), 6);
        assert!(first.kept.is_empty());
        assert_eq!(mode(&out), 0o700);
        for key in ["ca.key", "server.key", "client.key"] {
            assert_eq!(mode(&out.join(key)), 0o600, "{key}");
        }
        for cert in ["ca.pem", "server.pem", "client.pem"] {
            assert_eq!(mode(&out.join(cert)), 0o644, "{cert}");
        }
        let ca_before = fs::read(out.join("ca.pem")).unwrap();

        let second = generate(
            &out,
            &CertsRequest {
                clients: vec!["client".into(), "web-2".into()],
                ..request
            },
        )
        .unwrap();
        assert_eq!(
            second.written,
            vec![out.join("web-2.pem"), out.join("web-2.key")]
        );
        assert_eq!(second.kept.len(), 6);
        assert_eq!(fs::read(out.join("ca.pem")).unwrap(), ca_before);
    }

    #[test]
    fn bad_client_names_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "ca", "server", "../x", "a/b", ".hidden"] {
            let err = generate(
                dir.path(),
                &CertsRequest {
                    hosts: vec!["localhost".into()],
                    clients: vec![bad.into()],
                },
            )
            .unwrap_err();
            assert!(matches!(err, CertsError::ClientName(_)), "{bad:?}: {err}");
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
