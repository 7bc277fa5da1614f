//! Nobody let in, nothing taken down: the collector serves mutual TLS and
//! refuses clients without a certificate of its CA; oversized and garbage
//! input ends only the offending stream or connection, while a real sensor
//! keeps streaming beside it; plaintext must be asked for and stays on
//! loopback; secrets and the database are private; the sensor refuses a
//! config file others may change.

use std::{
    os::unix::fs::PermissionsExt as _, path::Path, process::Command, sync::Arc, time::Duration,
};

use bytes::Bytes;
use prost::Message as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use sensor_proto::v1::{Event, EventBatch};
use serde_json::Value;
use tests::{
    Certs, Collector, EventExt, Rig, Sensor, binary, of_kind, wait_for_line, wait_for_lines,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{ClientConfig, RootCertStore},
};

/// gRPC status codes the collector answers with.
const INVALID_ARGUMENT: u32 = 3;
const RESOURCE_EXHAUSTED: u32 = 8;

/// How long a hand-made call may take before the test gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS client that trusts `ca` and presents `identity` (cert, key), if any.
fn tls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One gRPC message frame: uncompressed flag, length, bytes.
fn frame(flag: u8, declared_len: u32, payload: &[u8]) -> Bytes {
    let mut out = vec![flag];
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn batch_frame(events: Vec<Event>) -> Bytes {
    let body = EventBatch { events }.encode_to_vec();
    frame(0, u32::try_from(body.len()).unwrap(), &body)
}

fn events(sensor: &str, n: u64) -> Vec<Event> {
    (1..=n)
        .map(|seq| Event {
            sensor_id: sensor.to_owned(),
            host_id: "h".into(),
            host_name: "hostile-host".into(),
            seq,
            ..Event::default()
        })
        .collect()
}

/// Undoes gRPC's percent-encoding of grpc-message.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, message))
}

/// Opens the collector's `Stream` call by hand over `io`, sends `body` as
/// is (the request stays open, as a sensor's does) and returns the status
/// the collector ends the call with. Err: the connection or call failed.
async fn stream_call<IO>(io: IO, body: Vec<Bytes>) -> Result<(u32, String), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let call = async move {
        let (mut client, connection) = h2::client::handshake(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = http::Request::post("https://127.0.0.1/sensor.v1.Collector/Stream")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut send) = client
            .send_request(request, false)
            .map_err(|e| format!("request: {e}"))?;
        for chunk in body {
            send.send_data(chunk, false)
                .map_err(|e| format!("send: {e}"))?;
        }
        let response = response.await.map_err(|e| format!("response: {e}"))?;
        let (parts, mut recv) = response.into_parts();
        if let Some(status) = status_of(&parts.headers) {
            return Ok(status);
        }
        while let Some(data) = recv.data().await {
            let data = data.map_err(|e| format!("body: {e}"))?;
            let _ = recv.flow_control().release_capacity(data.len());
        }
        let trailers = recv
            .trailers()
            .await
            .map_err(|e| format!("trailers: {e}"))?
            .ok_or("the call ended without trailers")?;
        status_of(&trailers).ok_or_else(|| "trailers without grpc-status".to_owned())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
}

/// `stream_call` over TLS as the client `connector` makes.
async fn tls_stream_call(
    addr: &str,
    connector: &TlsConnector,
    body: Vec<Bytes>,
) -> Result<(u32, String), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    stream_call(tls, body).await
}

