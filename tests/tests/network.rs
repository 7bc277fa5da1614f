//! Network and DNS events through the real pipeline: the kernel's view of
//! real sockets on loopback, stored by the collector and queried back.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    thread,
    time::Duration,
};

use serde_json::Value;
use tests::{EventExt, Rig};

/// The socket inode of a descriptor, as fstat(2) shows it.
fn inode(fd: &impl AsRawFd) -> u64 {
    // SAFETY: fstat on our own descriptor into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) }, 0);
    st.st_ino
}

/// This process's network events with `op` on local or remote `port`, once
/// `count` of them are stored.
fn network_events(rig: &Rig, op: &str, port: u16, count: usize) -> Vec<Value> {
    let op = format!("NETWORK_OP_{op}");
    let matches = move |e: &Value| {
        e.kind() == "network"
            && e.str_at("/network/op") == op
            && (e.u64_at("/network/local_port") == u64::from(port)
                || e.u64_at("/network/remote_port") == u64::from(port))
    };
    let events = rig.events_of(std::process::id(), |e| {
        e.iter().filter(|x| matches(x)).count() >= count
    });
    events.into_iter().filter(|x| matches(x)).collect()
}

/// (local address, local port, remote address, remote port) of a network event.
fn ends(e: &Value) -> (String, u64, String, u64) {
    (
        e.str_at("/network/local_address").to_owned(),
        e.u64_at("/network/local_port"),
        e.str_at("/network/remote_address").to_owned(),
        e.u64_at("/network/remote_port"),
    )
}

/// Connects to a listener on `ip`, exchanges 5 bytes one way and 7 the
/// other, closes both ends, and checks connect, accept and both closes.
fn connect_accept_and_close(rig: &Rig, ip: &str, family: u64) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let server_port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let client_port = client.local_addr().unwrap().port();
    let (mut accepted, _) = listener.accept().unwrap();
    let (client_ino, accepted_ino) = (inode(&client), inode(&accepted));
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).unwrap();
    accepted.write_all(b"goodbye").unwrap();
    let mut buf = [0u8; 7];
    client.read_exact(&mut buf).unwrap();
    drop(client);
    drop(accepted);

    let connect = &network_events(rig, "CONNECT", server_port, 1)[0];
    assert_eq!(
        ends(connect),
        (
            ip.to_owned(),
            client_port.into(),
            ip.to_owned(),
            server_port.into()
        )
    );
    assert_eq!(connect.u64_at("/network/family"), family);
    assert_eq!(connect.str_at("/network/protocol"), "tcp");
    assert_eq!(connect["network"]["result"], 0);
    assert_eq!(connect.u64_at("/network/socket_inode"), client_ino);
    assert_eq!(
        connect.u64_at("/process/pid"),
        u64::from(std::process::id())
    );

    let accept = &network_events(rig, "ACCEPT", server_port, 1)[0];
    assert_eq!(
        ends(accept),
        (
            ip.to_owned(),
            server_port.into(),
            ip.to_owned(),
            client_port.into()
        )
    );
    assert_eq!(accept.u64_at("/network/socket_inode"), accepted_ino);

    let listen = &network_events(rig, "LISTEN", server_port, 1)[0];
    assert_eq!(
        ends(listen),
        (ip.to_owned(), server_port.into(), String::new(), 0)
    );

    // Both ends close once each side sent its FIN; each close counts the
    // peer's FIN as one received byte, as the kernel does.
    let closes = network_events(rig, "CLOSE", client_port, 2);
    let by_inode = |ino: u64| {
        closes
            .iter()
            .find(|e| e.u64_at("/network/socket_inode") == ino)
            .unwrap_or_else(|| panic!("no close of socket {ino} in {closes:#?}"))
    };
    let (client_close, server_close) = (by_inode(client_ino), by_inode(accepted_ino));
    assert_eq!(ends(client_close), ends(connect));
    assert_eq!(
        (
            client_close.u64_at("/network/bytes_sent"),
            client_close.u64_at("/network/bytes_received")
        ),
        (5, 7 + 1)
    );
    assert_eq!(ends(server_close), ends(accept));
    assert_eq!(
        (
            server_close.u64_at("/network/bytes_sent"),
            server_close.u64_at("/network/bytes_received")
        ),
        (7, 5 + 1)
    );
}

