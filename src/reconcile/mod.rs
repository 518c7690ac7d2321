//! The controller: watches `McpConnector`s and the Secrets they own, and for each one runs
//! a pipeline: resolve the base URL, validate the spec, keep the Secrets, read the
//! upstream's secret, order the dependents' restarts, write status. The key store the
//! OAuth server reads is fed by [`crate::serving`] on every replica, not from here.
//!
//! A pass with nothing to do writes nothing: status is written only when it differs, keys
//! only when a rotation is due, so a quiet cluster causes no API traffic.

pub mod restart;
pub mod secrets;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as Ordering_};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::base_url::{self, BaseUrl};
use crate::clock::Clock;
use crate::crd::{
    DependentStatus, MANAGED_BY, MANAGED_BY_LABEL, McpConnector, McpConnectorStatus, SecretsStatus,
};
use crate::keys::{KeyError, KeyKind, Keys};
use crate::settings::Settings;
use crate::upstream::Upstream;

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
    /// A Deployment or its Pods could not be read.
    #[error("reading {what}")]
    ReadWorkload {
        /// What was read.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// A dependent could not be restarted.
    #[error("restarting Deployment {name}")]
    RestartDependent {
        /// Deployment name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
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
            Error::ReadWorkload { .. } => "read_workload",
            Error::RestartDependent { .. } => "restart_dependent",
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
    /// Dependents restarted because the MCP server became Ready.
    pub restarts_mcp_server: AtomicU64,
    /// Dependents restarted because the Secrets were regenerated.
    pub restarts_secrets: AtomicU64,
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Fetches each connector's discovery document at its public URL, when set.
    pub self_check: Option<reqwest::Client>,
    /// The time.
    pub clock: Clock,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl Context {
    /// A context reporting Events as `mcp-connector` (instance `instance`).
    pub fn new(client: Client, clock: Clock, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: MANAGED_BY.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            self_check: None,
            clock,
            stats: Arc::default(),
        }
    }

    /// Turns on the self-check: each pass fetches the connector's protected-resource
    /// document at its public base URL and reports what it found as `Reachable`.
    pub fn with_self_check(mut self) -> Context {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .ok();
        self.self_check = http;
        self
    }
}

/// Runs the controller until `shutdown` completes. `namespace` limits it to one.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (connectors, secrets, deployments): (Api<McpConnector>, Api<Secret>, Api<Deployment>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };

    let (reader, writer) = reflector::store();
    // Only spec changes (a new generation) start a pass: a status write must not cause
    // another pass of the same generation.
    let triggers = watcher(connectors, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let named = reader.clone();
    Controller::for_stream(triggers, reader)
        .owns(secrets, managed)
        .watches(
            deployments,
            watcher::Config::default(),
            move |d: Deployment| connectors_naming(&named, &d),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile request failed");
            }
        })
        .await;
}

/// The connectors whose MCP server or dependents this Deployment is: a change of its
/// rollout may start or unblock a restart.
fn connectors_naming(
    connectors: &reflector::Store<McpConnector>,
    d: &Deployment,
) -> Vec<reflector::ObjectRef<McpConnector>> {
    let (ns, name) = (d.namespace(), d.name_any());
    connectors
        .state()
        .iter()
        .filter(|c| c.namespace() == ns)
        .filter(|c| {
            let Ok(settings) = Settings::from_spec(&ns.clone().unwrap_or_default(), &c.spec) else {
                return false;
            };
            settings.mcp_server.deployment == name || settings.dependents.contains(&name)
        })
        .map(|c| reflector::ObjectRef::from_obj(c.as_ref()))
        .collect()
}

pub use crate::serving::connector_id;

