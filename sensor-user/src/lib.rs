//! The sensor: captures host activity and runs the pipeline
//! `capture -> decode -> enrich -> encode -> ship`. On Linux the capture is
//! eBPF (the modules below marked Linux); on Windows it is ETW (sensor-etw).

#[cfg(target_os = "linux")]
pub mod btf;
#[cfg(target_os = "linux")]
pub mod capture;
pub mod config;
#[cfg(target_os = "linux")]
pub mod decode;
pub mod encode;
#[cfg(target_os = "linux")]
pub mod enrich;
pub mod health;
pub mod host;
#[cfg(target_os = "linux")]
pub mod kfunc;
#[cfg(target_os = "linux")]
pub mod loader;
#[cfg(target_os = "linux")]
pub mod mounts;
pub mod pipeline;
pub mod ship;
pub mod spool;
pub mod stats;
#[cfg(target_os = "linux")]
pub mod syscalls;
pub mod tls;
