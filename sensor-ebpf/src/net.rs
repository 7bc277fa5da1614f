//! Network and DNS, from the syscall tracepoints plus one raw tracepoint for
//! TCP closes.
//!
//! - connect: one exit program; its fd is still in the task's registers. It
//!   reads the result and describes the socket from fd -> file -> socket ->
//!   sock; a failed connect (the kernel clears the socket's peer) reports the
//!   peer from the caller's sockaddr.
//! - accept/accept4: the exit program describes the new descriptor's socket.
//! - bind/listen: the exit program describes the socket once it succeeded.
//! - sendto/sendmsg/sendmmsg on UDP: one `UDP_SEND` per (socket, peer), deduped
//!   here in a bounded LRU so a stream of datagrams is one event.
//! - DNS: a send to a DNS port copies the message at entry; a receive from a
//!   DNS port copies it at exit, once the kernel wrote it. Userspace parses.
//! - close: `inet_sock_set_state` to `TCP_CLOSE` of any TCP socket, with its
//!   `struct sock` address and byte counts only. Userspace joins it to the
//!   connect or accept of the same socket, which it reported with who owned
//!   it (the state change often runs in softirq context, on behalf of
//!   nobody), and drops the closes of connections it never reported.
//!   Keeping the owners here took a hash update per connect and accept:
//!   a third of those programs' cost.
//!
//! The sensor's own sockets are never reported; the local endpoints of its
//! connections are remembered so that their accept on a collector running on
//! this host is not reported either.

use core::intrinsics::{AtomicOrdering::Relaxed, atomic_or};

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as probe_read_user_buf},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use sensor_common::{
    Config, DNS_BUF, DNS_FIXED_LEN, DnsPacket, NetEvent, SockAddrs, dns_direction, kind, net_op,
};

use crate::kernel::{
    FileWindow, InodeWindow, RET, Reserved, SockWindow, arg, bit_set, config, current_task_btf,
    file_of_fd, header, is_own, koff, output_prefix, read, record, regs_syscall_arg, set,
    task_info, task_pid_tgid, task_regs, task_tgid, v4_addr, v4_mapped, zero_words,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;
const EINPROGRESS: i64 = 115;
/// `TCP_CLOSE` in include/net/tcp_states.h.
const TCP_CLOSE: u64 = 7;

/// Which syscall a pending entry belongs to, so an exit never consumes the
/// leftovers of another call whose exit was missed.
const CALL_SEND: u32 = 4;
const CALL_RECV: u32 = 5;

/// UAPI layouts (x86_64 and arm64 alike): `struct user_msghdr` is
/// { msg_name @0, msg_namelen @8, msg_iov @16, msg_iovlen @24, ... } in 56
/// bytes; `struct mmsghdr` adds `msg_len` and pads to 64; `struct iovec` is
/// { iov_base @0, iov_len @8 }.
const MSG_NAME: u64 = 0;
const MSG_IOV: u64 = 16;
const MSG_IOVLEN: u64 = 24;
const MMSGHDR_SIZE: u64 = 64;
/// sendmmsg messages looked at: glibc's resolver sends its A and AAAA
/// queries as one sendmmsg of two.
const MMSG_MAX: u64 = 2;

/// A socket named by a descriptor: an AF_INET or AF_INET6 `struct sock`.
#[derive(Clone, Copy)]
#[repr(C)]
struct Sock {
    sk: u64,
    ino: u64,
    family: u16,
    protocol: u16,
    _pad0: u32,
}

/// An address and port, in the socket's own family (IPv4 in the first four
/// bytes; an IPv4 peer of an IPv6 socket as v4-mapped IPv6). Aligned to 8
/// so that an address is copied as two words, not sixteen bytes.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Peer {
    port: u16,
    _pad0: u16,
    _pad1: u32,
    addr: [u8; 16],
}

const NO_PEER: Peer = Peer {
    port: 0,
    _pad0: 0,
    _pad1: 0,
    addr: [0; 16],
};

/// A syscall in flight, by thread.
#[derive(Clone, Copy)]
#[repr(C)]
struct Pending {
    call: u32,
    _pad0: u32,
    sock: Sock,
    /// send: the destination; recv: the source when the socket is
    /// connected, else none yet.
    peer: Peer,
    /// recv: where the kernel writes the message, and its room.
    buf: u64,
    cap: u64,
    /// recv on an unconnected socket: where the kernel writes the source.
    addr: u64,
}

