//! TCP connections between their connect or accept and their close. The
//! kernel reports every TCP close with the socket's address and byte counts
//! only: the state change often runs in softirq context, on behalf of
//! nobody, and remembering owners there cost a hash update per connection.
//! This joins each close to the connect or accept the sensor reported for
//! the same socket, which says who owned it and where it went, and drops
//! the closes of connections it never reported (the sensor's own, those
//! open before it started).

use std::collections::HashMap;

use sensor_common::{SockAddrs, net_op};

use crate::{
    decode::{Task, net::Net},
    stats::Stats,
};

/// Most connections kept open. Beyond it the table is cleared (and what it
/// held counted): the closes of those connections are then not reported.
const MAX_OPEN: usize = 65_536;

/// `-EINPROGRESS`: a non-blocking connect under way.
const IN_PROGRESS: i64 = -115;

/// What a close needs from the connect or accept that opened its socket.
struct Opened {
    task: Task,
    sock_ino: u64,
    addrs: SockAddrs,
}

#[derive(Default)]
pub struct Connections {
    open: HashMap<u64, Opened>,
}

impl Connections {
    /// A network record in; out as it is reported, `None` for a close of a
    /// connection that was never reported.
    pub fn record(&mut self, mut n: Net, stats: &Stats) -> Option<Net> {
        match n.op {
            net_op::CONNECT if n.result != 0 && n.result != IN_PROGRESS => {}
            net_op::CONNECT | net_op::ACCEPT => {
                if self.open.len() >= MAX_OPEN && !self.open.contains_key(&n.sk) {
                    Stats::add(&stats.connections_forgotten, self.open.len() as u64);
                    self.open.clear();
                }
                self.open.insert(
                    n.sk,
                    Opened {
                        task: n.task.clone(),
                        sock_ino: n.sock_ino,
                        addrs: n.addrs,
                    },
                );
            }
            net_op::CLOSE => {
                let Some(opened) = self.open.remove(&n.sk) else {
                    Stats::inc(&stats.close_unreported);
                    return None;
                };
                n.task = opened.task;
                n.sock_ino = opened.sock_ino;
                n.addrs = opened.addrs;
            }
            _ => {}
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(op: u32, sk: u64, result: i64, tgid: u32) -> Net {
        let task = Task {
            tgid,
            tid: tgid,
            ..Task::default()
        };
        Net {
            ktime_ns: 1,
            task,
            op,
            protocol: 6,
            addrs: SockAddrs {
                family: 2,
                local_port: 40_000,
                remote_port: 443,
                local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            result,
            sock_ino: u64::from(tgid) * 10,
            bytes_sent: 0,
            bytes_received: 0,
            sk,
        }
    }

    /// The kernel's close: the socket and its counts, nobody's task.
    fn close(sk: u64, sent: u64) -> Net {
        let mut n = net(net_op::CLOSE, sk, 0, 0);
        n.addrs = SockAddrs {
            family: 2,
            local_port: 0,
            remote_port: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
        };
        n.sock_ino = 0;
        n.bytes_sent = sent;
        n
    }

    #[test]
    fn a_close_carries_the_owner_and_ends_of_its_connect_and_counts_its_bytes() {
        let stats = Stats::default();
        let mut c = Connections::default();
        let connect = c.record(net(net_op::CONNECT, 0xa0, 0, 7), &stats).unwrap();
        let accept = c.record(net(net_op::ACCEPT, 0xb0, 0, 8), &stats).unwrap();
        let closed = c.record(close(0xa0, 517), &stats).unwrap();
        assert_eq!(closed.task, connect.task);
        assert_eq!(closed.addrs, connect.addrs);
        assert_eq!(closed.sock_ino, 70);
        assert_eq!(closed.bytes_sent, 517);
        assert_eq!(c.record(close(0xb0, 1), &stats).unwrap().task, accept.task);
        assert!(c.record(close(0xa0, 1), &stats).is_none(), "closed once");
        assert_eq!(Stats::get(&stats.close_unreported), 1);
    }

    #[test]
    fn closes_of_refused_or_unseen_connections_are_dropped_and_in_progress_ones_kept() {
        let stats = Stats::default();
        let mut c = Connections::default();
        assert!(c.record(net(net_op::CONNECT, 1, -111, 7), &stats).is_some());
        assert!(
            c.record(net(net_op::CONNECT, 2, IN_PROGRESS, 7), &stats)
                .is_some()
        );
        assert!(c.record(close(1, 0), &stats).is_none());
        assert!(c.record(close(3, 0), &stats).is_none());
        assert_eq!(c.record(close(2, 0), &stats).unwrap().task.tgid, 7);
        assert_eq!(Stats::get(&stats.close_unreported), 2);
    }

    #[test]
    fn a_full_table_is_given_up_and_counted_rather_than_grown() {
        let stats = Stats::default();
        let mut c = Connections::default();
        for sk in 0..MAX_OPEN as u64 {
            c.record(net(net_op::ACCEPT, sk, 0, 7), &stats);
        }
        c.record(net(net_op::ACCEPT, u64::MAX, 0, 7), &stats);
        assert_eq!(Stats::get(&stats.connections_forgotten), MAX_OPEN as u64);
        assert!(c.record(close(1, 0), &stats).is_none());
        assert!(c.record(close(u64::MAX, 0), &stats).is_some());
    }
}
