//! The renewal loop, run as a Pingora background service: it never delays the listeners,
//! and ends when the server shuts down (an order in flight is dropped; its challenge
//! answers are withdrawn).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use instant_acme::Account;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::Instrument;

use super::cert::Issued;
use super::schedule::{self, LOCK_RETRY, RECHECK_MAX};
use super::state::StateDir;
use super::{order, AcmeConfig, AcmeError, Challenges};
use crate::metrics::Metrics;

/// `[tls] acme`: obtains, renews and installs one certificate for `domains`.
pub struct AcmeService {
    settings: AcmeConfig,
    state: StateDir,
    challenges: Arc<dyn Challenges>,
    metrics: Arc<Metrics>,
}

impl AcmeService {
    pub fn new(
        settings: AcmeConfig,
        challenges: Arc<dyn Challenges>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let state = StateDir::new(&settings.state_dir, &settings.directory, &settings.domains);
        AcmeService {
            settings,
            state,
            challenges,
            metrics,
        }
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut runner = Runner {
            svc: self,
            current: None,
            account: None,
            failures: 0,
        };
        // Every event of the service carries the certificate's first name.
        let span = tracing::info_span!(
            "acme",
            domain = self
                .settings
                .domains
                .first()
                .map(String::as_str)
                .unwrap_or("")
        );
        span.in_scope(|| {
            tracing::info!(
                domains = ?self.settings.domains,
                directory = %self.settings.directory,
                challenge = self.settings.challenge.as_str(),
                "acme: started"
            )
        });
        while !*shutdown.borrow() {
            let wait = tokio::select! {
                _ = shutdown.changed() => return,
                wait = runner.step().instrument(span.clone()) => wait,
            };
            let next = SystemTime::now() + wait;
            self.metrics.acme.next_renewal.set(unix(next));
            tracing::debug!(in_secs = wait.as_secs(), "acme: next look");
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The error and its causes ("client error (Connect): tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Runner<'a> {
    svc: &'a AcmeService,
    /// The certificate being served.
    current: Option<Issued>,
    account: Option<Account>,
    /// Failed attempts in a row.
    failures: u32,
}

impl Runner<'_> {
    /// One look at the certificate: install what state_dir has, order if due. Returns how
    /// long to wait before the next look.
    async fn step(&mut self) -> Duration {
        let svc = self.svc;
        if let Err(e) = svc.state.ensure() {
            return self.failed(e.into());
        }
        self.pick_up();
        if let Some(wait) = self.until_due() {
            return wait;
        }
        let _lock = match svc.state.try_lock() {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                svc.metrics.acme.lock_busy.inc();
                tracing::info!("acme: another instance is renewing; waiting for its certificate");
                return LOCK_RETRY;
            }
            Err(e) => return self.failed(e.into()),
        };
        // Under the lock, another instance may just have finished.
        self.pick_up();
        if let Some(wait) = self.until_due() {
            return wait;
        }
        match self.renew().await {
            Ok(()) => {
                self.failures = 0;
                svc.metrics.acme.orders.with_label_values(&["issued"]).inc();
                self.until_due().unwrap_or(LOCK_RETRY)
            }
            Err(e) => {
                svc.metrics.acme.orders.with_label_values(&["failed"]).inc();
                self.failed(e)
            }
        }
    }

    /// `None` when the certificate must be (re)ordered now, else the time until then.
    fn until_due(&self) -> Option<Duration> {
        let current = self.current.as_ref()?;
        if !current.covers(&self.svc.settings.domains) {
            return None;
        }
        let due = schedule::renew_at(
            current.not_before,
            current.not_after,
            self.svc.settings.renew_before,
        );
        due.duration_since(SystemTime::now())
            .ok()
            .filter(|d| !d.is_zero())
            .map(|d| d.min(RECHECK_MAX))
    }

    /// Installs the certificate in state_dir when it is not the one being served.
    fn pick_up(&mut self) {
        let svc = self.svc;
        match svc.state.load_certificate() {
            Ok(Some(issued)) => {
                if self.current.as_ref().map(Issued::leaf) != Some(issued.leaf()) {
                    svc.metrics.acme.loaded.inc();
                    tracing::info!(
                        path = %svc.state.chain_path().display(),
                        "acme: certificate loaded from state_dir"
                    );
                    self.install(issued);
                }
            }
            Ok(None) => {}
            Err(e) => {
                // Also seen for an instant while another instance writes the pair.
                svc.metrics
                    .acme
                    .failures
                    .with_label_values(&["state_dir"])
                    .inc();
                tracing::warn!(error = %e, "acme: cannot use the certificate in state_dir");
            }
        }
    }

    fn install(&mut self, issued: Issued) {
        let svc = self.svc;
        let due = schedule::renew_at(
            issued.not_before,
            issued.not_after,
            svc.settings.renew_before,
        );
        tracing::info!(
            names = ?issued.names,
            serial = %issued.serial,
            not_after = %humantime::format_rfc3339_seconds(issued.not_after),
            renewal = %humantime::format_rfc3339_seconds(due),
            "acme: certificate installed"
        );
        svc.challenges
            .set_certificate(&issued.names, issued.key.clone());
        svc.metrics.acme.expiry.set(unix(issued.not_after));
        self.current = Some(issued);
    }

    async fn renew(&mut self) -> Result<(), AcmeError> {
        let svc = self.svc;
        let account = match &self.account {
            Some(a) => a.clone(),
            None => {
                let a = order::account(&svc.settings, &svc.state).await?;
                self.account = Some(a.clone());
                a
            }
        };
        tracing::info!(domains = ?svc.settings.domains, "acme: ordering a certificate");
        let result = order::obtain(
            &account,
            &svc.settings.domains,
            svc.settings.challenge,
            svc.challenges.as_ref(),
        )
        .await;
        if matches!(&result, Err(e) if e.reason() == "account_unknown") {
            // The CA forgot the account (a test CA restarted, or it was deactivated):
            // the next attempt registers a new one.
            self.account = None;
            svc.state.forget_account()?;
        }
        let (chain, key) = result?;
        let issued = Issued::from_pem(&chain, &key).map_err(AcmeError::Certificate)?;
        tracing::info!(serial = %issued.serial, "acme: certificate issued");
        // Serve it even if it cannot be stored; the error is still counted.
        self.install(issued);
        svc.state.save_certificate(&chain, &key)?;
        Ok(())
    }

    fn failed(&mut self, e: AcmeError) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = schedule::backoff(self.failures, rand::random::<f64>() * 2.0 - 1.0);
        self.svc
            .metrics
            .acme
            .failures
            .with_label_values(&[e.reason()])
            .inc();
        tracing::warn!(
            error = %chain(&e),
            reason = e.reason(),
            failures = self.failures,
            retry_in_secs = wait.as_secs(),
            serving = self.current.as_ref().map(|c| c.serial.as_str()).unwrap_or("nothing"),
            "acme: renewal failed; keeping the current certificate"
        );
        wait
    }
}
