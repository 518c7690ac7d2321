//! The controller: watches `McpConnector`s and the Secrets they own, and for each one runs
//! a pipeline: resolve the base URL, validate the spec, keep the Secrets, read the
//! upstream's secret, publish the connector to the key store, write status.
//!
//! A pass with nothing to do writes nothing: status is written only when it differs, keys
//! only when a rotation is due, so a quiet cluster causes no API traffic.

pub mod secrets;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::base_url::{self, BaseUrl};
use crate::clock::Clock;
use crate::crd::{MANAGED_BY, MANAGED_BY_LABEL, McpConnector, McpConnectorStatus, SecretsStatus};
use crate::keys::store::Entry;
use crate::keys::{Connector, KeyError, KeyKind, KeyStore, Keys, SecretString};
use crate::settings::{Settings, UpstreamSettings};
use crate::upstream::{OidcUpstream, ProxyUpstream, Upstream};

use secrets::Change;
use status::Observed;

/// The longest a connector goes without a look, even when nothing changes: picks up an
/// edited upstream Secret, which is not watched.
const RESYNC: Duration = Duration::from_secs(300);

/// A reconcile that could not finish. Invalid specs are not errors: they are reported in
/// status and wait for a change. These are transient and retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Secret could not be read.
    #[error("reading Secret {name}")]
    ReadSecret {
        /// Secret name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A Secret could not be written.
    #[error("writing Secret {name}")]
    WriteSecret {
        /// Secret name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Status could not be written.
    #[error("writing status")]
    WriteStatus(#[source] kube::Error),
    /// Keys could not be generated or decoded.
    #[error("key material")]
    Generate(#[source] KeyError),
    /// The object has no namespace (the CRD is namespaced, so only a broken API does this).
    #[error("the object has no namespace")]
    MissingNamespace,
}

impl Error {
    /// A short category, for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadSecret { .. } => "read_secret",
            Error::WriteSecret { .. } => "write_secret",
            Error::WriteStatus(_) => "write_status",
            Error::Generate(_) => "generate",
            Error::MissingNamespace => "missing_namespace",
        }
    }
}

/// Counters the tests and metrics read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reconcile passes run.
    pub reconciles: AtomicU64,
    /// Passes that ended in an error.
    pub errors: AtomicU64,
    /// Status writes.
    pub status_writes: AtomicU64,
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Where connectors are published for the OAuth server.
    pub store: KeyStore,
    /// The time.
    pub clock: Clock,
    /// Counters.
    pub stats: Stats,
}

impl Context {
    /// A context reporting Events as `mcp-connector` (instance `instance`).
    pub fn new(client: Client, store: KeyStore, clock: Clock, instance: Option<String>) -> Context {
        let reporter = Reporter { controller: MANAGED_BY.into(), instance };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            store,
            clock,
            stats: Stats::default(),
        }
    }
}

/// Runs the controller until `shutdown` completes. `namespace` limits it to one.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (connectors, secrets): (Api<McpConnector>, Api<Secret>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };

    let (reader, writer) = reflector::store();
    let store = ctx.store.clone();
    // Only spec changes (a new generation) start a pass: a status write must not cause
    // another pass of the same generation. Deletions leave the key store here.
    let triggers = watcher(connectors, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .map(move |event| {
            if let Ok(watcher::Event::Delete(obj)) = &event {
                store.remove(&connector_id(obj));
            }
            event
        })
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    Controller::for_stream(triggers, reader)
        .owns(secrets, managed)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile request failed");
            }
        })
        .await;
}

/// `namespace/name`, the id a connector is known by in the key store.
pub fn connector_id(obj: &McpConnector) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

