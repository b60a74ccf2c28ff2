//! mlmon: one process that monitors an ML pipeline and its machine.
//! See `ARCHITECTURE.md` for the map of modules.

pub mod app;
pub mod backup;
pub mod config;
pub mod expfmt;
pub mod gotmpl;
pub mod http;
pub mod ingest;
pub mod init;
pub mod live;
pub mod model;
pub mod notify;
pub mod par;
pub mod promql;
pub mod remote;
pub mod rules;
pub mod run;
pub mod token;
pub mod tsdb;
pub mod web;
