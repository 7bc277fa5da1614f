//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/`
//! as `seed-*` files: realistic kernel records built from the
//! `sensor-common` structs, DNS messages as resolvers send them, an
//! `EventBatch` as a sensor ships it, and spool segments as the sensor
//! writes them. Rerun after an ABI or schema change:
//!
//! ```text
//! cd fuzz && AYA_BUILD_SKIP=1 cargo run --example seeds
//! ```
//!
//! The fuzzer's own finds live beside them (named by their hash) and are
//! not touched here.

use std::{
    fs,
    mem::size_of,
    path::{Path, PathBuf},
};

use prost::Message as _;
use sensor_common::{
    DNS_FIXED_LEN, DnsPacket, EXEC_FIXED_LEN, ExecEvent, ExitEvent, FILE_FIXED_LEN, FileEvent,
    FileNamedEvent, ForkEvent, Header, NAMED_FIXED_LEN, NetEvent, ResultEvent, SockAddrs, TaskInfo,
    dns_direction, exec_flags, file_op, kind, named_flags, net_op, path_flags,
};
use sensor_proto::v1::{
    DeliveryGap, DnsAnswer, DnsEvent, Event, EventBatch, FileEvent as PbFile, FileOp, NetworkEvent,
    NetworkOp, Process, ProcessExec, ProcessExit, ProcessFork, RegistryEvent, RegistryOp,
    SensorHealth, StageCounter, event::Body,
};

fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the ABI types are plain integers and byte arrays with explicit
    // padding: every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn zeroed<T: Copy>() -> T {
    // SAFETY: all-zero is a valid value of every ABI record type.
    unsafe { std::mem::zeroed() }
}

fn task(tgid: u32, comm: &str, uid: u32) -> TaskInfo {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    TaskInfo {
        start_boottime_ns: 41_250_000_000 + u64::from(tgid) * 1_000_000,
        cgroup_id: 7_412,
        tid: tgid,
        tgid,
        ppid: 1_337,
        uid,
        gid: uid,
        euid: uid,
        egid: uid,
        login_uid: uid,
        session_id: 4,
        _pad0: 0,
        comm: c,
    }
}

fn header(kind: u32, size: usize, ktime_ns: u64) -> Header {
    Header {
        kind,
        size: u32::try_from(size).expect("record size"),
        ktime_ns,
    }
}

/// Path components leaf first, NUL-terminated, as the kernel's walk writes them.
fn walk(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()).rev() {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out
}

fn exec(argv: &[&str], exe: &str, cwd: &str, flags: u32) -> Vec<u8> {
    let mut ev: ExecEvent = zeroed();
    ev.task = task(4242, "curl", 1000);
    let mut area = Vec::new();
    for a in argv {
        area.extend_from_slice(a.as_bytes());
        area.push(0);
    }
    if flags & exec_flags::ARGV_TRUNCATED != 0 {
        area.pop();
    }
    let (exe, cwd) = (walk(exe), walk(cwd));
    ev.argc = u32::try_from(argv.len()).expect("argc");
    let packed = [&exe[..], &cwd, &area].concat();
    ev.data[..packed.len()].copy_from_slice(&packed);
    ev.argv_len = area.len() as u32;
    ev.exe_len = exe.len() as u32;
    ev.cwd_len = cwd.len() as u32;
    ev.flags = flags;
    let size = EXEC_FIXED_LEN + packed.len();
    ev.header = header(kind::EXEC, size, 52_000_000_000);
    as_bytes(&ev)[..size].to_vec()
}