/// (socket inode, peer) pairs a UDP send was reported for.
#[derive(Clone, Copy)]
#[repr(C)]
struct UdpPeerKey {
    ino: u64,
    peer: Peer,
}

/// Bounded and LRU: an entry whose exit never comes (a thread killed inside
/// the syscall) is evicted rather than leaked.
#[map]
static NET_PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16_384, 0);

/// UDP (socket, peer) pairs already reported; eviction only means a peer is
/// reported once more.
#[map]
static UDP_PEERS: LruHashMap<UdpPeerKey, u8> = LruHashMap::with_max_entries(16_384, 0);

/// Local endpoints (v4 as v4-mapped) of the sensor's own connections.
#[map]
static OWN_ENDPOINTS: LruHashMap<Peer, u8> = LruHashMap::with_max_entries(1024, 0);

/// The local ports of those endpoints, as a bitmap (`bit_set`; never
/// cleared): an accept from any other port is let through after an array
/// load instead of a hash lookup (an eighth of the accept program).
#[map]
static OWN_PORTS: Array<u64> = Array::with_max_entries(1024, 0);

#[map]
static DNS_SCRATCH: PerCpuArray<DnsPacket> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn read_user<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_user copes with any address, faulting safely.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

#[inline(always)]
fn sock_at(sk: u64, ino: u64) -> Option<Sock> {
    let family: u16 = read(sk, koff!(sock_family))?;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    Some(Sock {
        sk,
        ino,
        family,
        protocol: read(sk, koff!(sock_protocol))?,
        _pad0: 0,
    })
}

