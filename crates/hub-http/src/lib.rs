//! The hub's HTTP surface and delivery machinery, shared by every shell.
//!
//! [`router::router`] is the one axum `Router` that `hub serve` serves with hyper and the Lambda
//! functions hand to `lambda_http`; [`forwarder::HttpForwarder`] is the hardened outbound client;
//! [`worker::Worker`] feeds due jobs from a store to the core.

pub mod forwarder;
pub mod router;
pub mod worker;