/// The value of a counter in the last health event of `sensor_id`.
fn last_health_counter(collector: &Collector, sensor_id: &str, stage: &str, name: &str) -> u64 {
    let all = collector.query(&["--sensor-id", sensor_id, "--kind", "health"]);
    let last = all
        .iter()
        .max_by_key(|e| e.u64_at("/seq"))
        .expect("a health event");
    last["health"]["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["stage"] == stage && c["name"] == name)
        .map(|c| c.u64_at("/value"))
        .unwrap_or_else(|| panic!("no counter {stage}/{name}"))
}

/// Runs `sh -c 'exit CODE'` and waits until its exit is stored.
fn marker_exit_stored(collector: &Collector, code: i32) -> Vec<Value> {
    let marker = Command::new("/bin/sh")
        .args(["-c", &format!("exit {code}")])
        .spawn()
        .unwrap();
    let pid = marker.id().to_string();
    marker.wait_with_output().unwrap();
    let events = collector.wait_for(&["--pid", &pid], |e| !of_kind(e, "exit").is_empty());
    assert_eq!(of_kind(&events, "exit")[0]["exit"]["exit_code"], code);
    events
}

/// Stops the rig's sensor and checks, from its final health report, that
/// its stream never broke and every event it encoded is stored, once.
fn assert_delivered_everything_without_a_reconnect(mut rig: Rig, sensor_id: &str) {
    rig.sensor.stop_now();
    let stored = rig.collector.query(&["--sensor-id", sensor_id]);
    let reconnects = last_health_counter(&rig.collector, sensor_id, "ship", "reconnects");
    let dropped = last_health_counter(&rig.collector, sensor_id, "ship", "buffer_full_dropped");
    let encoded = last_health_counter(&rig.collector, sensor_id, "encode", "events");
    assert_eq!(reconnects, 0, "the sensor's stream broke");
    assert_eq!(dropped, 0);
    // Everything encoded before the final report, and the report itself.
    assert_eq!(stored.len() as u64, encoded + 1);
    let mut seqs: Vec<u64> = stored.iter().map(|e| e.u64_at("/seq")).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), stored.len(), "no event is stored twice");
}