/// The inet socket behind descriptor `fd`: the inode must be a socket's
/// before `private_data` is read as a `struct socket`.
#[inline(always)]
fn sock_of_fd(task: *const u8, fd: u64) -> Option<Sock> {
    let file = FileWindow::of(file_of_fd(task, fd))?;
    let inode = InodeWindow::of(file.get(koff!(file_f_inode))?)?;
    let mode: u16 = inode.get(koff!(inode_i_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = file.get(koff!(file_private_data))?;
    let sk: u64 = read(socket, koff!(socket_sk))?;
    sock_at(sk, inode.get(koff!(inode_i_ino)).unwrap_or(0))
}

/// Both ends as the socket holds them now.
#[inline(always)]
fn sock_addrs(s: &Sock) -> SockAddrs {
    let Some(w) = SockWindow::of(s.sk) else {
        return SockAddrs {
            family: u32::from(s.family),
            local_port: 0,
            remote_port: 0,
            local_addr: v4_addr(0),
            remote_addr: v4_addr(0),
        };
    };
    let (local_addr, remote_addr) = if s.family == AF_INET {
        (
            v4_addr(w.get(koff!(sock_rcv_saddr)).unwrap_or(0)),
            v4_addr(w.get(koff!(sock_daddr)).unwrap_or(0)),
        )
    } else {
        (
            w.get_addr16(koff!(sock_v6_rcv_saddr))
                .unwrap_or_else(|| v4_addr(0)),
            w.get_addr16(koff!(sock_v6_daddr))
                .unwrap_or_else(|| v4_addr(0)),
        )
    };
    SockAddrs {
        family: u32::from(s.family),
        local_port: w.get(koff!(sock_num)).unwrap_or(0),
        remote_port: u16::from_be(w.get(koff!(sock_dport)).unwrap_or(0)),
        local_addr,
        remote_addr,
    }
}

/// The peer of a connected socket (port 0: not connected), for the hot send
/// and receive paths: one window read, like `sock_addrs`, without the local end.
#[inline(always)]
fn connected_peer(s: &Sock) -> Peer {
    let Some(w) = SockWindow::of(s.sk) else {
        return NO_PEER;
    };
    let mut peer = Peer {
        port: u16::from_be(w.get(koff!(sock_dport)).unwrap_or(0)),
        ..NO_PEER
    };
    if peer.port == 0 {
        return peer;
    }
    if s.family == AF_INET {
        peer.addr = v4_addr(w.get(koff!(sock_daddr)).unwrap_or(0));
    } else {
        peer.addr = w.get_addr16(koff!(sock_v6_daddr)).unwrap_or([0; 16]);
    }
    peer
}

/// A caller's `sockaddr_in`/`sockaddr_in6`, in `sock_family`'s terms.
#[inline(always)]
fn user_peer(ptr: u64, sock_family: u16) -> Option<Peer> {
    let head: [u8; 4] = read_user(ptr)?;
    let family = u16::from_ne_bytes([head[0], head[1]]);
    let mut peer = Peer {
        port: u16::from_be_bytes([head[2], head[3]]),
        ..NO_PEER
    };
    if family == AF_INET {
        let v4: u32 = read_user(ptr + 4)?;
        if sock_family == AF_INET6 {
            // An IPv6 socket reaches IPv4 peers as ::ffff:a.b.c.d.
            peer.addr = v4_mapped(v4);
        } else {
            peer.addr = v4_addr(v4);
        }
    } else if family == AF_INET6 {
        peer.addr = read_user(ptr + 8)?;
    } else {
        return None;
    }
    Some(peer)
}

/// An endpoint in one form for both families: IPv4 as v4-mapped IPv6.
#[inline(always)]
fn endpoint(family: u32, addr: &[u8; 16], port: u16) -> Peer {
    let mut key = Peer {
        port,
        addr: *addr,
        ..NO_PEER
    };
    if family == u32::from(AF_INET) {
        key.addr = v4_mapped(u32::from_le_bytes([addr[0], addr[1], addr[2], addr[3]]));
    }
    key
}

#[inline(always)]
fn is_dns_port(cfg: &Config, port: u16) -> bool {
    let p = &cfg.dns_ports;
    port != 0 && (p[0] == port || p[1] == port || p[2] == port || p[3] == port)
}

#[inline(always)]
fn dns_enabled(cfg: &Config) -> bool {
    let p = &cfg.dns_ports;
    p[0] | p[1] | p[2] | p[3] != 0
}

/// The pending entry of thread `task` for `call`, removed.
#[inline(always)]
fn take(task: *const u8, call: u32) -> Option<Pending> {
    let key = task_pid_tgid(task);
    // SAFETY: the key is a plain integer; the value is copied out at once.
    let pending = unsafe { NET_PENDING.get(&key) }.copied()?;
    let _ = NET_PENDING.remove(&key);
    (pending.call == call).then_some(pending)
}

#[inline(always)]
fn remember(task: *const u8, pending: &Pending) {
    // LRU: an insert makes room; nothing is waited on.
    let _ = NET_PENDING.insert(task_pid_tgid(task), pending, 0);
}

#[inline(always)]
fn pending(call: u32, sock: Sock, peer: Peer) -> Pending {
    Pending {
        call,
        _pad0: 0,
        sock,
        peer,
        buf: 0,
        cap: 0,
        addr: 0,
    }
}

/// Sends a network record of `task` (the current task's BTF pointer).
#[inline(always)]
fn emit(task: *const u8, op: u32, sock: &Sock, addrs: &SockAddrs, result: i64) -> Option<()> {
    let mut reserved = Reserved::<NetEvent>::new(kind::NET)?;
    let ev = reserved.record();
    ev.task = task_info(task);
    ev.op = op;
    ev.protocol = u32::from(sock.protocol);
    ev.addrs = *addrs;
    ev.result = result;
    ev.sock_ino = sock.ino;
    set(&mut ev.bytes_sent, 0);
    set(&mut ev.bytes_received, 0);
    ev.sk = sock.sk;
    ev.header = header(kind::NET, size_of::<NetEvent>());
    reserved.submit();
    Some(())
}

/// Copies up to `DNS_BUF` of the `len` bytes at `buf` (a message of
/// `orig_len` bytes) and sends them with the socket's description.
#[inline(always)]
fn emit_dns(
    task: *const u8,
    sock: &Sock,
    peer: &Peer,
    direction: u32,
    buf: u64,
    len: u64,
    orig_len: u64,
) -> Option<()> {
    // Every DNS message has a 12-byte header; a shorter TCP segment is a
    // length prefix sent (or read) on its own, or a fragment: not a message.
    if len == 0 || buf == 0 || (sock.protocol == IPPROTO_TCP && orig_len < 12) {
        return None;
    }
    let ev = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    let len = if len > DNS_BUF as u64 {
        DNS_BUF as u64
    } else {
        len
    };
    // 1..=DNS_BUF, written so the verifier sees the range (len is already in it).
    let len = ((len - 1) & (DNS_BUF as u64 - 1)) + 1;
    // SAFETY: reads the caller's buffer into the scratch payload, len <= DNS_BUF.
    let rc =
        unsafe { probe_read_user_buf(ev.payload.as_mut_ptr().cast(), len as u32, buf as *const _) };
    if rc != 0 {
        return None;
    }
    ev.task = task_info(task);
    ev.direction = direction;
    ev.protocol = u32::from(sock.protocol);
    ev.addrs = sock_addrs(sock);
    ev.addrs.remote_port = peer.port;
    ev.addrs.remote_addr = peer.addr;
    ev.sock_ino = sock.ino;
    ev.orig_len = orig_len.min(u64::from(u32::MAX)) as u32;
    ev.len = len as u32;
    let size = DNS_FIXED_LEN + len as usize;
    ev.header = header(kind::DNS, size);
    output_prefix(ev, size, kind::DNS);
    Some(())
}

// ---------------------------------------------------------------- connect

/// `connect(int fd, struct sockaddr *uservaddr, int addrlen)`, at its exit
/// only: the arguments stay in the task's registers until the syscall
/// returns, and the socket then holds the peer the kernel really connects to.
/// (An entry program with a map entry per call cost more than the exit.)
#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit_connect(&ctx);
    0
}

#[inline(always)]
fn try_exit_connect(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = record(ctx, RET);
    let cfg = config()?;
    let task = current_task_btf();
    let regs = task_regs(task);
    let sock = sock_of_fd(task, regs_syscall_arg(regs, 0))?;
    if sock.protocol != IPPROTO_TCP {
        // A UDP connect sends nothing; its first send is reported instead.
        return None;
    }
    let mut addrs = sock_addrs(&sock);
    let connecting = ret == 0 || ret == -EINPROGRESS;
    if is_own(cfg, task_tgid(task)) {
        if connecting {
            let key = endpoint(addrs.family, &addrs.local_addr, addrs.local_port);
            let _ = OWN_ENDPOINTS.insert(key, 1, 0);
            if let Some(word) = OWN_PORTS.get_ptr_mut(u32::from(addrs.local_port / 64)) {
                // SAFETY: a u64 map value shared between CPUs: an atomic or.
                unsafe {
                    atomic_or::<u64, u64, { Relaxed }>(word, 1 << (addrs.local_port % 64));
                }
            }
        }
        return None;
    }
    if addrs.remote_port == 0 {
        asked_peer(&mut addrs, regs_syscall_arg(regs, 1), sock.family)?;
    }
    emit(task, net_op::CONNECT, &sock, &addrs, ret)
}

/// A failed connect disconnects the socket: its report carries what was
/// asked, from the caller's own sockaddr (which the caller could have
/// changed since the kernel copied it; only failed connects read it). A
/// function of its own: inlined, it took the exit past the 512-byte stack.
#[inline(never)]
fn asked_peer(addrs: &mut SockAddrs, sockaddr: u64, sock_family: u16) -> Option<()> {
    let peer = user_peer(sockaddr, sock_family)?;
    addrs.remote_port = peer.port;
    addrs.remote_addr = peer.addr;
    Some(())
}

// ---------------------------------------------------------------- accept

#[inline(always)]
fn exit_accept(ctx: &TracePointContext) -> Option<()> {
    let ret: i64 = record(ctx, RET);
    if ret < 0 {
        return None;
    }
    let cfg = config()?;
    let task = current_task_btf();
    if is_own(cfg, task_tgid(task)) {
        return None;
    }
    let sock = sock_of_fd(task, ret as u64)?;
    if sock.protocol != IPPROTO_TCP {
        return None;
    }
    let addrs = sock_addrs(&sock);
    let peer = endpoint(addrs.family, &addrs.remote_addr, addrs.remote_port);
    // SAFETY: plain key; the value is not kept.
    if bit_set(&OWN_PORTS, u32::from(addrs.remote_port))
        && unsafe { OWN_ENDPOINTS.get(&peer) }.is_some()
    {
        // The other end is the sensor (its collector runs on this host).
        return None;
    }
    emit(task, net_op::ACCEPT, &sock, &addrs, 0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = exit_accept(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = exit_accept(&ctx);
    0
}

// ---------------------------------------------------------------- bind, listen

/// Reports a bind or listen that succeeded, as the socket holds it after;
/// its fd is still in the task's registers at the exit.
#[inline(always)]
fn exit_on_fd(ctx: &TracePointContext, op: u32) -> Option<()> {
    let ret: i64 = record(ctx, RET);
    if ret != 0 {
        return None;
    }
    let cfg = config()?;
    let task = current_task_btf();
    if is_own(cfg, task_tgid(task)) {
        return None;
    }
    let sock = sock_of_fd(task, regs_syscall_arg(task_regs(task), 0))?;
    if sock.protocol != IPPROTO_TCP && sock.protocol != IPPROTO_UDP {
        return None;
    }
    let addrs = sock_addrs(&sock);
    emit(task, op, &sock, &addrs, 0)
}

/// `bind(int fd, struct sockaddr *umyaddr, int addrlen)`
#[tracepoint(category = "syscalls", name = "sys_exit_bind")]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let _ = exit_on_fd(&ctx, net_op::BIND);
    0
}

/// `listen(int fd, int backlog)`
#[tracepoint(category = "syscalls", name = "sys_exit_listen")]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let _ = exit_on_fd(&ctx, net_op::LISTEN);
    0
}

// ---------------------------------------------------------------- sends

/// The socket of a send, when it is inet TCP or UDP and not the sensor's.
#[inline(always)]
fn send_sock(cfg: &Config, task: *const u8, fd: u64) -> Option<Sock> {
    if is_own(cfg, task_tgid(task)) {
        return None;
    }
    let sock = sock_of_fd(task, fd)?;
    (sock.protocol == IPPROTO_TCP || sock.protocol == IPPROTO_UDP).then_some(sock)
}

/// Where one message goes: its own address (UDP only; TCP ignores it), else
/// the connected peer.
#[inline(always)]
fn destination(sock: &Sock, name: u64) -> Peer {
    if sock.protocol == IPPROTO_UDP && name != 0 {
        if let Some(peer) = user_peer(name, sock.family) {
            return peer;
        }
    }
    connected_peer(sock)
}

/// One message of a send: a DNS copy when it goes to a DNS port. A real
/// function (a BPF subprogram), so sendmmsg's messages share one stack frame
/// instead of each inlined copy taking its own.
#[inline(never)]
fn send_message(task: *const u8, sock: &Sock, peer: &Peer, buf: u64, len: u64) {
    // The config is looked up again (an inlined array load): a BPF function
    // takes at most five arguments.
    if config().is_some_and(|cfg| is_dns_port(cfg, peer.port)) {
        let _ = emit_dns(task, sock, peer, dns_direction::SENT, buf, len, len);
    }
}

/// After the messages: a UDP send to a peer not reported yet waits for its
/// result (the socket's local port is bound only by the send itself).
#[inline(always)]
fn send_pending(task: *const u8, sock: &Sock, peer: &Peer) {
    if sock.protocol != IPPROTO_UDP || peer.port == 0 {
        return;
    }
    let key = UdpPeerKey {
        ino: sock.ino,
        peer: *peer,
    };
    // SAFETY: plain key; the value is not kept.
    if unsafe { UDP_PEERS.get(&key) }.is_some() {
        return;
    }
    remember(task, &pending(CALL_SEND, *sock, *peer));
}

/// `sendto(int fd, void *buff, size_t len, unsigned int flags, struct sockaddr *addr, int addr_len)`
#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    let _ = try_enter_sendto(&ctx);
    0
}