#[test]
fn a_tcp_connection_on_ipv4_loopback_is_seen_from_both_ends() {
    connect_accept_and_close(&Rig::start(), "127.0.0.1", 2);
}

#[test]
fn the_same_with_kernel_objects_copied_by_helpers() {
    connect_accept_and_close(&Rig::with_helper_reads(), "127.0.0.1", 2);
}

#[test]
fn a_tcp_connection_on_ipv6_loopback_is_seen_from_both_ends() {
    connect_accept_and_close(&Rig::start(), "::1", 10);
}

#[test]
fn a_refused_connect_reports_econnrefused_and_where_it_went() {
    let rig = Rig::start();
    // A port that was just free: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    let connect = &network_events(&rig, "CONNECT", port, 1)[0];
    assert_eq!(connect["network"]["result"], -111);
    assert_eq!(connect.str_at("/network/remote_address"), "127.0.0.1");
    assert_eq!(connect.u64_at("/network/remote_port"), u64::from(port));
    assert_eq!(connect.str_at("/network/protocol"), "tcp");
    // A failed connect has no connection to close.
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let marker_port = marker.local_addr().unwrap().port();
    network_events(&rig, "LISTEN", marker_port, 1);
    assert!(network_events(&rig, "CLOSE", port, 0).is_empty());
}

#[test]
fn an_ipv6_socket_reaching_an_ipv4_peer_shows_ipv4_addresses() {
    let rig = Rig::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mapped = Ipv6Addr::from(0xffff_7f00_0001u128);
    let client = TcpStream::connect(SocketAddr::from((mapped, port))).unwrap();
    let connect = &network_events(&rig, "CONNECT", port, 1)[0];
    assert_eq!(connect.u64_at("/network/family"), 10);
    assert_eq!(
        ends(connect),
        (
            "127.0.0.1".to_owned(),
            client.local_addr().unwrap().port().into(),
            "127.0.0.1".to_owned(),
            port.into()
        )
    );
}

/// A DNS server on 127.0.0.1 (a free port, which the sensor is configured to
/// treat as DNS): answers A queries with 192.0.2.44, AAAA with 2001:db8::44,
/// and anything else with bytes that are not DNS.
struct TestDns {
    socket: UdpSocket,
}

impl TestDns {
    fn bind() -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Serves `n` queries on a thread.
    fn serve(&self, n: usize) -> thread::JoinHandle<()> {
        let socket = self.socket.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..n {
                let mut buf = [0u8; 512];
                let (len, from) = socket.recv_from(&mut buf).unwrap();
                socket.send_to(&answer(&buf[..len]), from).unwrap();
            }
        })
    }
}

/// A query for `name` (`qtype`), with the RD flag.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 0, 0, 1]);
    let at = m.len() - 4;
    m[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
    m
}

