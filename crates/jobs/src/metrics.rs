//! Prometheus metrics (`GET /metrics`, text format 0.0.4). Counters and the duration histogram
//! count what this process saw (jobs it ended, requests it answered) and restart at zero with it,
//! as Prometheus counters may; the gauges are read from the store at each scrape, so every node
//! reports the same fleet-wide values for them.

use std::sync::Mutex;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use rsvault_types::job::Job;

/// The content type of the text exposition (`Service::metrics_text`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    pub(crate) registry: Registry,
    jobs_total: IntCounterVec,
    job_duration: HistogramVec,
    http_requests: IntCounterVec,
    pub(crate) jobs_running: IntGauge,
    pub(crate) jobs_queued: IntGauge,
    pub(crate) item_last_success: GaugeVec,
    pub(crate) item_stale: IntGaugeVec,
    pub(crate) repository_size: IntGaugeVec,
    /// One scrape at a time: each clears and refills the per-vault gauges.
    pub(crate) scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new().expect("metric definitions are static and valid")
    }
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let jobs_total = IntCounterVec::new(
            Opts::new(
                "rsvault_jobs_total",
                "Jobs that ended on this node, by operation and final status.",
            ),
            &["operation", "status"],
        )?;
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "rsvault_job_duration_seconds",
                "Run time of jobs that ended on this node, from start to end.",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
            ]),
            &["operation"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "rsvault_http_requests_total",
                "HTTP requests this node answered, by method and status code.",
            ),
            &["method", "status"],
        )?;
        let jobs_running = IntGauge::new(
            "rsvault_jobs_running",
            "Jobs running now on any node of the store.",
        )?;
        let jobs_queued = IntGauge::new(
            "rsvault_jobs_queued",
            "Jobs waiting for a runner in the store's queue.",
        )?;
        let item_last_success = GaugeVec::new(
            Opts::new(
                "rsvault_protected_item_last_success_timestamp_seconds",
                "Unix time of each protected item's newest recovery point (absent: none yet).",
            ),
            &["vault", "item"],
        )?;
        let item_stale = IntGaugeVec::new(
            Opts::new(
                "rsvault_protected_item_stale",
                "1 while a protected item's last successful backup is older than its policy allows.",
            ),
            &["vault", "item"],
        )?;
        let repository_size = IntGaugeVec::new(
            Opts::new(
                "rsvault_repository_size_bytes",
                "Bytes of each vault's repository on disk.",
            ),
            &["vault"],
        )?;
        registry.register(Box::new(jobs_total.clone()))?;
        registry.register(Box::new(job_duration.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(jobs_running.clone()))?;
        registry.register(Box::new(jobs_queued.clone()))?;
        registry.register(Box::new(item_last_success.clone()))?;
        registry.register(Box::new(item_stale.clone()))?;
        registry.register(Box::new(repository_size.clone()))?;
        Ok(Self {
            registry,
            jobs_total,
            job_duration,
            http_requests,
            jobs_running,
            jobs_queued,
            item_last_success,
            item_stale,
            repository_size,
            scrape: Mutex::new(()),
        })
    }

    /// Counts a job that ended (called once per job, where its end is recorded).
    pub fn job_ended(&self, job: &Job) {
        self.jobs_total
            .with_label_values(&[job.operation.as_str(), job.status.as_str()])
            .inc();
        if let Some(end) = job.end {
            let secs = (end - job.start).num_milliseconds().max(0) as f64 / 1000.0;
            self.job_duration
                .with_label_values(&[job.operation.as_str()])
                .observe(secs);
        }
    }

    /// Counts an answered request. Methods outside HTTP's usual set share one label value, so a
    /// client cannot grow the series without bound.
    pub fn http_request(&self, method: &str, status: u16) {
        let method = match method {
            "GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.http_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
    }
}
