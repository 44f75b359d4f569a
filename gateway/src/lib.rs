//! Countersign gateway: mutual-TLS front door, in-process Rego decisions, HTTP API.
//!
//! The binary (`main.rs`) only parses the command line and calls into this library, so the
//! end-to-end tests run exactly the code the binary runs.
#![forbid(unsafe_code)]

pub mod app;
pub mod auditor;
pub mod cli;
pub mod config;
pub mod console;
pub mod dev;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod server;
pub mod stream;
pub mod sweeper;
pub mod tls;
