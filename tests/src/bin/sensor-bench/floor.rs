//! The floor: one program per sensor program, on the same tracepoints, that
//! only reserves and submits a 64-byte record, drained by a consumer that
//! polls every 10 ms or when woken, as the sensor's capture does. It runs as a child process
//! (`sensor-bench floor`) so it loads, costs and detaches like the sensor.

use std::{
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result};

/// The child's main: load, attach, drain until killed.
pub fn run(ring_bytes: u32) -> Result<()> {
    let mut floor = sensor_user::loader::load_floor(
        ring_bytes,
        false,
        std::path::Path::new("/sys/kernel/btf/vmlinux"),
    )
    .context("loading the floor programs")?;
    for (program, slot) in &floor.pairs {
        eprintln!("floor: {slot} for {program}");
    }
    eprintln!("floor: attached {} programs", floor.pairs.len());
    let fd = floor.events.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&raw mut pfd, 1, 10) };
        while let Some(record) = floor.events.next() {
            drop(record);
        }
    }
}

/// The running floor child; killed on drop.
pub struct Floor(Child);

impl Floor {
    pub fn start(ring_bytes: u32) -> Result<Self> {
        let mut cmd = Command::new(std::env::current_exe().context("own path")?);
        cmd.args(["floor", "--ring-bytes", &ring_bytes.to_string()]);
        let (child, _, _) = tests::spawn_until(cmd, Stdio::null(), "floor: attached", "floor");
        Ok(Self(child))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