#[test]
fn oversized_and_garbage_messages_are_refused_while_another_sensor_keeps_streaming() {
    let collector = Collector::start_tls(
        "127.0.0.1:0",
        Certs::generate_for(&["client", "hostile"]),
        &[
            "--max-batch-events",
            "100",
            "--max-message-bytes",
            "1048576",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    // Well within the limits: 50 events of at most a few KiB.
    std::fs::write(&config, "[collector]\nbatch_size = 50\n").unwrap();
    let rig = Rig::with_collector(
        collector,
        &["--sensor-id", "good", "--config", config.to_str().unwrap()],
    );
    let addr = rig.collector.addr().to_owned();
    let certs = rig.collector.certs.as_ref().unwrap();
    let hostile = tls_client(
        &certs.path("ca.pem"),
        Some((&certs.path("hostile.pem"), &certs.path("hostile.key"))),
    );
    let garbage = vec![0xff_u8; 64];
    let decode_error = EventBatch::decode(garbage.as_slice()).unwrap_err();

    runtime().block_on(async {
        // Held open, silent, throughout: it must not hold up anyone else.
        let _silent = TcpStream::connect(&addr).await.unwrap();

        // Bytes that are not TLS: the connection is closed (after at most a
        // TLS alert), not left hanging and not fatal to the server.
        let mut junk = TcpStream::connect(&addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\nHost: collector\r\n\r\n\x00\x01\xfe\xff")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(CALL_TIMEOUT, junk.read_to_end(&mut answer))
            .await
            .expect("a connection sending junk is closed");
        assert!(
            read.is_err() || answer.is_empty() || answer[0] == 0x15,
            "only a TLS alert may come back, got {answer:?}"
        );

        // An authenticated client sending what no sensor sends.
        assert_eq!(
            tls_stream_call(&addr, &hostile, vec![batch_frame(events("hostile", 101))]).await,
            Ok((
                RESOURCE_EXHAUSTED,
                "batch of 101 events refused: at most 100 events per batch".to_owned()
            ))
        );
        // Announced as 2 MiB: refused from the 5-byte header, nothing buffered.
        assert_eq!(
            tls_stream_call(&addr, &hostile, vec![frame(0, 2 << 20, b"x")]).await,
            Ok((
                RESOURCE_EXHAUSTED,
                "batch message refused: Error, decoded message length too large: \
                 found 2097152 bytes, the limit is: 1048576 bytes"
                    .to_owned()
            ))
        );
        assert_eq!(
            tls_stream_call(&addr, &hostile, vec![frame(0, 64, &garbage)]).await,
            Ok((
                INVALID_ARGUMENT,
                format!("batch message refused: {decode_error}")
            ))
        );
        assert_eq!(
            tls_stream_call(&addr, &hostile, vec![frame(7, 1, b"x")]).await,
            Ok((
                INVALID_ARGUMENT,
                "batch message refused: protocol error: received message with invalid \
                 compression flag: 7 (valid flags are 0 and 1), while sending request"
                    .to_owned()
            ))
        );
    });

    // The good sensor streamed through all of it and still does.
    marker_exit_stored(&rig.collector, 7);
    assert_eq!(
        rig.collector.query(&["--sensor-id", "hostile"]),
        Vec::<Value>::new()
    );
    assert_delivered_everything_without_a_reconnect(rig, "good");
}

#[test]
fn clients_without_a_certificate_of_the_collectors_ca_are_refused_and_nothing_of_theirs_is_stored()
{
    let rig = Rig::start_with(&["--sensor-id", "trusted"]);
    let certs = rig.collector.certs.as_ref().unwrap();
    let addr = rig.collector.addr().to_owned();
    let other_ca = Certs::generate_for(&["client"]);

    runtime().block_on(async {
        // No client certificate at all. Under TLS 1.3 the client's
        // handshake completes before the server has judged it; the refusal
        // then ends the connection under the first call.
        let anonymous = tls_client(&certs.path("ca.pem"), None);
        let call = tls_stream_call(&addr, &anonymous, vec![batch_frame(events("anonymous", 3))]);
        assert!(
            call.await.is_err(),
            "a client without a certificate got an answer"
        );

        // A certificate from another CA.
        let stranger = tls_client(
            &certs.path("ca.pem"),
            Some((&other_ca.path("client.pem"), &other_ca.path("client.key"))),
        );
        let call = tls_stream_call(&addr, &stranger, vec![batch_frame(events("stranger", 3))]);
        assert!(call.await.is_err(), "a client of another CA got an answer");
    });
    // The collector says whom it refused, and why.
    for reason in [
        "peer sent no certificates",
        "invalid peer certificate: UnknownIssuer",
    ] {
        let line = wait_for_line(&rig.collector.log, reason);
        assert!(
            line.contains("TLS handshake refused peer=127.0.0.1:"),
            "{line}"
        );
    }

    // A real sensor with another CA's certificate: it trusts the collector,
    // the collector does not trust it.
    let mut cmd = Command::new(binary("sensor"));
    cmd.args(["run", "--sensor-id", "intruder", "--health-interval", "1"])
        .args(["--collector", &rig.collector.url])
        .args(["--ca-file", certs.path("ca.pem").to_str().unwrap()])
        .args(other_ca.sensor_args("client").iter().skip(2));
    let intruder = Sensor::spawn(cmd);
    let complaint = wait_for_line(&intruder.log, "retrying in");
    // Under TLS 1.3 the refusal usually arrives with the first call.
    let url = &rig.collector.url;
    assert!(
        complaint.contains(&format!("collector {url}: stream refused: "))
            || complaint.contains(&format!("collector {url}: connect failed: ")),
        "{complaint}"
    );
    // The stranger above and the intruder's attempts since.
    wait_for_lines(
        &rig.collector.log,
        "TLS handshake refused peer=127.0.0.1:",
        3,
    );
    let unknown_issuer = wait_for_lines(
        &rig.collector.log,
        "invalid peer certificate: UnknownIssuer",
        2,
    );
    assert!(
        unknown_issuer
            .iter()
            .all(|l| l.contains("TLS handshake refused"))
    );

    // A few attempts, each refused, then it goes: two sensors on two cores
    // would slow each other down for the rest of the test.
    wait_for_lines(&intruder.log, "retrying in", 3);
    intruder.kill();

    // The trusted sensor goes on; nothing of the others was stored.
    marker_exit_stored(&rig.collector, 5);
    for id in ["anonymous", "stranger", "intruder"] {
        assert_eq!(
            rig.collector.query(&["--sensor-id", id]),
            Vec::<Value>::new(),
            "{id}"
        );
    }
    assert_delivered_everything_without_a_reconnect(rig, "trusted");
}

/// Runs `collector ARGS` expecting exit code 2 and one line on stderr.
fn collector_refuses(args: &[&str]) -> String {
    let out = Command::new(binary("collector"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_owned()
}

/// Runs `sensor run ARGS` expecting exit code 2 and one line on stderr.
fn sensor_refuses(args: &[&str]) -> String {
    let out = Command::new(binary("sensor"))
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn plaintext_must_be_asked_for_and_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let db = db.to_str().unwrap();
    assert_eq!(
        collector_refuses(&["serve", "--listen", "127.0.0.1:0", "--db", db]),
        "collector: error: refusing to serve without TLS: give --tls-cert, --tls-key and \
         --client-ca (`collector certs` makes test ones), or --plaintext on a loopback address"
    );
    assert_eq!(
        collector_refuses(&["serve", "--plaintext", "--listen", "0.0.0.0:0", "--db", db]),
        "collector: error: --plaintext is allowed only on a loopback address, not 0.0.0.0:0; \
         use --tls-cert, --tls-key and --client-ca"
    );
    assert_eq!(
        collector_refuses(&[
            "serve",
            "--tls-cert",
            "server.pem",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db
        ]),
        "collector: error: --tls-cert needs --tls-key and --client-ca too"
    );
    assert!(
        !Path::new(db).exists(),
        "no database is created on a usage error"
    );

    assert_eq!(
        sensor_refuses(&["--collector", "http://127.0.0.1:50051"]),
        "sensor: invalid config: `collector.plaintext` must be true for an http:// collector.url \
         (http://127.0.0.1:50051): events would travel unencrypted and unauthenticated; use \
         https:// with ca_file, cert_file and key_file"
    );
    // Refused from the URL alone: nothing is resolved or contacted.
    assert_eq!(
        sensor_refuses(&[
            "--plaintext",
            "--collector",
            "http://collector.example:50051"
        ]),
        "sensor: invalid config: `collector.url` http://collector.example:50051 is http:// to a \
         host that is not loopback; plaintext is allowed only to localhost, 127.0.0.0/8 or [::1]"
    );
    assert_eq!(
        sensor_refuses(&["--collector", "https://127.0.0.1:50051"]),
        "sensor: invalid config: `collector.ca_file` must be set for an https:// collector.url"
    );

    // Asked for, on loopback: it works.
    let rig = Rig::with_collector(
        Collector::start_plaintext("127.0.0.1:0", &[]),
        &["--sensor-id", "plain"],
    );
    assert!(rig.collector.url.starts_with("http://127.0.0.1:"));
    marker_exit_stored(&rig.collector, 3);
    wait_for_line(&rig.collector.log, "(PLAINTEXT)");
}

#[test]
fn the_database_and_the_keys_are_private_and_so_must_the_config_be() {
    let rig = Rig::start();
    marker_exit_stored(&rig.collector, 4);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let db = rig.collector.db.to_str().unwrap().to_owned();
    for file in [db.clone(), format!("{db}-wal"), format!("{db}-shm")] {
        assert_eq!(mode(Path::new(&file)), 0o600, "{file}");
    }
    let certs = rig.collector.certs.as_ref().unwrap();
    for key in ["ca.key", "server.key", "client.key"] {
        assert_eq!(mode(&certs.path(key)), 0o600, "{key}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    std::fs::write(&config, "sensor_id = \"s\"\n").unwrap();
    let path = config.to_str().unwrap();
    for (bits, who) in [(0o666, "everyone"), (0o664, "its group")] {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(bits)).unwrap();
        assert_eq!(
            sensor_refuses(&["--stdout", "--config", path]),
            format!(
                "sensor: refusing config {path}: it is writable by {who} (mode 0{bits:o}); chmod \
                 go-w it; whoever can change it can redirect or silence the sensor"
            )
        );
    }
}