/// The reference page's Verify step, done by the operator: fetch the connector's
/// protected-resource document at its public URL and say what came back.
async fn self_check(http: &reqwest::Client, base: &BaseUrl) -> Observed {
    let url = base.join("/.well-known/oauth-protected-resource/mcp");
    let failed = |reason: &str, msg: String| Observed::failed(status::REACHABLE, reason, msg);

    let response = match http.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() && format!("{e:?}").to_lowercase().contains("certificate") => {
            return failed(
                "TLSFailure",
                format!("{url}: the TLS certificate was refused"),
            );
        }
        Err(e) if e.is_timeout() => return failed("Unreachable", format!("{url}: timed out")),
        Err(e) => return failed("Unreachable", format!("{url}: {e}")),
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_success() || !is_json {
        return failed(
            "NotRouted",
            format!("{url} answered {status} with no JSON document: route the OAuth paths here"),
        );
    }

    let doc: serde_json::Value = response.json().await.unwrap_or_default();
    let issuer = doc["authorization_servers"][0].as_str().unwrap_or_default();
    if doc["resource"] != base.resource() || issuer != base.as_str() {
        return failed(
            "WrongIssuer",
            format!(
                "{url} names resource {} and issuer {issuer}: another server answers there",
                doc["resource"]
            ),
        );
    }
    Observed::ok(
        status::REACHABLE,
        "Verified",
        format!("{url} serves this connector"),
    )
}

