//! End-to-end tests: the real gateway on port 0 behind real mutual TLS, a throwaway PKI
//! and a fresh embedded store per test.
#![forbid(unsafe_code)]

mod admission;
mod approvals;
mod audit_api;
mod audit_export;
mod audit_trail;
mod binary;
mod concurrency;
mod console;
mod fail_closed;
mod kafka_support;
mod malformed;
mod masking;
mod mtls;
mod opa_api;
mod production;
mod proxy;
mod reload;
mod retention;
mod reveal;
mod services;
mod support;
mod transfers;
