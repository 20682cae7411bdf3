//! One shutdown signal shared by servers and background workers.

use tokio_util::sync::CancellationToken;

/// Cancelled on SIGTERM or SIGINT (or by hand); clone it into every task.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown cancelled by SIGTERM or SIGINT.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            trigger.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// An owned future, for APIs that take `impl Future + 'static`.
    pub fn wait_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Runs `tick` now and then every `period` (after each run ends) until shutdown: the
    /// shape of every durable timer sweep.
    pub async fn every<F, Fut>(&self, period: std::time::Duration, mut tick: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            tick().await;
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.wait() => return,
            }
        }
    }

    /// A child that is cancelled with this one but can also be cancelled alone (e.g. to stop
    /// one consumer in a test).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the process");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