fn answer(q: &[u8]) -> Vec<u8> {
    let qtype = u16::from_be_bytes([q[q.len() - 4], q[q.len() - 3]]);
    let rdata: Vec<u8> = match qtype {
        1 => vec![192, 0, 2, 44],
        28 => "2001:db8::44"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec(),
        _ => return vec![0xff; 7],
    };
    let mut r = q.to_vec();
    r[2..4].copy_from_slice(&[0x81, 0x80]);
    r[7] = 1;
    r.extend_from_slice(&[0xc0, 12]);
    r.extend_from_slice(&qtype.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(&rdata);
    r
}

/// A rig whose sensor treats `port` as a DNS port.
fn dns_rig(port: u16) -> (Rig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sensor.toml");
    std::fs::write(&config, format!("[network]\ndns_ports = [{port}]\n")).unwrap();
    (
        Rig::start_with(&["--config", config.to_str().unwrap()]),
        dir,
    )
}

/// This process's DNS events for `name`, once `count` are stored.
fn dns_events(rig: &Rig, name: &str, count: usize) -> Vec<Value> {
    let name = name.to_owned();
    let matches = move |e: &Value| e.kind() == "dns" && e.str_at("/dns/query_name") == name;
    let events = rig.events_of(std::process::id(), |e| {
        e.iter().filter(|x| matches(x)).count() >= count
    });
    events.into_iter().filter(|x| matches(x)).collect()
}

/// This process's UDP sends to `port` (not the server's replies from it).
fn udp_sends_to(rig: &Rig, port: u16) -> Vec<Value> {
    network_events(rig, "UDP_SEND", port, 1)
        .into_iter()
        .filter(|e| e.u64_at("/network/remote_port") == u64::from(port))
        .collect()
}

fn made_up_name(tag: &str) -> String {
    format!("{tag}-{}.made-up.example", std::process::id())
}

#[test]
fn a_dns_query_and_its_answer_arrive_with_name_type_and_server() {
    let server = TestDns::bind();
    let port = server.port();
    let (rig, _dir) = dns_rig(port);
    let serving = server.serve(1);
    // A connected socket, as glibc's resolver uses: connect, send, recv.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = made_up_name("Connected");
    client.send(&query(0x5eed, &name, 1)).unwrap();
    let mut buf = [0u8; 512];
    client.recv(&mut buf).unwrap();
    serving.join().unwrap();

    let name = name.to_lowercase();
    let events = dns_events(&rig, &name, 2);
    let (queries, responses): (Vec<&Value>, Vec<&Value>) =
        events.iter().partition(|e| e["dns"]["response"] != true);
    let (q, r) = (queries[0], responses[0]);
    for e in [q, r] {
        assert_eq!(e.u64_at("/dns/id"), 0x5eed);
        assert_eq!(e.str_at("/dns/query_type"), "A");
        assert_eq!(e.str_at("/dns/protocol"), "udp");
        assert_eq!(e.str_at("/dns/server_address"), "127.0.0.1");
        assert_eq!(e.u64_at("/dns/server_port"), u64::from(port));
    }
    assert!(
        q["dns"]["answers"].as_array().is_none_or(Vec::is_empty),
        "{q:#?}"
    );
    assert_eq!(r.u64_at("/dns/rcode"), 0);
    assert_eq!(
        r["dns"]["answers"],
        serde_json::json!([{"name": name, "type": "A", "data": "192.0.2.44", "ttl": 60}])
    );
    // The query was the socket's first datagram to the server.
    let sends = udp_sends_to(&rig, port);
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert_eq!(
        ends(&sends[0]),
        (
            "127.0.0.1".to_owned(),
            client.local_addr().unwrap().port().into(),
            "127.0.0.1".to_owned(),
            port.into()
        )
    );
}

#[test]
fn an_unconnected_socket_gets_its_answer_matched_by_source_port() {
    let server = TestDns::bind();
    let port = server.port();
    let (rig, _dir) = dns_rig(port);
    let serving = server.serve(2);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = made_up_name("unconnected");
    let mut buf = [0u8; 512];
    // sendto/recvfrom with addresses; two datagrams to one peer are one UDP send.
    for (id, qtype) in [(1, 28), (2, 1)] {
        client
            .send_to(&query(id, &name, qtype), ("127.0.0.1", port))
            .unwrap();
        client.recv_from(&mut buf).unwrap();
    }
    serving.join().unwrap();
    let events = dns_events(&rig, &name, 4);
    let aaaa = events
        .iter()
        .find(|e| e["dns"]["response"] == true && e.u64_at("/dns/id") == 1)
        .unwrap();
    assert_eq!(aaaa.str_at("/dns/query_type"), "AAAA");
    assert_eq!(aaaa.str_at("/dns/answers/0/data"), "2001:db8::44");
    assert_eq!(aaaa.u64_at("/dns/server_port"), u64::from(port));
    assert_eq!(udp_sends_to(&rig, port).len(), 1);
}

#[test]
fn a_dns_query_over_tcp_is_parsed_with_and_without_its_length_prefix() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (rig, _dir) = dns_rig(port);
    let serving = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut q).unwrap();
        let r = answer(&q);
        conn.write_all(&[&(r.len() as u16).to_be_bytes()[..], &r].concat())
            .unwrap();
    });
    let name = made_up_name("tcp");
    let q = query(0x7cb, &name, 1);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The query goes framed in one send; the answer is read as prefix, then body.
    client
        .write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat())
        .unwrap();
    let mut len = [0u8; 2];
    client.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
    client.read_exact(&mut r).unwrap();
    serving.join().unwrap();
    let events = dns_events(&rig, &name, 2);
    let response = events
        .iter()
        .find(|e| e["dns"]["response"] == true)
        .unwrap();
    for e in &events {
        assert_eq!(e.str_at("/dns/protocol"), "tcp");
        assert_eq!(e.u64_at("/dns/id"), 0x7cb);
        assert_eq!(e.u64_at("/dns/server_port"), u64::from(port));
    }
    assert_eq!(response.str_at("/dns/answers/0/data"), "192.0.2.44");
    assert_eq!(
        health_counter(&rig, "decode", "dns_malformed_dropped", response),
        0,
        "the prefix read alone is not a malformed message"
    );
}

