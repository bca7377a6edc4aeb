//! Cross-crate integration tests: the real `hub` binary on 127.0.0.1 with a temporary store and
//! real local HTTP destinations.

mod support;

mod admin;
mod aws;
mod corpus;

mod delivery;
mod formats;
mod golden;
mod ingest;
mod limits;
mod redaction;
mod rerouted;
mod restart;
mod storage;
mod tour;