#[inline(always)]
fn try_enter_sendto(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let (fd, buf, len, name) = (
        record::<u64>(ctx, arg(0)),
        record::<u64>(ctx, arg(1)),
        record::<u64>(ctx, arg(2)),
        record::<u64>(ctx, arg(4)),
    );
    let task = current_task_btf();
    let sock = send_sock(cfg, task, fd)?;
    let peer = destination(&sock, name);
    send_message(task, &sock, &peer, buf, len);
    send_pending(task, &sock, &peer);
    Some(())
}

/// The first iovec of a `user_msghdr`: (base, len).
#[inline(always)]
fn first_iov(msg: u64) -> Option<(u64, u64)> {
    let iov: u64 = read_user(msg + MSG_IOV)?;
    let iovlen: u64 = read_user(msg + MSG_IOVLEN)?;
    if iovlen == 0 {
        return None;
    }
    let iov: [u64; 2] = read_user(iov)?;
    Some((iov[0], iov[1]))
}

/// `sendmsg(int fd, struct user_msghdr *msg, unsigned int flags)`
#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    let _ = try_enter_sendmsg(&ctx);
    0
}

#[inline(always)]
fn try_enter_sendmsg(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let (fd, msg) = (record::<u64>(ctx, arg(0)), record::<u64>(ctx, arg(1)));
    let task = current_task_btf();
    let sock = send_sock(cfg, task, fd)?;
    let name: u64 = read_user(msg + MSG_NAME).unwrap_or(0);
    let peer = destination(&sock, name);
    if let Some((buf, len)) = first_iov(msg) {
        send_message(task, &sock, &peer, buf, len);
    }
    send_pending(task, &sock, &peer);
    Some(())
}