/// The counter `stage/name` in a health event encoded after `after`, so it
/// counts every record the sensor decoded before `after`.
fn health_counter(rig: &Rig, stage: &str, name: &str, after: &Value) -> u64 {
    let seq = after.u64_at("/seq");
    let read = |events: &[Value]| {
        let h = events.iter().find(|h| h.u64_at("/seq") > seq)?;
        h["health"]["counters"]
            .as_array()?
            .iter()
            .find_map(|c| (c["stage"] == stage && c["name"] == name).then(|| c.u64_at("/value")))
    };
    let events = rig
        .collector
        .wait_for(&["--kind", "health"], |e| read(e).is_some());
    read(&events).unwrap()
}

#[test]
fn a_malformed_dns_reply_is_counted_and_not_reported() {
    let server = TestDns::bind();
    let port = server.port();
    let (rig, _dir) = dns_rig(port);
    let serving = server.serve(2);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    // TXT gets garbage back; the A query after it is the marker.
    let bad = made_up_name("garbage");
    client.send(&query(7, &bad, 16)).unwrap();
    client.recv(&mut buf).unwrap();
    let good = made_up_name("after-garbage");
    client.send(&query(8, &good, 1)).unwrap();
    client.recv(&mut buf).unwrap();
    serving.join().unwrap();
    let good_events = dns_events(&rig, &good, 2);
    let bad_events = dns_events(&rig, &bad, 0);
    assert_eq!(bad_events.len(), 1, "only the query: {bad_events:#?}");
    assert_ne!(bad_events[0]["dns"]["response"], true);
    assert_eq!(
        health_counter(
            &rig,
            "decode",
            "dns_malformed_dropped",
            good_events.last().unwrap()
        ),
        1
    );
}

#[test]
fn the_sensors_own_connection_to_the_collector_never_appears() {
    let rig = Rig::start();
    let collector_port = rig
        .collector
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    // The sensor is connected (its events are stored); once a later event of
    // this test is stored, anything about that connection would be too.
    let marker = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = marker.local_addr().unwrap().port();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    network_events(&rig, "CONNECT", port, 1);
    let port_text = collector_port.to_string();
    let about_collector = rig
        .collector
        .query(&["--kind", "network", "--port", &port_text]);
    assert!(about_collector.is_empty(), "{about_collector:#?}");
    let sensor_pid = rig.sensor.pid().to_string();
    for kind in ["network", "dns"] {
        let own = rig.collector.query(&["--kind", kind, "--pid", &sensor_pid]);
        assert!(own.is_empty(), "{own:#?}");
    }
    // Not vacuous: the marker itself is found by the same port filter.
    let marker_events = rig
        .collector
        .query(&["--kind", "network", "--port", &port.to_string()]);
    assert!(!marker_events.is_empty());
}