fn error_policy(obj: Arc<McpConnector>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        connector = %connector_id(&obj),
        category = error.category(),
        error = %error,
        source = ?std::error::Error::source(error).map(ToString::to_string),
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

async fn publish(ctx: &Context, obj: &McpConnector, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

/// The outcome of keeping both Secrets.
struct SecretsOutcome {
    keys: Option<Keys>,
    observed: Observed,
    status: SecretsStatus,
    next_due: Option<Timestamp>,
    signing_kid: Option<String>,
}

async fn keep_secrets(
    ctx: &Context,
    obj: &McpConnector,
    settings: &Settings,
    now: Timestamp,
) -> Result<SecretsOutcome, Error> {
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = obj.controller_owner_ref(&()).ok_or(Error::MissingNamespace)?;
    let known = obj.status.as_ref().and_then(|s| s.secrets.clone()).unwrap_or_default();
    let name = obj.name_any();

    let dcr = secrets::keep(
        &api,
        &settings.dcr.name,
        &ns,
        &name,
        owner.clone(),
        known.dcr_uid.as_deref(),
        KeyKind::Seal,
        settings.dcr.policy,
        now,
    )
    .await?;
    let signing = secrets::keep(
        &api,
        &settings.signing_key.name,
        &ns,
        &name,
        owner,
        known.signing_key_uid.as_deref(),
        KeyKind::Signing,
        settings.signing_key.policy,
        now,
    )
    .await?;

    let (dcr, signing) = match (dcr, signing) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(why), _) | (_, Err(why)) => {
            return Ok(SecretsOutcome {
                keys: None,
                observed: Observed::failed(status::SECRETS_READY, "SecretNotManaged", why),
                status: known,
                next_due: None,
                signing_kid: None,
            });
        }
    };

    let mut regenerated = false;
    for (secret, kept) in [(&settings.dcr.name, &dcr), (&settings.signing_key.name, &signing)] {
        regenerated |= report_change(ctx, obj, secret, &kept.change).await;
    }

    let keys = Keys::from_keysets(&dcr.keyset, &signing.keyset).map_err(Error::Generate)?;
    let status = SecretsStatus {
        dcr_uid: dcr.uid.clone(),
        signing_key_uid: signing.uid.clone(),
        regenerated_at: if regenerated { Some(now.to_string()) } else { known.regenerated_at },
    };
    Ok(SecretsOutcome {
        signing_kid: Some(keys.current_signing().kid.clone()),
        keys: Some(keys),
        observed: Observed::ok(status::SECRETS_READY, "KeysAvailable", "both Secrets hold usable keys"),
        status,
        next_due: [dcr.next_due, signing.next_due].into_iter().flatten().min(),
    })
}

/// Publishes an Event for a Secret change; whether the Secret now holds fresh keys.
async fn report_change(ctx: &Context, obj: &McpConnector, secret: &str, change: &Change) -> bool {
    let (type_, reason, note, fresh) = match change {
        Change::Kept => return false,
        Change::Created => {
            (EventType::Normal, "SecretCreated", format!("created Secret {secret} with new keys"), true)
        }
        Change::Regenerated => (
            EventType::Warning,
            "ForcedReauth",
            format!(
                "Secret {secret} was deleted and has been regenerated with fresh keys; \
                 every client must log in again"
            ),
            true,
        ),
        Change::Replaced(why) => (
            EventType::Warning,
            "SecretReplaced",
            format!(
                "Secret {secret} held unusable keys ({why}) and was replaced with fresh keys; \
                 every client must log in again"
            ),
            true,
        ),
        Change::Rotated(why) => (
            EventType::Normal,
            "KeyRotated",
            format!("Secret {secret}: {why}; the previous key keeps verifying until it expires"),
            false,
        ),
    };

    tracing::info!(connector = %connector_id(obj), secret, reason, "{note}");
    publish(ctx, obj, type_, reason, note).await;
    fresh
}

/// Reads the upstream's own secret (the OIDC client secret or the proxy's shared secret).
async fn upstream(ctx: &Context, ns: &str, settings: &Settings) -> Result<Upstream, Observed> {
    let missing = |why: String| Observed::failed(status::UPSTREAM_READY, "UpstreamSecretMissing", why);
    let read = |secret_ref: crate::crd::SecretKeyRef| async move {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let secret = api.get_opt(&secret_ref.name).await.map_err(|e| {
            missing(format!("Secret {} could not be read: {e}", secret_ref.name))
        })?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get(&secret_ref.key).cloned())
            .ok_or_else(|| missing(format!("Secret {} has no key {}", secret_ref.name, secret_ref.key)))?;
        let text = String::from_utf8(value.0).map_err(|_| {
            missing(format!("Secret {} key {} is not UTF-8", secret_ref.name, secret_ref.key))
        })?;
        Ok::<_, Observed>(SecretString::new(text.trim()))
    };

    match &settings.upstream {
        UpstreamSettings::Oidc {
            issuer_url,
            client_id,
            secret_ref,
            scopes,
            username_claim,
            groups_claim,
        } => Ok(Upstream::Oidc(OidcUpstream {
            issuer_url: issuer_url.clone(),
            client_id: client_id.clone(),
            client_secret: read(secret_ref.clone()).await?,
            scopes: scopes.clone(),
            username_claim: username_claim.clone(),
            groups_claim: groups_claim.clone(),
        })),
        UpstreamSettings::Proxy { user_header, groups_header, secret_header, secret_ref } => {
            Ok(Upstream::Proxy(ProxyUpstream {
                user_header: user_header.clone(),
                groups_header: groups_header.clone(),
                secret_header: secret_header.clone(),
                shared_secret: read(secret_ref.clone()).await?,
            }))
        }
        UpstreamSettings::DevUsers(users) => Ok(Upstream::DevUsers(users.clone())),
    }
}

