//! The hub's HTTP surface and delivery machinery, shared by every shell.
//!
//! [`router::router`] is the one axum `Router` that `hub serve` serves with hyper and the Lambda
//! functions hand to `lambda_http`; [`forwarder::HttpForwarder`] is the hardened outbound client;
//! [`worker::Worker`] feeds due jobs from a store to the core; [`server`] serves a router with
//! timeouts and connection limits, and [`admin`] guards the local admin listener.

pub mod admin;
pub mod forwarder;
pub mod metrics;
pub mod router;
pub mod server;
pub mod worker;
