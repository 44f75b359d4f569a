//! The mutual-TLS front door: accept, handshake (bounded), read the caller's identity from
//! the verified certificate, serve HTTP/1.1 or HTTP/2 on the connection, drain on shutdown.
//!
//! Lifecycle (mini-redis style): `Gateway::build` opens the store and compiles the policy;
//! `Gateway::run(listener, ops_listener, shutdown)` serves until `shutdown` resolves, then
//! stops accepting, lets in-flight requests finish within `limits.shutdown_drain_ms`, stops
//! the approval sweeper, flushes the ledger writer and the audit sinks, and returns.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::Router;
use countersign_ledger::{Store, StoreLimits, StoreOptions};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::ServerConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::{
    app::{self, AppState, Caller},
    auditor,
    config::Config,
    http::admission::{AdmissionLoadError, AdmissionPolicies},
    kafka::KafkaPublisher,
    policy::{Bundle, PolicyEngine, TRANSFER_DECISION},
    relay, reload, stream, sweeper,
    tls::{self, Identity},
};

/// HTTP/2 streams per connection: bounds the work one client can queue.
const HTTP2_STREAMS_MAX: u32 = 256;
const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
const HEADER_READ_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("store: {0}")]
    Store(#[from] countersign_ledger::LedgerError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit: {0}")]
    Audit(#[from] countersign_audit::AuditError),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("audit.encryption: {0}")]
    Keyring(#[from] countersign_audit::KeyringError),
    #[error("audit.checkpoints.signing_key_file: {0}")]
    CheckpointKey(#[from] countersign_audit::checkpoint::CheckpointError),
    #[error("admission.policies: {0}")]
    Admission(#[from] crate::http::admission::AdmissionLoadError),
}

/// A gateway ready to serve.
pub struct Gateway {
    pub state: Arc<AppState>,
    tls: Arc<ServerConfig>,
}

impl Gateway {
    pub async fn build(config: Config) -> Result<Gateway, StartError> {
        let tls = tls::server_config(&config.tls)?;
        let bundle = Bundle::load_configured(&config.policy)?;
        let policy = PolicyEngine::compile(
            &bundle,
            TRANSFER_DECISION,
            Duration::from_millis(config.policy.decision_timeout_ms),
        )?;
        // Proxy routes' rules are compiled now: a bundle without them refuses to start.
        crate::proxy::prepare_policy(&policy, &config.routes)?;
        // The approval rule too, so no approve/reject pays for the compile (a bundle without
        // it still starts: approvals are then denied, held transfers expire). It compiles on a
        // blocking thread while the keys load and the store opens (start-up time).
        let policy = Arc::new(policy);
        let approval_rule = {
            let policy = policy.clone();
            tokio::task::spawn_blocking(move || crate::http::approvals::prepare_policy(&policy))
        };
        // The admission webhook's templates compile on another blocking thread meanwhile; a
        // policy file that does not load stops the start before the store is opened.
        let admission = config.admission.clone().map(|admission_config| {
            tokio::task::spawn_blocking(move || AdmissionPolicies::load(&admission_config))
        });
        // The keyring before the store: a bad key file stops the start before anything is
        // written, and no decision is ever recorded without its sealed input.
        let keyring = match &config.audit.encryption {
            Some(encryption) => {
                let keyring = countersign_audit::Keyring::load(&encryption.key_file)?;
                tracing::info!(
                    active_kek = keyring.active_key_id(),
                    keys = keyring.key_ids().count(),
                    "audit encryption keyring loaded"
                );
                Some(keyring)
            }
            None => None,
        };
        // The checkpoint key too: a configured key that does not load stops the start.
        let checkpoint_signer = match &config.audit.checkpoints.signing_key_file {
            Some(path) => {
                let signer = countersign_audit::checkpoint::CheckpointSigner::from_pem_file(path)?;
                tracing::info!(
                    key_id = signer.key_id(),
                    "audit checkpoint signing key loaded"
                );
                Some(Arc::new(signer))
            }
            None => None,
        };
        let admission = match admission {
            Some(task) => {
                Some(Arc::new(task.await.map_err(|error| {
                    AdmissionLoadError::Task(error.to_string())
                })??))
            }
            None => None,
        };
        let store = Store::open_with(
            &config.store.url,
            StoreLimits {
                queue_commands_max: config.limits.ledger_queue_commands_max,
                batch_commands_max: config.limits.ledger_batch_commands_max,
                outbox_rows_max: config.store.outbox.rows_max,
                outbox_full_policy: config.store.outbox.when_full,
                ..StoreLimits::default()
            },
            StoreOptions {
                migrate_on_start: config.store.migrate_on_start,
                // Without a relay the outbox would only grow.
                outbox_enabled: config.kafka.is_some(),
                sealer_enabled: true,
            },
        )
        .await?;
        if let Err(error) = approval_rule.await {
            tracing::error!(error = %error, "compiling the approval rule panicked");
        }
        let policy = Arc::try_unwrap(policy).unwrap_or_else(|_| {
            panic!("the approval rule's compile task holds no policy after it ended")
        });
        tracing::info!(
            bundle_revision = policy.revision(),
            evaluator = ?policy.evaluator(),
            store = %config.store.url,
            "gateway built"
        );
        let state = AppState::new(config, Arc::new(store), policy, keyring);
        if let Some(signer) = checkpoint_signer {
            let _ = state.checkpoint_signer.set(signer);
        }
        if let Some(admission) = admission {
            let _ = state.admission.set(admission);
        }
        Ok(Gateway { state, tls })
    }

    /// Serves until `shutdown` resolves, then drains and flushes.
    pub async fn run(
        self,
        listener: TcpListener,
        ops_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let state = self.state;
        let limits = state.config.limits.clone();
        let (stop_sender, stop) = watch::channel(false);

        // The relay has its own stop signal: it must outlive the connections and the ledger
        // writer so that it delivers the last records they commit.
        let (relay_stop_sender, relay_stop) = watch::channel(false);
        let relay = match &state.config.audit.decision_log {
            Some(path) => Some(tokio::spawn(relay::run(
                state.clone(),
                relay::open_decision_log(path).await?,
                relay_stop,
            ))),
            None => None,
        };
        let (stream_stop_sender, stream_stop) = watch::channel(false);
        let stream = match &state.config.kafka {
            Some(kafka) => {
                let publisher = KafkaPublisher::new(kafka)?;
                let batch_records_max = i64::try_from(kafka.batch_records_max).unwrap_or(i64::MAX);
                Some(tokio::spawn(stream::run(
                    state.clone(),
                    publisher,
                    batch_records_max,
                    stream_stop,
                )))
            }
            None => None,
        };
        // The auditors' workspace indexer stops with the relays (after the ledger writer), so
        // it indexes and signs the last records committed.
        let (auditor_stop_sender, auditor_stop) = watch::channel(false);
        let auditor = tokio::spawn(auditor::run(state.clone(), auditor_stop));
        let ops = ops_listener.map(|listener| {
            let router = app::ops_router(state.clone());
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                });
                if let Err(error) = serve.await {
                    tracing::error!(error = %error, "operations listener failed");
                }
            })
        });

        // The approval sweeper stops with the connections and is awaited before the ledger
        // writer stops: its last sweep is a ledger command like any request's.
        let approval_sweeper = tokio::spawn(sweeper::run(state.clone(), stop.clone()));

        // Policy reload triggers: file changes (when configured) and SIGHUP. They stop with
        // the connections; a reload in progress finishes first (it holds the reload lock).
        let mut reloaders = Vec::new();
        if state.config.policy.watch
            && let Some(bundle_watch) = reload::BundleWatch::start(&state)
        {
            reloaders.push(tokio::spawn(bundle_watch.run(state.clone(), stop.clone())));
        }
        #[cfg(unix)]
        reloaders.push(tokio::spawn(reload::reload_on_hangup(
            state.clone(),
            stop.clone(),
        )));

        let router = app::router(state.clone());
        let acceptor = TlsAcceptor::from(self.tls);
        let connection_slots = Arc::new(Semaphore::new(limits.connections_max));
        let handshake_timeout = Duration::from_millis(state.config.tls.handshake_timeout_ms);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote_address) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote_address, connections_max = limits.connections_max, "connection limit reached; refusing");
                continue;
            };
            let connection = ConnectionTask {
                state: state.clone(),
                acceptor: acceptor.clone(),
                router: router.clone(),
                handshake_timeout,
                stop: stop.clone(),
            };
            tokio::spawn(async move {
                connection.serve(stream, remote_address).await;
                drop(slot);
            });
        }

        // Drain: stop taking transfers, ask every connection to finish, wait with a bound.
        tracing::info!("shutting down: draining connections");
        state.begin_shutdown();
        let _ = stop_sender.send(true);
        drop(listener);
        let drain = Duration::from_millis(limits.shutdown_drain_ms);
        let all_slots = u32::try_from(limits.connections_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, connection_slots.acquire_many(all_slots))
            .await
            .is_err()
        {
            tracing::warn!(
                drain_ms = limits.shutdown_drain_ms,
                "drain bound reached; closing remaining connections"
            );
        }
        for reloader in reloaders {
            let _ = reloader.await;
        }
        if let Err(error) = approval_sweeper.await {
            tracing::error!(error = %error, "approval sweeper task failed");
        }
        if let Err(error) = state.store.stop_writer().await {
            tracing::error!(error = %error, "ledger writer did not shut down cleanly");
        }
        // Everything is committed now; let the relays deliver it, then close the store.
        let _ = relay_stop_sender.send(true);
        let _ = stream_stop_sender.send(true);
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        if let Some(stream) = stream {
            let _ = stream.await;
        }
        let _ = auditor_stop_sender.send(true);
        if let Err(error) = auditor.await {
            tracing::error!(error = %error, "audit indexer task failed");
        }
        state.store.close_reads().await;
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