async fn reconcile(obj: Arc<McpConnector>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stats.reconciles.fetch_add(1, Ordering::Relaxed);
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let id = connector_id(&obj);
    let now = ctx.clock.now();
    let generation = obj.metadata.generation;
    let old = obj.status.clone().unwrap_or_default();

    // Resolve and validate: pure steps.
    let spec = &obj.spec;
    let base = base_url::resolve(
        spec.base_url.as_deref(),
        spec.tls.as_ref().and_then(|t| t.host.as_deref()),
    );
    let settings = Settings::from_spec(&ns, spec);
    let base_observed = match &base {
        Ok(b) => Observed::ok(status::BASE_URL_RESOLVED, "Resolved", format!("serving {}", b.as_str())),
        Err(e) => Observed::failed(status::BASE_URL_RESOLVED, e.reason, e.message.clone()),
    };

    // Keep the Secrets and read the upstream's secret.
    let mut observed = vec![base_observed];
    let mut outcome = None;
    let mut upstream_result = None;
    match &settings {
        Err(e) => {
            let msg = format!("the spec is invalid: {e}");
            observed.push(Observed::unknown(status::SECRETS_READY, "InvalidSpec", msg.clone()));
            observed.push(Observed::failed(status::UPSTREAM_READY, "InvalidSpec", msg));
        }
        Ok(s) => {
            let o = keep_secrets(&ctx, &obj, s, now).await?;
            observed.push(o.observed.clone());
            outcome = Some(o);

            let up = upstream(&ctx, &ns, s).await;
            observed.push(match &up {
                Ok(Upstream::DevUsers(_)) if base.as_ref().is_ok_and(|b| !b.is_loopback()) => {
                    Observed::failed(
                        status::UPSTREAM_READY,
                        "DevUsersNeedLoopback",
                        "spec.upstream.devUsers is accepted only for a loopback base URL",
                    )
                }
                Ok(_) => Observed::ok(status::UPSTREAM_READY, "Configured", "sign-in is configured"),
                Err(o) => o.clone(),
            });
            upstream_result = up.ok();
        }
    }

    // Publish to the key store: serving only when every step succeeded.
    let ready = status::ready(&observed);
    let keys = outcome.as_mut().and_then(|o| o.keys.take());
    let entry = match (&base, settings.as_ref().ok(), keys, upstream_result, ready.status) {
        (Ok(base), Some(settings), Some(keys), Some(upstream), Some(true)) => {
            Entry::Serving(Arc::new(Connector {
                id: id.clone(),
                base: base.clone(),
                settings: settings.clone(),
                upstream,
                keys: Arc::new(keys),
                loopback_aliases: false,
            }))
        }
        (base, ..) => Entry::Unavailable {
            host: base.as_ref().ok().map(|b: &BaseUrl| b.host_key().to_string()),
            why: ready.message.clone(),
        },
    };
    ctx.store.upsert(&id, entry);

    // Status, written only when it differs.
    let mut all = vec![ready];
    all.extend(observed);
    let resolved = base.as_ref().ok().map(|b| b.as_str().to_string());
    let new_status = McpConnectorStatus {
        observed_generation: generation,
        base_url: resolved.clone(),
        issuer: resolved,
        signing_key_id: outcome.as_ref().and_then(|o| o.signing_kid.clone()),
        secrets: outcome.as_ref().map(|o| o.status.clone()).or(old.secrets.clone()),
        dependents: old.dependents.clone(),
        conditions: status::conditions(&old.conditions, &all, generation, now),
    };
    if new_status != old {
        let api: Api<McpConnector> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": new_status });
        api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::WriteStatus)?;
        ctx.stats.status_writes.fetch_add(1, Ordering::Relaxed);
    }

    if settings.is_err() {
        return Ok(Action::await_change());
    }
    let due = outcome.and_then(|o| o.next_due).map(|t| t.duration_since(now));
    Ok(Action::requeue(requeue_after(due)))
}

/// How long to wait for the next look: until the next key is due, at most [`RESYNC`].
fn requeue_after(due: Option<jiff::SignedDuration>) -> Duration {
    match due {
        None => RESYNC,
        Some(d) if d.is_negative() => Duration::from_secs(1),
        Some(d) => Duration::try_from(d).unwrap_or(RESYNC).clamp(Duration::from_secs(1), RESYNC),
    }
}