fn file(op: u32, path: &str, flags: u32, pflags: u32) -> Vec<u8> {
    let mut ev: FileEvent = zeroed();
    ev.task = task(2001, "vim", 1000);
    let p = walk(path);
    ev.op = op;
    ev.flags = flags;
    ev.mode = 0o644;
    ev.file_mode = 0o100_644;
    ev.owner_uid = 1000;
    ev.owner_gid = 1000;
    ev.dev = (259 << 20) | 2;
    ev.path[..p.len()].copy_from_slice(&p);
    ev.path_len = p.len() as u32;
    ev.path_flags = pflags;
    ev.f_mode = 0x10_0000 | 0x2;
    ev.req_uid = u32::MAX;
    ev.req_gid = u32::MAX;
    ev.ino = 1_835_011;
    ev.result = 3;
    let size = FILE_FIXED_LEN + p.len();
    ev.header = header(kind::FILE, size, 53_000_000_000);
    as_bytes(&ev)[..size].to_vec()
}

/// A named record: (name, base walk, flags) for each path.
fn named(op: u32, first: (&str, &str, u32), second: Option<(&str, &str, u32)>) -> Vec<u8> {
    let mut ev: FileNamedEvent = zeroed();
    ev.task = task(2002, "mv", 0);
    ev.op = op;
    ev.mode = 0o755;
    ev.req_uid = u32::MAX;
    ev.req_gid = u32::MAX;
    let (n2, b2, f2) = second.unwrap_or(("", "", 0));
    let mut name1 = first.0.as_bytes().to_vec();
    name1.push(0);
    let base1 = walk(first.1);
    let mut name2 = n2.as_bytes().to_vec();
    if second.is_some() {
        name2.push(0);
    }
    let base2 = walk(b2);
    ev.flags = first.2 | (f2 << named_flags::SECOND);
    let mut at = 0;
    let mut lens = [0u32; 4];
    for (i, area) in [&name1, &base1, &name2, &base2].into_iter().enumerate() {
        ev.data[at..at + area.len()].copy_from_slice(area);
        at += area.len();
        lens[i] = area.len() as u32;
    }
    [ev.name1_len, ev.base1_len, ev.name2_len, ev.base2_len] = lens;
    let size = NAMED_FIXED_LEN + at;
    ev.header = header(kind::FILE_NAMED, size, 54_000_000_000);
    as_bytes(&ev)[..size].to_vec()
}

