//! Prometheus metrics of the event relay.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of the event relay.
#[derive(Clone)]
pub struct RelayMetrics {
    /// Events the broker confirmed.
    pub relayed: IntCounter,
    /// Events the broker refused (nack); they are published again.
    pub nacked: IntCounter,
    /// Rounds that failed, by stage: `connect`, `publish`, `confirm`, `store`.
    pub failures: IntCounterVec,
    /// Events in the log not yet confirmed by the broker (head − cursor).
    pub lag: IntGauge,
    /// 1 while connected to the broker.
    pub connected: IntGauge,
}

impl RelayMetrics {
    /// Registers the metrics in `registry`.
    ///
    /// # Errors
    /// When metrics of the same names are already registered.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let relayed = IntCounter::new(
            "ferry_relay_events_relayed_total",
            "Events published to the message broker and confirmed by it.",
        )?;
        let nacked = IntCounter::new(
            "ferry_relay_events_nacked_total",
            "Events the message broker refused (negative confirm); they are published again.",
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "ferry_relay_failures_total",
                "Relay rounds that failed, by stage: connect, publish, confirm, store.",
            ),
            &["stage"],
        )?;
        let lag = IntGauge::new(
            "ferry_relay_lag_events",
            "Events in the registry's log not yet confirmed by the message broker (head minus cursor).",
        )?;
        let connected = IntGauge::new(
            "ferry_relay_connected",
            "1 while the relay is connected to the message broker, else 0.",
        )?;
        registry.register(Box::new(relayed.clone()))?;
        registry.register(Box::new(nacked.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        Ok(RelayMetrics {
            relayed,
            nacked,
            failures,
            lag,
            connected,
        })
    }
}
