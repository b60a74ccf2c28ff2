//! Producers of samples: each wire format or collector is one file and
//! writes through the store's `Appender`: the Prometheus text/OpenMetrics
//! parser ([`text`]), the remote-write decoder ([`remote_write`]), the
//! Pushgateway-compatible group store ([`push`]), the host collector
//! ([`host`]), and the pipeline's artifacts ([`artifacts`]) with its runs
//! ([`runs`]); scrape targets found in files ([`discovery`]).

pub mod artifacts;
pub mod discovery;
pub mod host;
pub mod otlp;
pub mod probe;
pub mod profile;
pub mod push;
pub mod remote_write;
pub mod runs;
pub mod scrape;