fn addrs(family: u32, local: &[u8], lport: u16, remote: &[u8], rport: u16) -> SockAddrs {
    let mut a = SockAddrs {
        family,
        local_port: lport,
        remote_port: rport,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    a.local_addr[..local.len()].copy_from_slice(local);
    a.remote_addr[..remote.len()].copy_from_slice(remote);
    a
}

fn net(op: u32, protocol: u32, a: SockAddrs, result: i64) -> Vec<u8> {
    as_bytes(&NetEvent {
        header: header(kind::NET, size_of::<NetEvent>(), 55_000_000_000),
        task: task(4242, "curl", 1000),
        op,
        protocol,
        addrs: a,
        result,
        sock_ino: 88_123,
        bytes_sent: 517,
        bytes_received: 4_380,
        sk: 0xffff_8880_1234_5000,
    })
}

fn dns_record(direction: u32, protocol: u32, payload: &[u8], orig_len: usize) -> Vec<u8> {
    let mut ev: DnsPacket = zeroed();
    ev.task = task(733, "systemd-resolve", 991);
    ev.direction = direction;
    ev.protocol = protocol;
    ev.addrs = addrs(2, &[10, 0, 2, 15], 41_877, &[10, 0, 2, 3], 53);
    ev.sock_ino = 90_001;
    let len = payload.len().min(ev.payload.len());
    ev.payload[..len].copy_from_slice(&payload[..len]);
    ev.len = len as u32;
    ev.orig_len = orig_len as u32;
    let size = DNS_FIXED_LEN + len;
    ev.header = header(kind::DNS, size, 56_000_000_000);
    as_bytes(&ev)[..size].to_vec()
}

fn kernel_records() -> Vec<(&'static str, Vec<u8>)> {
    let fork = ForkEvent {
        header: header(kind::FORK, size_of::<ForkEvent>(), 50_000_000_000),
        task: task(1337, "bash", 1000),
        child_start_boottime_ns: 50_000_000_000,
        child_tid: 4242,
        child_tgid: 4242,
    };
    let exit = ExitEvent {
        header: header(kind::EXIT, size_of::<ExitEvent>(), 60_000_000_000),
        task: task(4242, "curl", 1000),
        exit_status: 6 << 8,
        _pad0: 0,
    };
    let result = ResultEvent {
        header: header(kind::RESULT, size_of::<ResultEvent>(), 54_000_100_000),
        tid: 2002,
        _pad0: 0,
        ret: -2,
    };
    let query = dns_query(0x1f2e, "example.com", 1, false);
    let response = dns_response_a_cname();
    let mut tcp = (response.len() as u16).to_be_bytes().to_vec();
    tcp.extend_from_slice(&response);
    let mut big = dns_response_a_cname();
    big.resize(700, 0);
    let v6 = addrs(
        10,
        &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        443,
        &[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
        ],
        51_514,
    );
    vec![
        (
            "exec",
            exec(
                &["curl", "-s", "https://example.com/install.sh"],
                "/usr/bin/curl",
                "/home/alice",
                0,
            ),
        ),
        (
            "exec-truncated",
            exec(
                &["python3", "-c", "import os; os.system('id')"],
                "/usr/bin/python3.12",
                "/tmp",
                exec_flags::ARGV_TRUNCATED | exec_flags::CWD_TRUNCATED,
            ),
        ),
        ("fork", as_bytes(&fork)),
        ("exit", as_bytes(&exit)),
        ("result", as_bytes(&result)),
        (
            "file-open-write",
            file(file_op::OPEN_WRITE, "/etc/passwd", 0o1101, 0),
        ),
        (
            "file-write-await",
            file(
                file_op::WRITE,
                "/var/log/auth.log",
                0o2001,
                path_flags::AWAIT_RESULT,
            ),
        ),
        (
            "named-rename",
            named(
                file_op::RENAME,
                ("payload.tmp", "/tmp", 0),
                Some(("/usr/local/bin/payload", "", named_flags::NO_BASE)),
            ),
        ),
        (
            "named-symlink",
            named(
                file_op::SYMLINK,
                ("../lib/libevil.so", "", named_flags::NO_BASE),
                Some(("libc.so.6", "/usr/lib", 0)),
            ),
        ),
        (
            "named-unlink",
            named(
                file_op::UNLINK,
                ("/var/log/wtmp", "", named_flags::NO_BASE),
                None,
            ),
        ),
        (
            "net-connect-v4",
            net(
                net_op::CONNECT,
                6,
                addrs(2, &[10, 0, 2, 15], 40_112, &[93, 184, 215, 14], 443),
                0,
            ),
        ),
        ("net-accept-v6", net(net_op::ACCEPT, 6, v6, 0)),
        (
            "dns-query",
            dns_record(dns_direction::SENT, 17, &query, query.len()),
        ),
        (
            "dns-response-tcp",
            dns_record(dns_direction::RECEIVED, 6, &tcp, tcp.len()),
        ),
        (
            "dns-response-cut",
            dns_record(dns_direction::RECEIVED, 17, &big[..300], big.len()),
        ),
    ]
}

fn dns_name(out: &mut Vec<u8>, dotted: &str) {
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn dns_header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

/// A recursive query, with an EDNS0 OPT record as glibc and systemd send it.
fn dns_query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut m = dns_header(id, 0x0100, 1, 0, 0, u16::from(edns));
    dns_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    m
}

/// An answer whose owner is a pointer to `owner_at`.
fn rr(m: &mut Vec<u8>, owner_at: u16, rtype: u16, ttl: u32, rdata: &[u8]) {
    m.extend_from_slice(&(0xc000 | owner_at).to_be_bytes());
    m.extend_from_slice(&rtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&ttl.to_be_bytes());
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(rdata);
}

/// www.example.com A: a CNAME to a CDN name and two addresses for it, whose
/// owner names are compression pointers.
fn dns_response_a_cname() -> Vec<u8> {
    let mut m = dns_header(0x1f2e, 0x8180, 1, 3, 0, 0);
    dns_name(&mut m, "www.example.com");
    m.extend_from_slice(&[0, 1, 0, 1]);
    // CNAME www.example.com -> cdn.example.net
    let cname_at = m.len() as u16 + 12;
    let mut target = vec![3];
    target.extend_from_slice(b"cdn");
    target.extend_from_slice(&[7]);
    target.extend_from_slice(b"example");
    target.extend_from_slice(&[3]);
    target.extend_from_slice(b"net");
    target.push(0);
    rr(&mut m, 12, 5, 300, &target);
    rr(&mut m, cname_at, 1, 60, &[93, 184, 215, 14]);
    rr(&mut m, cname_at, 1, 60, &[93, 184, 215, 15]);
    m
}

fn dns_messages() -> Vec<(&'static str, Vec<u8>)> {
    let q = |id, name, t, edns| dns_query(id, name, t, edns);
    let mut aaaa = dns_header(0x2b3c, 0x8180, 1, 1, 0, 0);
    dns_name(&mut aaaa, "ipv6.example.org");
    aaaa.extend_from_slice(&[0, 28, 0, 1]);
    rr(
        &mut aaaa,
        12,
        28,
        3600,
        &[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
        ],
    );
    let mut mx = dns_header(0x3c4d, 0x8180, 1, 2, 0, 0);
    dns_name(&mut mx, "example.com");
    mx.extend_from_slice(&[0, 15, 0, 1]);
    for (pref, host) in [(10u16, "mx1"), (20, "mx2")] {
        let mut rdata = pref.to_be_bytes().to_vec();
        rdata.push(3);
        rdata.extend_from_slice(host.as_bytes());
        rdata.extend_from_slice(&[0xc0, 12]);
        rr(&mut mx, 12, 15, 3600, &rdata);
    }
    let mut txt = dns_header(0x4d5e, 0x8180, 1, 1, 0, 0);
    dns_name(&mut txt, "example.com");
    txt.extend_from_slice(&[0, 16, 0, 1]);
    let mut rdata = Vec::new();
    for s in ["v=spf1 -all", "quoted \"text\" \\ here"] {
        rdata.push(s.len() as u8);
        rdata.extend_from_slice(s.as_bytes());
    }
    rr(&mut txt, 12, 16, 300, &rdata);
    let mut srv = dns_header(0x5e6f, 0x8580, 1, 1, 0, 0);
    dns_name(&mut srv, "_ldap._tcp.corp.example");
    srv.extend_from_slice(&[0, 33, 0, 1]);
    let mut rdata = [0u16, 100, 389]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<_>>();
    dns_name(&mut rdata, "dc1.corp.example");
    rr(&mut srv, 12, 33, 600, &rdata);
    // NXDOMAIN: no answers, the SOA in the authority section.
    let mut nx = dns_header(0x6f70, 0x8183, 1, 0, 1, 0);
    dns_name(&mut nx, "does-not-exist.example.com");
    nx.extend_from_slice(&[0, 1, 0, 1]);
    let mut soa = Vec::new();
    dns_name(&mut soa, "ns.icann.org");
    dns_name(&mut soa, "noc.dns.icann.org");
    for v in [2_024_010_101u32, 7200, 3600, 1_209_600, 3600] {
        soa.extend_from_slice(&v.to_be_bytes());
    }
    rr(&mut nx, 27, 6, 3600, &soa);
    // A SOA answer (what `dig SOA` gets).
    let mut soa_answer = dns_header(0x7071, 0x8180, 1, 1, 0, 0);
    dns_name(&mut soa_answer, "example.com");
    soa_answer.extend_from_slice(&[0, 6, 0, 1]);
    rr(&mut soa_answer, 12, 6, 3600, &soa);
    let mut ptr = dns_header(0x8182, 0x8180, 1, 1, 0, 0);
    dns_name(&mut ptr, "14.215.184.93.in-addr.arpa");
    ptr.extend_from_slice(&[0, 12, 0, 1]);
    let mut rdata = Vec::new();
    dns_name(&mut rdata, "edge.example.net");
    rr(&mut ptr, 12, 12, 86_400, &rdata);
    let mut https = dns_header(0x9192, 0x8180, 1, 1, 0, 0);
    dns_name(&mut https, "example.com");
    https.extend_from_slice(&[0, 65, 0, 1]);
    rr(
        &mut https,
        12,
        65,
        300,
        &[0, 1, 0, 0, 1, 0, 6, 2, b'h', b'2', 2, b'h', b'3'],
    );
    let cname = dns_response_a_cname();
    let mut tcp = (cname.len() as u16).to_be_bytes().to_vec();
    tcp.extend_from_slice(&cname);
    let with = |flags: u8, m: &[u8]| {
        let mut v = vec![flags];
        v.extend_from_slice(m);
        v
    };
    vec![
        ("query-a", with(0, &q(0x1f2e, "www.example.com", 1, false))),
        (
            "query-aaaa-edns",
            with(0, &q(0xa1b2, "ipv6.example.org", 28, true)),
        ),
        (
            "query-any-tcp",
            with(1, &{
                let m = q(0xc3d4, "corp.example", 255, false);
                let mut t = (m.len() as u16).to_be_bytes().to_vec();
                t.extend_from_slice(&m);
                t
            }),
        ),
        ("response-cname-a", with(0, &cname)),
        ("response-cname-a-tcp", with(1, &tcp)),
        ("response-cut", with(2, &cname[..cname.len() - 7])),
        ("response-tcp-cut", with(3, &tcp[..tcp.len() - 20])),
        ("response-aaaa", with(0, &aaaa)),
        ("response-mx", with(0, &mx)),
        ("response-txt", with(0, &txt)),
        ("response-srv", with(0, &srv)),
        ("response-nxdomain", with(0, &nx)),
        ("response-soa", with(0, &soa_answer)),
        ("response-ptr", with(0, &ptr)),
        ("response-https", with(0, &https)),
    ]
}

const EXEC_ID: &str = "9f1c2e7a0b4d4e3f8a6b5c4d3e2f1a0b";
const PARENT_EXEC_ID: &str = "1b2c3d4e5f60718293a4b5c6d7e8f901";

fn process(pid: u32, comm: &str, exe: &str, argv: &[&str]) -> Process {
    Process {
        exec_id: EXEC_ID.into(),
        parent_exec_id: PARENT_EXEC_ID.into(),
        pid,
        tid: pid,
        ppid: 1337,
        uid: 1000,
        gid: 1000,
        euid: 1000,
        egid: 1000,
        login_uid: 1000,
        session_id: 4,
        user: "alice".into(),
        comm: comm.into(),
        exe: exe.into(),
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        cwd: "/home/alice".into(),
        cgroup_id: 7412,
        cgroup_path: "/user.slice/user-1000.slice/session-4.scope".into(),
        container_id: String::new(),
        start_time: Some(sensor_proto::timestamp_from_unix_ns(
            1_760_000_000_000_000_000,
        )),
        user_sid: String::new(),
    }
}

fn event(seq: u64, body: Body) -> Event {
    Event {
        sensor_id: "web-1-5f3a".into(),
        host_id: "5f3a9c0e7b1d4c2a8e6f0a1b2c3d4e5f".into(),
        host_name: "web-1".into(),
        seq,
        time: Some(sensor_proto::timestamp_from_unix_ns(
            1_760_000_000_000_000_000 + seq * 1_000_000,
        )),
        monotonic_ns: 52_000_000_000 + seq * 1_000_000,
        process: Some(Box::new(process(
            4242,
            "curl",
            "/usr/bin/curl",
            &["curl", "-s", "https://example.com/install.sh"],
        ))),
        body: Some(body),
    }
}

fn events() -> Vec<Event> {
    let dns = DnsEvent {
        response: true,
        id: 0x1f2e,
        query_name: "www.example.com".into(),
        query_type: "A".into(),
        protocol: "udp".into(),
        server_address: "10.0.2.3".into(),
        server_port: 53,
        rcode: 0,
        answers: vec![
            DnsAnswer {
                name: "www.example.com".into(),
                r#type: "CNAME".into(),
                data: "www.example.com.cdn.example.net".into(),
                ttl: 300,
            },
            DnsAnswer {
                name: "www.example.com.cdn.example.net".into(),
                r#type: "A".into(),
                data: "93.184.215.14".into(),
                ttl: 60,
            },
            DnsAnswer {
                name: "www.example.com.cdn.example.net".into(),
                r#type: "AAAA".into(),
                data: "2001:db8::1234".into(),
                ttl: 60,
            },
        ],
    };
    vec![
        event(
            101,
            Body::Exec(ProcessExec {
                argv_raw: Default::default(),
                argv_truncated: false,
                argc: 3,
                exe_truncated: false,
                cwd_truncated: false,
                procfs: false,
                previous_exec_id: "77aa66bb55cc44dd33ee22ff11009988".into(),
            }),
        ),
        event(102, Body::Fork(ProcessFork { parent_tid: 1337 })),
        event(
            103,
            Body::File(PbFile {
                op: FileOp::Rename.into(),
                path: "/usr/local/bin/payload".into(),
                path_truncated: false,
                old_path: "/tmp/payload.tmp".into(),
                inode: 1_835_011,
                device: (259 << 20) | 2,
                flags: 0,
                mode: 0o755,
                owner_uid: 1000,
                owner_gid: 1000,
                file_mode: 0o100_755,
                result: 0,
                length: 0,
                repeats: 0,
            }),
        ),
        event(
            104,
            Body::Network(NetworkEvent {
                op: NetworkOp::Connect.into(),
                protocol: "tcp".into(),
                family: 2,
                local_address: "10.0.2.15".into(),
                local_port: 40_112,
                remote_address: "93.184.215.14".into(),
                remote_port: 443,
                result: 0,
                socket_inode: 88_123,
                bytes_sent: 0,
                bytes_received: 0,
            }),
        ),
        event(
            105,
            Body::Network(NetworkEvent {
                op: NetworkOp::Accept.into(),
                protocol: "tcp".into(),
                family: 10,
                local_address: "fe80::1%eth0".into(),
                local_port: 22,
                remote_address: "fe80::5054:ff:fe12:3456%eth0".into(),
                remote_port: 51_514,
                result: 0,
                socket_inode: 88_124,
                bytes_sent: 0,
                bytes_received: 0,
            }),
        ),
        event(106, Body::Dns(dns)),
        event(
            107,
            Body::Exit(ProcessExit {
                exit_code: 6,
                signal: 0,
                core_dumped: false,
                status: 6 << 8,
            }),
        ),
        event(
            108,
            Body::Registry(RegistryEvent {
                op: RegistryOp::SetValue.into(),
                key: "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run".into(),
                raw_key: "\\REGISTRY\\MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
                    .into(),
                value_name: "Updater".into(),
                value_type: "REG_SZ".into(),
                data: b"C\0:\0\\\0x\0.\0e\0x\0e\0".to_vec(),
                data_text: "C:\\x.exe".into(),
                data_size: 16,
                status: 0,
                key_unresolved: false,
            }),
        ),
        event(
            109,
            Body::Gap(DeliveryGap {
                first_seq: 90,
                last_seq: 100,
                count: 11,
                reason: "spool_corrupt".into(),
            }),
        ),
        event(
            110,
            Body::Health(SensorHealth {
                counters: vec![StageCounter {
                    stage: "decode".into(),
                    name: "malformed_dropped".into(),
                    value: 2,
                }],
                dropped_total: 2,
                hooks: vec!["sched_process_exec".into(), "sys_enter_openat".into()],
                version: "0.1.0".into(),
            }),
        ),
    ]
}

fn collector_batches() -> Vec<(&'static str, Vec<u8>)> {
    let all = events();
    let one = |i: usize| EventBatch {
        events: vec![all[i].clone()],
    };
    // A resend: the same seqs again (duplicates, stored once).
    let mut resend = all[..3].to_vec();
    resend.extend_from_slice(&all[..3]);
    // A batch the server refuses: an event without a sensor id.
    let mut invalid = all[..2].to_vec();
    invalid[1].sensor_id.clear();
    vec![
        (
            "batch-all",
            EventBatch {
                events: all.clone(),
            }
            .encode_to_vec(),
        ),
        ("batch-exec", one(0).encode_to_vec()),
        ("batch-file", one(2).encode_to_vec()),
        ("batch-network", one(3).encode_to_vec()),
        ("batch-dns", one(5).encode_to_vec()),
        ("batch-registry", one(7).encode_to_vec()),
        (
            "batch-resend",
            EventBatch { events: resend }.encode_to_vec(),
        ),
        (
            "batch-invalid",
            EventBatch { events: invalid }.encode_to_vec(),
        ),
        ("batch-empty", EventBatch::default().encode_to_vec()),
    ]
}

const SPOOL_MAGIC: u32 = 0x4c4f_5053;
const SPOOL_MAGIC_GAP: u32 = 0x4750_5053;

/// A spool record exactly as `spool.rs` writes it.
fn spool_record(magic: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    let mut rec = magic.to_le_bytes().to_vec();
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&seq.to_le_bytes());
    rec.extend_from_slice(&hasher.finalize().to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

fn spool_segments() -> Vec<(&'static str, Vec<u8>)> {
    let all = events();
    let segment = |events: &[Event]| -> Vec<u8> {
        events
            .iter()
            .flat_map(|e| {
                let magic = if matches!(e.body, Some(Body::Gap(_))) {
                    SPOOL_MAGIC_GAP
                } else {
                    SPOOL_MAGIC
                };
                spool_record(magic, e.seq, &e.encode_to_vec())
            })
            .collect()
    };
    let with = |mode: u8, bytes: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        v
    };
    let clean = segment(&all[..6]);
    let mut flipped = clean.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let torn = &clean[..clean.len() - 9];
    // Gaps between seqs: what drop-newest leaves, named by its gap record.
    let gapped = segment(&[all[0].clone(), all[8].clone(), all[4].clone()]);
    // Stale CRCs that mode 1 reseals: the fuzzer edits seqs and payloads.
    let mut stale = clean.clone();
    stale[8] = 0xff;
    vec![
        ("segment-clean", with(0, &clean)),
        ("segment-flipped-byte", with(0, &flipped)),
        ("segment-torn-tail", with(0, torn)),
        ("segment-gap-record", with(0, &gapped)),
        ("segment-resealed", with(1, &stale)),
    ]
}

fn write_all(root: &Path, target: &str, seeds: Vec<(&str, Vec<u8>)>) -> std::io::Result<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // Seeds are only worth having if they get past the first checks: each
    // must be accepted, so mutations start deep in the parsers.
    let records = kernel_records();
    for (name, bytes) in &records {
        if let Err(e) = sensor_user::decode::decode(bytes) {
            panic!("kernel seed {name} does not decode: {e}");
        }
    }
    let messages = dns_messages();
    for (name, bytes) in &messages {
        let (tcp, cut) = (bytes[0] & 1 != 0, bytes[0] & 2 != 0);
        if let Err(e) = sensor_user::decode::dns::parse(&bytes[1..], tcp, cut) {
            panic!("DNS seed {name} does not parse: {e}");
        }
    }
    let batches = collector_batches();
    for (name, bytes) in &batches {
        EventBatch::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("batch {name}: {e}"));
    }
    let segments = spool_segments();
    for (name, bytes) in &segments {
        let found = sensor_user::spool::scan_records(&bytes[1..]);
        assert!(
            found > 0 || bytes[0] & 1 != 0,
            "segment {name} has no valid record"
        );
    }
    write_all(&root, "kernel_record", records)?;
    write_all(&root, "dns_message", messages)?;
    write_all(&root, "collector_batch", batches)?;
    write_all(&root, "spool_segment", segments)?;
    eprintln!("seeds written under {}", root.display());
    Ok(())
}
