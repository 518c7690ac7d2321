//! Leader election with a `coordination.k8s.io` Lease: one replica reconciles, every
//! replica serves OAuth. (kube-leader-election, the maintained crate for this, still
//! targets kube 4, so this is the small compare-and-swap loop it would be.)
//!
//! The holder renews the Lease every `renew_every`; another replica takes it over once it
//! has not been renewed for `lease_duration`. Every write carries the resourceVersion read
//! before it, so two replicas can never both believe they took the same Lease.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::clock::Clock;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and others retry.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The defaults `run` uses: 15 s leases renewed every 5 s.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// The outcome of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease.
    Leading,
    /// Someone else holds a live Lease.
    Following,
}

fn lease_holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

fn expired(lease: &Lease, now: Timestamp, default: Duration) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let secs = spec
        .lease_duration_seconds
        .map(i64::from)
        .unwrap_or(default.as_secs() as i64);
    now.duration_since(renewed).as_secs() >= secs
}

/// Tries once to take or renew the Lease.
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> kube::Result<Attempt> {
    let seconds = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
            Err(e) => Err(e),
        };
    };

    let ours = lease_holder(&lease) == Some(cfg.identity.as_str());
    if !ours && !expired(&lease, now, cfg.lease_duration) {
        return Ok(Attempt::Following);
    }

    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if !ours {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);

    // A conflict means another replica wrote first: it leads, not us.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Leading),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up, so another replica takes over at once instead of after it expires.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> kube::Result<()> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    if lease_holder(&lease) != Some(cfg.identity.as_str()) {
        return Ok(());
    }

    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.renew_time = None;
    }
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await
        .map(drop)
}

/// Runs `lead` while this replica holds the Lease, and stops it (by completing the future it
/// was handed) as soon as the Lease is lost; until `shutdown` completes. `leading` reports
/// the current state.
pub async fn run<F, Fut>(
    api: Api<Lease>,
    cfg: LeaseConfig,
    clock: Clock,
    leading: watch::Sender<bool>,
    lead: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut task: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_renewal: Option<tokio::time::Instant> = None;
    let (stop_tx, _) = watch::channel(false);

    loop {
        let attempt = try_acquire(&api, &cfg, clock.now()).await;
        let now = tokio::time::Instant::now();
        let holding = match attempt {
            Ok(Attempt::Leading) => {
                last_renewal = Some(now);
                true
            }
            Ok(Attempt::Following) => false,
            // An API outage: keep leading only while the Lease we hold is surely still ours.
            Err(e) => {
                tracing::warn!(error = %e, "leader election: lease not renewed");
                last_renewal.is_some_and(|t| now.duration_since(t) < cfg.lease_duration / 2)
            }
        };

        match (holding, task.is_some()) {
            (true, false) => {
                tracing::info!(identity = %cfg.identity, "became the leader; reconciling");
                let _ = stop_tx.send(false);
                task = Some(tokio::spawn(lead(stop_tx.subscribe())));
                let _ = leading.send(true);
            }
            (false, true) => {
                tracing::warn!(identity = %cfg.identity, "lost the lease; stopping reconciling");
                let _ = stop_tx.send(true);
                if let Some(t) = task.take() {
                    let _ = t.await;
                }
                last_renewal = None;
                let _ = leading.send(false);
            }
            _ => {}
        }

        tokio::select! {
            _ = tokio::time::sleep(cfg.renew_every) => {}
            _ = &mut shutdown => break,
        }
    }

    let _ = stop_tx.send(true);
    if let Some(t) = task.take() {
        let _ = t.await;
    }
    let _ = leading.send(false);
    if let Err(e) = release(&api, &cfg).await {
        tracing::warn!(error = %e, "could not release the lease");
    }
}

/// Completes when `stop` turns true: the shutdown future handed to the leader's work.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