struct ConnectionTask {
    state: Arc<AppState>,
    acceptor: TlsAcceptor,
    router: Router,
    handshake_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn serve(self, stream: TcpStream, remote_address: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let started = Instant::now();
        let tls_stream = match tokio::time::timeout(
            self.handshake_timeout,
            self.acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(error)) => {
                self.handshake_failed(remote_address, "refused", &error.to_string());
                return;
            }
            Err(_) => {
                self.handshake_failed(remote_address, "timeout", "handshake timed out");
                return;
            }
        };
        let (_, session) = tls_stream.get_ref();
        let identity = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| "no client certificate".to_owned())
            .and_then(|leaf| {
                Identity::from_verified_certificate(leaf, &self.state.config.role_mapping)
                    .map_err(|error| error.to_string())
            });
        let identity = match identity {
            Ok(identity) => Arc::new(identity),
            Err(message) => {
                self.handshake_failed(remote_address, "identity", &message);
                return;
            }
        };
        tracing::debug!(
            %remote_address,
            common_name = ?identity.common_name,
            roles = ?identity.roles,
            handshake_us = started.elapsed().as_micros() as u64,
            "client connected"
        );
        let caller = Caller {
            identity,
            remote_address,
        };
        let service = self.router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(caller.clone());
                request
            },
        );
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
            .max_headers(self.state.config.limits.headers_max);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(HTTP2_STREAMS_MAX)
            .max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX);
        let connection =
            builder.serve_connection(TokioIo::new(tls_stream), TowerToHyperService::new(service));
        tokio::pin!(connection);
        let mut stop = self.stop.clone();
        let stopping = async move {
            // The guard `wait_for` returns is not Send; drop it before the select resumes.
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%remote_address, error = %error, "connection ended with an error");
                }
            }
            () = stopping => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }

    fn handshake_failed(&self, remote_address: SocketAddr, reason: &'static str, message: &str) {
        tracing::info!(%remote_address, reason, error = %message, "TLS handshake refused");
        self.state
            .metrics
            .tls_handshake_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }
}
