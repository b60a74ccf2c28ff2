//! Producers of samples: each wire format or collector is one file and
//! writes through the store's `Appender`. This version has the Prometheus
//! text/OpenMetrics parser ([`text`]), the remote-write decoder
//! ([`remote_write`]) and the Pushgateway-compatible group store ([`push`]).

pub mod push;
pub mod remote_write;
pub mod text;
