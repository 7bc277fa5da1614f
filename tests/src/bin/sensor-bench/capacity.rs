//! The capacity ramp: the sensor with `files.writes = "all"` under a paced
//! write flood, shipping either to a sink that acknowledges without storing
//! (what the sensor pipeline carries) or to the collector on the same cores
//! (what reaches the database end to end).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ::tests::{Certs, Collector, Sensor, binary};
use anyhow::{Context as _, Result, bail};

use crate::{
    Durations, Perf, TmpfsMount, config_file, cpu_ms, procstat,
    report::{CapacityRow, Report},
    sink::SinkState,
    store::{self, Store},
    workload::{self, Scratch},
};

/// Where a capacity run's sensor ships.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Receiver {
    /// `sensor-bench sink`: acknowledges each batch on arrival, stores nothing.
    Sink,
    /// The collector, storing in its database.
    Collector,
}

/// A started receiver for one step.
enum Running {
    Collector(Collector, Store),
    Sink {
        child: Child,
        url: String,
        certs: Certs,
        state: PathBuf,
    },
}

impl Running {
    fn start(receiver: Receiver, db_mount: &Path, prefix: &str) -> Result<Self> {
        Ok(match receiver {
            Receiver::Collector => {
                let collector = Collector::start_in(db_mount);
                let store = Store::open(&collector.db)?;
                Self::Collector(collector, store)
            }
            Receiver::Sink => {
                let certs = Certs::generate();
                // On the ignored tmpfs: its writes are not events.
                let state = db_mount.join(format!("sink-{}.state", std::process::id()));
                let _ = std::fs::remove_file(&state);
                let mut child = Command::new(std::env::current_exe()?)
                    .arg("sink")
                    .arg("--certs")
                    .arg(&certs.dir)
                    .args(["--prefix", prefix])
                    .arg("--state")
                    .arg(&state)
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("starting the sink")?;
                let mut line = String::new();
                let stdout = child.stdout.take().context("sink stdout")?;
                BufReader::new(stdout).read_line(&mut line)?;
                let Some(addr) = line.trim().strip_prefix("listening ") else {
                    let _ = child.kill();
                    bail!("the sink did not start: {line:?}");
                };
                Self::Sink {
                    url: format!("https://{addr}"),
                    child,
                    certs,
                    state,
                }
            }
        })
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Collector(c, _) => c.pid(),
            Self::Sink { child, .. } => child.id(),
        }
    }

    fn start_sensor(&self, extra: &[&str]) -> Sensor {
        match self {
            Self::Collector(c, _) => Sensor::start(c, extra),
            Self::Sink { url, certs, .. } => {
                let mut cmd = Command::new(binary("sensor"));
                cmd.arg("run")
                    .args(["--collector", url])
                    .args(certs.sensor_args("client"))
                    .args(["--health-interval", "1"])
                    .args(extra);
                Sensor::spawn(cmd)
            }
        }
    }

    /// Waits until nothing more arrives for 3 s (everything spooled shipped).
    fn settle(&self) -> Result<()> {
        match self {
            Self::Collector(_, store) => {
                store.settle(Duration::from_secs(3), Duration::from_secs(600))?;
            }
            Self::Sink { state, .. } => {
                let limit = Instant::now() + Duration::from_secs(600);
                let (mut last, mut since) = (u64::MAX, Instant::now());
                while Instant::now() < limit {
                    let now = SinkState::read(state).map_or(0, |s| s.matched);
                    if now != last {
                        (last, since) = (now, Instant::now());
                    } else if since.elapsed() >= Duration::from_secs(3) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Ok(())
    }

    /// After the sensor stopped: the workload's events received, and the
    /// sensor's final drops (total, where).
    fn finish(&self, sensor_id: &str, prefix: &str) -> Result<(u64, u64, String)> {
        match self {
            Self::Collector(_, store) => {
                let health = store
                    .last_health(sensor_id)?
                    .context("no health report from the capacity sensor")?;
                let (dropped, at) = store::step_drops(&health);
                Ok((store.files_of(sensor_id, prefix)?, dropped, at))
            }
            Self::Sink { state, .. } => {
                // The final report was acknowledged on arrival; the state
                // file shows it within 100 ms.
                std::thread::sleep(Duration::from_millis(500));
                let s = SinkState::read(state).or_else(|_| {
                    std::thread::sleep(Duration::from_millis(200));
                    SinkState::read(state)
                })?;
                let (dropped, at) = s
                    .health
                    .context("no health report from the capacity sensor")?;
                Ok((s.matched, dropped, at))
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Self::Sink { child, state, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(state);
        }
    }
}

/// Ramps the write flood with the sensor shipping to `receiver`, then holds
/// the best lossless rate; the rows go to the report's table for `receiver`.
/// `steps`: these rates instead of the ramp, with no hold.
pub fn run(
    d: &Durations,
    quick: bool,
    receiver: Receiver,
    steps: Option<Vec<Option<u64>>>,
    report: &mut Report,
) -> Result<()> {
    // The receiver's files on their own tmpfs, which the sensor ignores (in
    // the kernel, by mount): the collector's writes would otherwise be
    // events too (writes = "all"), and under overload their drops would mix
    // with the workload's in the accounting.
    let db_mount = TmpfsMount::new("/run/sensor-bench-db")?;
    let config = config_file(&format!(
        "[files]\nwrites = \"all\"\nignore_prefixes = [\"/proc\", \"/sys\", \"/dev/pts\", \"{}\"]\n[spool]\nmax_bytes = 4294967296\n",
        db_mount.0.display()
    ))?;
    let config_path = config
        .path()
        .to_str()
        .context("UTF-8 temp path")?
        .to_owned();
    let threads = 2;
    // The baseline: the same writers as fast as they go with nothing attached.
    if report.capacity_bare.is_none() {
        let scratch = Scratch::new("flood-bare")?;
        eprintln!("bench: capacity workload bare for {:?}", d.step_time);
        report.capacity_bare = Some(workload::write_flood(&scratch, threads, None, d.step_time)?);
    }
    let fixed = steps.is_some();
    let ramp: Vec<Option<u64>> = if let Some(steps) = steps {
        steps
    } else if quick {
        vec![Some(20_000), None]
    } else {
        vec![
            Some(50_000),
            Some(100_000),
            Some(200_000),
            Some(300_000),
            Some(400_000),
            Some(500_000),
            Some(550_000),
            None,
        ]
    };
    // Ramp up until a step loses events, then hold the best lossless rate
    // for the full confirmation time; if it does not hold, step down to the
    // next lossless rate (at most CONFIRM_TRIES holds in all).
    let mut rows = Vec::new();
    let mut lossless_steps = Lossless::default();
    let mut tries = 0;
    let mut plan: Vec<(Option<u64>, Duration)> = ramp.iter().map(|&t| (t, d.step_time)).collect();
    let mut i = 0;
    while i < plan.len() {
        let (target, time) = plan[i];
        let confirming = i + 1 == plan.len() && time == d.confirm_time;
        let id = format!("bench-capacity-{receiver:?}-{i}");
        let scratch = Scratch::new(&format!("flood{i}"))?;
        let prefix = format!("{}/", scratch.0.display());
        eprintln!("bench: capacity ({receiver:?}) step {target:?} for {time:?}");
        // A receiver per step: every step's events in one database would
        // outgrow the tmpfs.
        let receiving = Running::start(receiver, &db_mount.0, &prefix)?;
        let sensor = receiving.start_sensor(&["--sensor-id", &id, "--config", &config_path]);
        let spid = sensor.pid();
        let rpid = receiving.pid();
        let cpu0 = cpu_ms(spid);
        let rcpu0 = cpu_ms(rpid);
        // Profile the first step at 100,000 events/s or more.
        let heavy = target.is_none_or(|t| t >= 100_000);
        // perf's own events (its exec, its file writes) are not the
        // workload's: its file goes on the ignored tmpfs, and it starts a
        // second before the flood and stops after it, so that no drop of
        // theirs mixes into the step's accounting.
        let profile = (heavy && report.profile.is_empty()).then(|| {
            let perf = Perf::start(spid, &db_mount.0.join("sensor.perf"));
            std::thread::sleep(Duration::from_secs(1));
            perf
        });
        let ticks0 = procstat::machine_ticks();
        let run = workload::write_flood(&scratch, threads, target, time)?;
        let machine_busy = procstat::busy_between(ticks0, procstat::machine_ticks());
        let sensor_cpu_ms = cpu_ms(spid) - cpu0;
        let collector_cpu_ms = cpu_ms(rpid) - rcpu0;
        if let Some(p) = profile {
            report.profile = p.finish(&format!(
                "of the sensor during the first capacity step at 100,000 events/s or more, \
                 shipping to the {}",
                receiver.noun()
            ));
        }
        report.memory.load_peak_kib = report
            .memory
            .load_peak_kib
            .max(procstat::peak_rss_kib(spid).unwrap_or(0));
        // Everything spooled reaches the receiver, then a graceful stop:
        // the last health report counts every drop.
        receiving.settle()?;
        sensor.stop();
        let (stored, dropped, dropped_at) = receiving.finish(&id, &prefix)?;
        let row = CapacityRow {
            target,
            seconds: run.elapsed.as_secs_f64(),
            generated: run.iterations + u64::from(threads),
            stored,
            dropped,
            dropped_at,
            sensor_cpu_ms,
            collector_cpu_ms,
            workload_cpu_ms: run.cpu.as_secs_f64() * 1e3,
            machine_busy,
            held: confirming,
        };
        eprintln!(
            "bench:   {:.0} events/s generated {} received {} dropped {} ({})",
            row.rate(),
            row.generated,
            row.stored,
            row.dropped,
            row.dropped_at
        );
        let (lossless, rate) = (row.lossless(), row.rate());
        rows.push(row);
        if confirming {
            tries += 1;
            // The step just held is the last lossless one; the next below.
            lossless_steps.remove_best();
            match lossless_steps.best() {
                Some(lower) if !lossless && tries < CONFIRM_TRIES => {
                    plan.push((lower, d.confirm_time));
                    i += 1;
                    continue;
                }
                _ => break,
            }
        }
        if lossless {
            lossless_steps.0.push((target, rate));
        }
        let last_of_ramp = i + 1 == ramp.len();
        // The collector's ramp is not held: see the report's note on its
        // tmpfs (holds that filled it lost events the accounting missed).
        if !fixed
            && receiver == Receiver::Sink
            && (!lossless || last_of_ramp)
            && let Some(best) = lossless_steps.best()
        {
            plan.truncate(i + 1);
            plan.push((best, d.confirm_time));
        }
        i += 1;
    }
    match receiver {
        Receiver::Sink => report.capacity_alone = rows,
        Receiver::Collector => report.capacity = rows,
    }
    Ok(())
}

impl Receiver {
    pub fn noun(self) -> &'static str {
        match self {
            Self::Sink => "sink (acknowledges, stores nothing)",
            Self::Collector => "collector",
        }
    }
}

/// The lossless steps of a ramp (target, rate achieved), to choose what to
/// hold: the one that achieved the highest rate (a paced step may carry
/// more than the unpaced one, whose writers crowd the sensor out), then the
/// next best while a hold loses events.
#[derive(Default)]
struct Lossless(Vec<(Option<u64>, f64)>);

impl Lossless {
    fn best_at(&self) -> Option<usize> {
        (0..self.0.len()).max_by(|&a, &b| self.0[a].1.total_cmp(&self.0[b].1))
    }

    /// The target to hold: the best step's, or for the unpaced step the
    /// rate it achieved (in thousands, rounded down). Held unpaced for 30 s,
    /// the writers outran what that step had carried lossless, and the
    /// overload filled the collector's tmpfs.
    fn best(&self) -> Option<Option<u64>> {
        self.best_at().map(|i| {
            let (target, rate) = self.0[i];
            target.or(Some(rate as u64 / 1000 * 1000))
        })
    }

    fn remove_best(&mut self) {
        if let Some(i) = self.best_at() {
            self.0.remove(i);
        }
    }
}

/// Most holds of a rate for the confirmation time: the best lossless rate of
/// the ramp, then the lossless steps below it while one loses events.
const CONFIRM_TRIES: usize = 3;

#[cfg(test)]
mod tests {
    use super::Lossless;

    #[test]
    fn the_hold_is_the_step_that_carried_most_then_the_next_best() {
        let mut steps = Lossless::default();
        steps.0.push((Some(500_000), 479_163.0));
        steps.0.push((Some(550_000), 517_362.0));
        steps.0.push((None, 445_494.0));
        assert_eq!(steps.best(), Some(Some(550_000)));
        steps.remove_best();
        assert_eq!(steps.best(), Some(Some(500_000)));
        steps.remove_best();
        assert_eq!(
            steps.best(),
            Some(Some(445_000)),
            "unpaced: held at what it carried"
        );
        steps.remove_best();
        assert_eq!(steps.best(), None);
    }
}
