//! The `hub` command: `serve` on the embedded store, `mappings validate|test|render`, `events`,
//! `replay`, `verify`. `main.rs` parses arguments; the commands live here so integration tests can call
//! them too.

pub mod admin_access;
pub mod catcher;
pub mod dev_secrets;
pub mod files;
pub mod mappings_cmd;
pub mod mappings_push;
pub mod serve;
pub mod store_cmd;
pub mod verify_cmd;
