//! The sensor: loads the eBPF programs and runs the pipeline
//! `capture -> decode -> enrich -> encode -> ship`.

pub mod btf;
pub mod capture;
pub mod config;
pub mod decode;
pub mod encode;
pub mod enrich;
pub mod health;
pub mod host;
pub mod loader;
pub mod mounts;
pub mod pipeline;
pub mod ship;
pub mod stats;
pub mod syscalls;