/// `sendmmsg(int fd, struct mmsghdr *mmsg, unsigned int vlen, unsigned int flags)`
#[tracepoint(category = "syscalls", name = "sys_enter_sendmmsg")]
pub fn enter_sendmmsg(ctx: TracePointContext) -> u32 {
    let _ = try_enter_sendmmsg(&ctx);
    0
}

#[inline(always)]
fn try_enter_sendmmsg(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let (fd, mmsg, vlen) = (
        record::<u64>(ctx, arg(0)),
        record::<u64>(ctx, arg(1)),
        record::<u64>(ctx, arg(2)),
    );
    let task = current_task_btf();
    let sock = send_sock(cfg, task, fd)?;
    let mut first = NO_PEER;
    for i in 0..MMSG_MAX {
        if i >= (vlen & 0xffff_ffff) {
            break;
        }
        let msg = mmsg + i * MMSGHDR_SIZE;
        let name: u64 = read_user(msg + MSG_NAME).unwrap_or(0);
        let peer = destination(&sock, name);
        if i == 0 {
            first = peer;
        }
        if let Some((buf, len)) = first_iov(msg) {
            send_message(task, &sock, &peer, buf, len);
        }
    }
    send_pending(task, &sock, &first);
    Some(())
}

/// Reports a UDP send to a new peer once the kernel took it.
#[inline(always)]
fn exit_send(ctx: &TracePointContext) -> Option<()> {
    let task = current_task_btf();
    let p = take(task, CALL_SEND)?;
    let ret: i64 = record(ctx, RET);
    if ret < 0 {
        return None;
    }
    let key = UdpPeerKey {
        ino: p.sock.ino,
        peer: p.peer,
    };
    let _ = UDP_PEERS.insert(key, 1, 0);
    let mut addrs = sock_addrs(&p.sock);
    addrs.remote_port = p.peer.port;
    addrs.remote_addr = p.peer.addr;
    emit(task, net_op::UDP_SEND, &p.sock, &addrs, 0)
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn sys_exit_sendto(ctx: TracePointContext) -> u32 {
    let _ = exit_send(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmsg")]
pub fn sys_exit_sendmsg(ctx: TracePointContext) -> u32 {
    let _ = exit_send(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_sendmmsg")]
pub fn sys_exit_sendmmsg(ctx: TracePointContext) -> u32 {
    let _ = exit_send(&ctx);
    0
}

// ---------------------------------------------------------------- receives

/// Remembers a receive that may bring a DNS message: on a socket connected
/// to a DNS port, or on an unconnected UDP socket whose source the kernel
/// will write to `addr`.
#[inline(always)]
fn enter_recv(fd: u64, buf: u64, cap: u64, addr: u64) -> Option<()> {
    let cfg = config()?;
    if !dns_enabled(cfg) || buf == 0 {
        return None;
    }
    let task = current_task_btf();
    let sock = send_sock(cfg, task, fd)?;
    let connected = connected_peer(&sock);
    if connected.port != 0 {
        if !is_dns_port(cfg, connected.port) {
            return None;
        }
    } else if sock.protocol != IPPROTO_UDP || addr == 0 {
        return None;
    }
    let mut p = pending(CALL_RECV, sock, connected);
    p.buf = buf;
    p.cap = cap;
    p.addr = addr;
    remember(task, &p);
    Some(())
}

/// Copies what a receive brought from a DNS port.
#[inline(always)]
fn exit_recv(ctx: &TracePointContext) -> Option<()> {
    let task = current_task_btf();
    let p = take(task, CALL_RECV)?;
    let ret: i64 = record(ctx, RET);
    if ret <= 0 {
        return None;
    }
    let cfg = config()?;
    let mut peer = p.peer;
    if peer.port == 0 {
        peer = user_peer(p.addr, p.sock.family)?;
        if !is_dns_port(cfg, peer.port) {
            return None;
        }
    }
    let ret = ret as u64;
    let len = if ret < p.cap { ret } else { p.cap };
    emit_dns(
        task,
        &p.sock,
        &peer,
        dns_direction::RECEIVED,
        p.buf,
        len,
        ret,
    )
}

/// `recvfrom(int fd, void *ubuf, size_t size, unsigned int flags, struct sockaddr *addr, int *addr_len)`
#[tracepoint(category = "syscalls", name = "sys_enter_recvfrom")]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    let _ = enter_recv(
        record(&ctx, arg(0)),
        record(&ctx, arg(1)),
        record(&ctx, arg(2)),
        record(&ctx, arg(4)),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvfrom")]
pub fn sys_exit_recvfrom(ctx: TracePointContext) -> u32 {
    let _ = exit_recv(&ctx);
    0
}

/// `recvmsg(int fd, struct user_msghdr *msg, unsigned int flags)`: the
/// message lands in the first iovec (DNS replies fit one).
#[tracepoint(category = "syscalls", name = "sys_enter_recvmsg")]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    let _ = try_enter_recvmsg(&ctx);
    0
}

#[inline(always)]
fn try_enter_recvmsg(ctx: &TracePointContext) -> Option<()> {
    let (fd, msg) = (record::<u64>(ctx, arg(0)), record::<u64>(ctx, arg(1)));
    let name: u64 = read_user(msg + MSG_NAME).unwrap_or(0);
    let (buf, cap) = first_iov(msg)?;
    enter_recv(fd, buf, cap, name)
}

#[tracepoint(category = "syscalls", name = "sys_exit_recvmsg")]
pub fn sys_exit_recvmsg(ctx: TracePointContext) -> u32 {
    let _ = exit_recv(&ctx);
    0
}

// ---------------------------------------------------------------- close

/// `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`
/// (include/trace/events/sock.h), traced by `inet_sk_state_store` after
/// `tcp_set_state` released the local port: the ends and the owner come from
/// the connect or accept, joined in userspace; the byte counters are final.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &RawTracePointContext) -> Option<()> {
    let newstate: u64 = ctx.arg(2);
    if newstate & 0xffff_ffff != TCP_CLOSE {
        return None;
    }
    let sk: u64 = ctx.arg(0);
    let sock = sock_at(sk, 0)?;
    if sock.protocol != IPPROTO_TCP {
        return None;
    }
    let mut reserved = Reserved::<NetEvent>::new(kind::NET)?;
    let ev = reserved.record();
    // Nobody's task (see above).
    zero_words(&mut ev.task);
    ev.op = net_op::CLOSE;
    ev.protocol = u32::from(IPPROTO_TCP);
    zero_words(&mut ev.addrs);
    ev.addrs.family = u32::from(sock.family);
    set(&mut ev.result, 0);
    set(&mut ev.sock_ino, 0);
    ev.bytes_sent = read(sk, koff!(tcp_bytes_sent)).unwrap_or(0);
    ev.bytes_received = read(sk, koff!(tcp_bytes_received)).unwrap_or(0);
    ev.sk = sk;
    ev.header = header(kind::NET, size_of::<NetEvent>());
    reserved.submit();
    Some(())
}
