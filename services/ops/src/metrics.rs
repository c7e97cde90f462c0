//! The process's Prometheus metrics: one registry, registered on first use,
//! recorded from wherever the event happens. Every label takes its values
//! from a small fixed set (topic kinds, store operations, error codes,
//! refusal reasons, push channels and results): never a user, thread,
//! message or device id, so the number of series stays bounded.
//!
//! The README ("Operations") lists every metric; keep the two in step.

use std::sync::LazyLock;
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Store operations timed by `chat_store_latency_seconds`.
pub const STORE_OPS: &[&str] = &["append", "mark_read", "history"];
/// Kinds of topic counted by `chat_messages_out_total`.
pub const TOPIC_KINDS: &[&str] = &["thread", "user", "service", "other"];
/// Why a CONNECT was refused (`chat_connect_refused_total`).
pub const CONNECT_REFUSALS: &[&str] = &[
    "bad_token",
    "rate_limited",
    "not_allowed",
    "draining",
    "too_many_connections",
];

pub struct Metrics {
    registry: Registry,
    /// MQTT connections open on this node (sampled at each scrape).
    pub mqtt_connections: IntGauge,
    /// Chat messages from clients stored by this node (retries of a stored
    /// message not counted again).
    pub messages_in: IntCounter,
    /// Server publishes handed to the broker, by topic kind.
    pub messages_out: IntCounterVec,
    /// A `send_message` from the moment the service has it until its ack
    /// (stored, or refused) is handed to the broker.
    pub ack_latency: Histogram,
    /// A stored message's creation time until its `message_new` is handed
    /// to the broker.
    pub delivery_latency: Histogram,
    /// Store calls by operation.
    pub store_latency: HistogramVec,
    /// Jobs waiting in a queue, by queue.
    pub queue_depth: IntGaugeVec,
    /// Refused MQTT CONNECTs by reason.
    pub connect_refused: IntCounterVec,
    /// Refused client publishes by the error code the client was told.
    pub publish_refused: IntCounterVec,
    /// Notification attempts by channel and result.
    pub push: IntCounterVec,
    /// Client publishes being processed (stored, acked) right now.
    pub sends_in_flight: IntGauge,
    /// 1 while the node drains (SIGTERM), else 0.
    pub draining: IntGauge,
    /// Run before every scrape, to sample gauges kept elsewhere.
    samplers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// The series of [`STORE_OPS`] and [`TOPIC_KINDS`], in their order:
    /// looked up by label on every message, they hashed the label each time.
    store_ops: Vec<Histogram>,
    topic_kinds: Vec<IntCounter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

impl Metrics {
    fn register() -> Metrics {
        let registry = Registry::new();
        // The names and help texts are literals: registration cannot fail
        // unless two metrics share a name, a bug caught by the unit test.
        let mut metrics = Metrics {
            mqtt_connections: IntGauge::new(
                "chat_mqtt_connections",
                "MQTT connections open on this node",
            )
            .expect("metric"),
            messages_in: IntCounter::new(
                "chat_messages_in_total",
                "Chat messages from clients stored by this node",
            )
            .expect("metric"),
            messages_out: IntCounterVec::new(
                Opts::new(
                    "chat_messages_out_total",
                    "Server publishes handed to the broker, by topic kind",
                ),
                &["topic"],
            )
            .expect("metric"),
            ack_latency: Histogram::with_opts(histogram(
                "chat_ack_latency_seconds",
                "send_message received by the service until its ack is handed to the broker",
            ))
            .expect("metric"),
            delivery_latency: Histogram::with_opts(histogram(
                "chat_delivery_latency_seconds",
                "Message creation until its message_new is handed to the broker",
            ))
            .expect("metric"),
            store_latency: HistogramVec::new(
                histogram("chat_store_latency_seconds", "Store calls by operation"),
                &["op"],
            )
            .expect("metric"),
            queue_depth: IntGaugeVec::new(
                Opts::new("chat_queue_depth", "Jobs waiting in a queue"),
                &["queue"],
            )
            .expect("metric"),
            connect_refused: IntCounterVec::new(
                Opts::new(
                    "chat_connect_refused_total",
                    "Refused MQTT CONNECTs by reason",
                ),
                &["reason"],
            )
            .expect("metric"),
            publish_refused: IntCounterVec::new(
                Opts::new(
                    "chat_publish_refused_total",
                    "Refused client publishes by error code",
                ),
                &["code"],
            )
            .expect("metric"),
            push: IntCounterVec::new(
                Opts::new(
                    "chat_push_total",
                    "Notification attempts by channel and result",
                ),
                &["channel", "result"],
            )
            .expect("metric"),
            sends_in_flight: IntGauge::new(
                "chat_sends_in_flight",
                "Client publishes being processed right now",
            )
            .expect("metric"),
            draining: IntGauge::new("chat_draining", "1 while this node drains").expect("metric"),
            samplers: Mutex::new(Vec::new()),
            store_ops: Vec::new(),
            topic_kinds: Vec::new(),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.mqtt_connections.clone()),
            Box::new(metrics.messages_in.clone()),
            Box::new(metrics.messages_out.clone()),
            Box::new(metrics.ack_latency.clone()),
            Box::new(metrics.delivery_latency.clone()),
            Box::new(metrics.store_latency.clone()),
            Box::new(metrics.queue_depth.clone()),
            Box::new(metrics.connect_refused.clone()),
            Box::new(metrics.publish_refused.clone()),
            Box::new(metrics.push.clone()),
            Box::new(metrics.sends_in_flight.clone()),
            Box::new(metrics.draining.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Known label values start at zero, so dashboards see the series
        // before the first event.
        metrics.topic_kinds = TOPIC_KINDS
            .iter()
            .map(|topic| metrics.messages_out.with_label_values(&[*topic]))
            .collect();
        metrics.store_ops = STORE_OPS
            .iter()
            .map(|op| metrics.store_latency.with_label_values(&[*op]))
            .collect();
        for reason in CONNECT_REFUSALS {
            metrics.connect_refused.with_label_values(&[*reason]);
        }
        metrics
    }

    /// Runs `sample` before every scrape (e.g. to copy a count kept by a
    /// library into a gauge).
    pub fn on_scrape(&self, sample: impl Fn() + Send + Sync + 'static) {
        self.samplers.lock().push(Box::new(sample));
    }

    /// Everything, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        for sample in self.samplers.lock().iter() {
            sample();
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Counts a server publish on `topic` by the kind of its topic.
    pub fn message_out(&self, topic: &str) {
        // Indexes into TOPIC_KINDS.
        let kind = match topic.split('/').next() {
            // v2's `t/<id>` and `u/<id>`, v1's long names.
            Some("t" | "thread") => 0,
            Some("u" | "user") => 1,
            Some("svc") => 2,
            _ => 3,
        };
        self.topic_kinds[kind].inc();
    }

    /// Times one store operation (one of [`STORE_OPS`]).
    pub fn store_timer(&self, op: &'static str) -> prometheus::HistogramTimer {
        match STORE_OPS.iter().position(|known| *known == op) {
            Some(i) => self.store_ops[i].start_timer(),
            None => self.store_latency.with_label_values(&[op]).start_timer(),
        }
    }

    /// Counts a refused CONNECT (one of [`CONNECT_REFUSALS`]).
    pub fn connect_refused(&self, reason: &'static str) {
        self.connect_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a refused publish by its protocol error code.
    pub fn publish_refused(&self, code: &str) {
        self.publish_refused.with_label_values(&[code]).inc();
    }

    /// Counts a notification attempt.
    pub fn push_attempt(&self, channel: &str, result: &str) {
        self.push.with_label_values(&[channel, result]).inc();
    }

    /// Observes the time since `since` on `histogram`.
    pub fn observe_since(histogram: &Histogram, since: Instant) {
        histogram.observe(since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_in_text_format() {
        let m = metrics();
        m.messages_in.inc();
        m.message_out("thread/t1");
        m.message_out("user/u1");
        m.message_out("svc/persist/t/u");
        m.publish_refused("rate_limited");
        m.push_attempt("fcm", "sent");
        m.ack_latency.observe(0.003);
        drop(m.store_timer("append"));
        m.on_scrape(|| metrics().mqtt_connections.set(7));
        let text = m.render();
        for name in [
            "chat_mqtt_connections 7",
            "chat_messages_in_total ",
            "chat_messages_out_total{topic=\"thread\"} ",
            "chat_messages_out_total{topic=\"service\"} ",
            "chat_ack_latency_seconds_bucket{le=\"0.005\"} ",
            "chat_ack_latency_seconds_count ",
            "chat_delivery_latency_seconds_count ",
            "chat_store_latency_seconds_count{op=\"append\"} ",
            "chat_store_latency_seconds_count{op=\"history\"} 0",
            "chat_connect_refused_total{reason=\"draining\"} 0",
            "chat_publish_refused_total{code=\"rate_limited\"} ",
            "chat_push_total{channel=\"fcm\",result=\"sent\"} ",
            "chat_sends_in_flight ",
            "chat_draining 0",
            "# TYPE chat_ack_latency_seconds histogram",
            "# TYPE chat_messages_in_total counter",
            "# TYPE chat_mqtt_connections gauge",
        ] {
            assert!(text.contains(name), "{name:?} missing from:\n{text}");
        }
    }

    #[test]
    fn a_message_out_counts_on_its_topic_kind_and_a_timer_on_its_op() {
        // A registry of its own: the global one is shared with other tests.
        let m = Metrics::register();
        m.message_out("t/t1");
        m.message_out("u/u1");
        m.message_out("u/u2");
        drop(m.store_timer("mark_read"));
        let text = m.render();
        for line in [
            "chat_messages_out_total{topic=\"thread\"} 1",
            "chat_messages_out_total{topic=\"user\"} 2",
            "chat_messages_out_total{topic=\"other\"} 0",
            "chat_store_latency_seconds_count{op=\"mark_read\"} 1",
            "chat_store_latency_seconds_count{op=\"append\"} 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
