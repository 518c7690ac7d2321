//! Prometheus metrics: what the OAuth server counts as it serves, and the controller's
//! counters read at scrape time.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::reconcile::Stats;

/// Labels of a token answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `authorization_code` or `refresh_token`.
    pub grant_type: String,
    /// `issued`, or the OAuth error code.
    pub outcome: String,
}

/// Labels of a registration answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, or the OAuth error code.
    pub outcome: String,
}

/// What the OAuth server counts.
#[derive(Debug)]
pub struct Metrics {
    /// Token answers by grant type and outcome.
    pub tokens: Family<TokenLabels, Counter>,
    /// Registration answers by outcome.
    pub registrations: Family<OutcomeLabels, Counter>,
    /// Time `/mcp` takes until the MCP server's answer headers arrive.
    pub mcp_latency: Histogram,
    /// `/mcp` requests refused before reaching the MCP server, by OAuth error code.
    pub mcp_refused: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ];
        Metrics {
            tokens: Family::default(),
            registrations: Family::default(),
            mcp_latency: Histogram::new(buckets),
            mcp_refused: Family::default(),
        }
    }
}

impl Metrics {
    /// Counts a token answer.
    pub fn token(&self, grant_type: &str, outcome: &str) {
        let labels = TokenLabels {
            grant_type: grant_type.into(),
            outcome: outcome.into(),
        };
        self.tokens.get_or_create(&labels).inc();
    }

    /// Counts a registration answer.
    pub fn registration(&self, outcome: &str) {
        self.registrations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// The controller's counters, encoded on each scrape.
#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let counters = [
            (
                "mcp_connector_reconciles",
                "Reconcile passes run",
                &stats.reconciles,
            ),
            (
                "mcp_connector_reconcile_errors",
                "Reconcile passes that failed",
                &stats.errors,
            ),
            (
                "mcp_connector_status_writes",
                "Status writes",
                &stats.status_writes,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }

        let restarts = [
            (
                "mcp-server",
                stats.restarts_mcp_server.load(Ordering::Relaxed),
            ),
            ("secrets", stats.restarts_secrets.load(Ordering::Relaxed)),
        ];
        let family: Family<OutcomeLabels, Counter> = Family::default();
        for (cause, n) in restarts {
            family
                .get_or_create(&OutcomeLabels {
                    outcome: cause.into(),
                })
                .inc_by(n);
        }
        let metric = encoder.encode_descriptor(
            "mcp_connector_dependent_restarts",
            "Dependents restarted, by cause (label outcome)",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

/// A registry with the server's metrics and, when given, the controller's.
pub fn registry(metrics: &Arc<Metrics>, stats: Option<Arc<Stats>>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "mcp_connector_tokens",
        "Token endpoint answers by grant type and outcome",
        metrics.tokens.clone(),
    );
    registry.register(
        "mcp_connector_registrations",
        "Client registration answers by outcome",
        metrics.registrations.clone(),
    );
    registry.register(
        "mcp_connector_mcp_latency_seconds",
        "Time /mcp takes until the MCP server's answer headers arrive",
        metrics.mcp_latency.clone(),
    );
    registry.register(
        "mcp_connector_mcp_refused",
        "/mcp requests refused before the MCP server, by error code",
        metrics.mcp_refused.clone(),
    );
    if let Some(stats) = stats {
        registry.register_collector(Box::new(StatsCollector(stats)));
    }
    registry
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