fn error_policy(obj: Arc<McpConnector>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.stats.errors.fetch_add(1, Ordering_::Relaxed);
    tracing::warn!(
        connector = %connector_id(&obj),
        category = error.category(),
        error = %error,
        source = ?std::error::Error::source(error).map(ToString::to_string),
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

/// `related` names the object the Event is also about; kube's Recorder folds Events that
/// differ only in their note into one series, so without it a change to the second Secret
/// would show as a repeat of the first one's note.
async fn publish(
    ctx: &Context,
    obj: &McpConnector,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: related,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

/// The outcome of keeping both Secrets.
struct SecretsOutcome {
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
    let owner = obj
        .controller_owner_ref(&())
        .ok_or(Error::MissingNamespace)?;
    let known = obj
        .status
        .as_ref()
        .and_then(|s| s.secrets.clone())
        .unwrap_or_default();
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
        (Err(refused), _) | (_, Err(refused)) => {
            let secrets::Refused { reason, message } = refused;
            return Ok(SecretsOutcome {
                observed: Observed::failed(status::SECRETS_READY, reason, message),
                status: known,
                next_due: None,
                signing_kid: None,
            });
        }
    };

    let (mut dcr, mut signing) = (dcr, signing);
    confirm_unrecorded(ctx, &ns, &name, &mut dcr, &mut signing).await;

    let mut regenerated = false;
    for (secret, kept) in [
        (&settings.dcr.name, &dcr),
        (&settings.signing_key.name, &signing),
    ] {
        regenerated |= report_change(ctx, obj, secret, &kept.change).await;
    }

    let keys = Keys::from_keysets(&dcr.keyset, &signing.keyset).map_err(Error::Generate)?;
    let status = SecretsStatus {
        dcr_uid: dcr.uid.clone(),
        signing_key_uid: signing.uid.clone(),
        regenerated_at: if regenerated {
            Some(now.to_string())
        } else {
            known.regenerated_at
        },
    };
    Ok(SecretsOutcome {
        signing_kid: Some(keys.current_signing().kid.clone()),
        observed: Observed::ok(
            status::SECRETS_READY,
            "KeysAvailable",
            "both Secrets hold usable keys",
        ),
        status,
        next_due: [dcr.next_due, signing.next_due].into_iter().flatten().min(),
    })
}

/// Reads the status afresh when a Secret is not the one the cached status records: only
/// a regeneration that no pass recorded is reported, never one the cache had not seen yet.
async fn confirm_unrecorded(
    ctx: &Context,
    ns: &str,
    name: &str,
    dcr: &mut secrets::Kept,
    signing: &mut secrets::Kept,
) {
    if dcr.change != Change::Unrecorded && signing.change != Change::Unrecorded {
        return;
    }
    let api: Api<McpConnector> = Api::namespaced(ctx.client.clone(), ns);
    let Ok(fresh) = api.get_status(name).await else {
        return;
    };
    let recorded = fresh.status.and_then(|s| s.secrets).unwrap_or_default();
    for (kept, uid) in [(dcr, recorded.dcr_uid), (signing, recorded.signing_key_uid)] {
        if kept.change == Change::Unrecorded && kept.uid == uid {
            kept.change = Change::Kept;
        }
    }
}

/// Publishes an Event for a Secret change; whether the Secret now holds fresh keys.
async fn report_change(ctx: &Context, obj: &McpConnector, secret: &str, change: &Change) -> bool {
    let (type_, reason, note, fresh) = match change {
        Change::Kept => return false,
        Change::Created => (
            EventType::Normal,
            "SecretCreated",
            format!("created Secret {secret} with new keys"),
            true,
        ),
        Change::Regenerated | Change::Unrecorded => (
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
    let related = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(secret.into()),
        namespace: obj.namespace(),
        ..ObjectReference::default()
    };
    publish(ctx, obj, type_, reason, note, Some(related)).await;
    fresh
}

/// Reads the upstream's own secret, as the serving side does, for the condition.
async fn upstream(ctx: &Context, ns: &str, settings: &Settings) -> Result<Upstream, Observed> {
    crate::serving::read_upstream(&ctx.client, ns, settings)
        .await
        .map_err(|why| Observed::failed(status::UPSTREAM_READY, "UpstreamSecretMissing", why))
}

/// What the restart ordering observed and did on this pass.
struct Ordering {
    mcp_server: Observed,
    dependents: Observed,
    records: Vec<DependentStatus>,
}

async fn order_dependents(
    ctx: &Context,
    obj: &McpConnector,
    settings: &Settings,
    regenerated_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<Ordering, Error> {
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let old = obj
        .status
        .as_ref()
        .map(|s| s.dependents.clone())
        .unwrap_or_default();
    let server = &settings.mcp_server;

    let Some(mcp) =
        restart::view_mcp_server(&deployments, &pods, &server.deployment, &server.selector).await?
    else {
        let msg = format!("Deployment {} not found in {ns}", server.deployment);
        return Ok(Ordering {
            mcp_server: Observed::failed(status::MCP_SERVER_READY, "NotFound", msg.clone()),
            dependents: Observed::failed(
                status::DEPENDENTS_ORDERED,
                "McpServerNotReady",
                format!("restarting nothing: {msg}"),
            ),
            records: old,
        });
    };
    let mcp_server = match &mcp.ready {
        Ok(()) => Observed::ok(
            status::MCP_SERVER_READY,
            "RolledOut",
            format!("{} revision {} is Ready", server.deployment, mcp.revision),
        ),
        Err(why) => Observed::failed(status::MCP_SERVER_READY, "RollingOut", why.clone()),
    };

    let mut records = Vec::new();
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    for name in &settings.dependents {
        let previous = old.iter().find(|d| &d.deployment == name).cloned();
        let cause = previous.as_ref().and_then(|p| p.last_cause.clone());
        let mut record = previous.unwrap_or(DependentStatus {
            deployment: name.clone(),
            ..Default::default()
        });

        match restart::view_dependent(&deployments, &pods, name, cause).await? {
            None => problems.push(("DependentNotFound", format!("Deployment {name} not found"))),
            Some(view) => match restart::decide(&mcp, &view, regenerated_at) {
                restart::Decision::InOrder => {}
                restart::Decision::Wait { reason, message } => problems.push((reason, message)),
                restart::Decision::Restart { cause, why } => {
                    restart::restart(&deployments, name, &cause, now).await?;
                    let counter = if cause.starts_with("secrets:") {
                        &ctx.stats.restarts_secrets
                    } else {
                        &ctx.stats.restarts_mcp_server
                    };
                    counter.fetch_add(1, Ordering_::Relaxed);

                    let note = format!("restarted {name} ({cause}): {why}");
                    tracing::info!(
                        connector = %connector_id(obj),
                        dependent = %name,
                        %cause,
                        "{note}",
                    );
                    let related = ObjectReference {
                        api_version: Some("apps/v1".into()),
                        kind: Some("Deployment".into()),
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    };
                    let reason = "RestartedDependent";
                    publish(
                        ctx,
                        obj,
                        EventType::Normal,
                        reason,
                        note.clone(),
                        Some(related),
                    )
                    .await;
                    record.last_cause = Some(cause);
                    record.restarted_at = Some(now.to_string());
                    problems.push(("RestartInProgress", note));
                }
            },
        }
        records.push(record);
    }

    let dependents = match problems.first() {
        None => Observed::ok(
            status::DEPENDENTS_ORDERED,
            "InOrder",
            format!(
                "every dependent started after {} was Ready",
                server.deployment
            ),
        ),
        Some((reason, _)) => Observed::failed(
            status::DEPENDENTS_ORDERED,
            reason,
            problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    Ok(Ordering {
        mcp_server,
        dependents,
        records,
    })
}

async fn reconcile(obj: Arc<McpConnector>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stats.reconciles.fetch_add(1, Ordering_::Relaxed);
    let ns = obj.namespace().ok_or(Error::MissingNamespace)?;
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
        Ok(b) => Observed::ok(
            status::BASE_URL_RESOLVED,
            "Resolved",
            format!("serving {}", b.as_str()),
        ),
        Err(e) => Observed::failed(status::BASE_URL_RESOLVED, e.reason, e.message.clone()),
    };

    // Keep the Secrets and read the upstream's secret.
    let mut observed = vec![base_observed];
    let mut outcome = None;
    match &settings {
        Err(e) => {
            let msg = format!("the spec is invalid: {e}");
            observed.push(Observed::unknown(
                status::SECRETS_READY,
                "InvalidSpec",
                msg.clone(),
            ));
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
                Ok(_) => Observed::ok(
                    status::UPSTREAM_READY,
                    "Configured",
                    "sign-in is configured",
                ),
                Err(o) => o.clone(),
            });
        }
    }

    let ready = status::ready(&observed);
    if let (Ok(base), Some(http)) = (&base, &ctx.self_check) {
        observed.push(self_check(http, base).await);
    }

    // Restart ordering: informational for the OAuth server, so not part of Ready.
    let secrets_status = outcome
        .as_ref()
        .map(|o| o.status.clone())
        .or(old.secrets.clone());
    let regenerated_at = secrets_status
        .as_ref()
        .and_then(|s| s.regenerated_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let ordering = match &settings {
        Ok(s) => Some(order_dependents(&ctx, &obj, s, regenerated_at, now).await?),
        Err(_) => None,
    };

    // Status, written only when it differs.
    let mut all = vec![ready];
    all.extend(observed);
    if let Some(o) = &ordering {
        all.push(o.mcp_server.clone());
        all.push(o.dependents.clone());
    }
    let resolved = base.as_ref().ok().map(|b| b.as_str().to_string());
    let new_status = McpConnectorStatus {
        observed_generation: generation,
        base_url: resolved.clone(),
        issuer: resolved,
        signing_key_id: outcome.as_ref().and_then(|o| o.signing_kid.clone()),
        secrets: secrets_status,
        dependents: ordering
            .map(|o| o.records)
            .unwrap_or_else(|| old.dependents.clone()),
        conditions: status::conditions(&old.conditions, &all, generation, now),
    };
    if new_status != old {
        let api: Api<McpConnector> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = status_patch(&old, &new_status);
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::WriteStatus)?;
        ctx.stats.status_writes.fetch_add(1, Ordering_::Relaxed);
    }

    if settings.is_err() {
        return Ok(Action::await_change());
    }
    let due = outcome
        .and_then(|o| o.next_due)
        .map(|t| t.duration_since(now));
    Ok(Action::requeue(requeue_after(due)))
}

/// The merge patch from `old` to `new`. A field `new` leaves out is sent as null, since a
/// merge patch keeps what it does not mention: a base URL that is gone must not stay
/// advertised.
fn status_patch(old: &McpConnectorStatus, new: &McpConnectorStatus) -> serde_json::Value {
    let mut status = serde_json::to_value(new).unwrap_or_default();
    if let (Some(fields), Ok(serde_json::Value::Object(before))) =
        (status.as_object_mut(), serde_json::to_value(old))
    {
        for field in before.keys() {
            fields
                .entry(field.clone())
                .or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": status })
}

/// How long to wait for the next look: until the next key is due, at most [`RESYNC`].
fn requeue_after(due: Option<jiff::SignedDuration>) -> Duration {
    match due {
        None => RESYNC,
        Some(d) if d.is_negative() => Duration::from_secs(1),
        Some(d) => Duration::try_from(d)
            .unwrap_or(RESYNC)
            .clamp(Duration::from_secs(1), RESYNC),
    }
}
