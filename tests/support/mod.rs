//! Test harnesses shared by the integration tests; each test binary uses only some.
#![allow(dead_code)]

pub mod apiserver;
pub mod idp;
pub mod server;
