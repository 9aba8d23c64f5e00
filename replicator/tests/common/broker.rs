//! A broker over a test cell's storage with its background tasks running (delay releases,
//! transaction checks, consumer state).

use std::sync::Arc;
use std::time::Duration;

use meridian_cell::messaging::{Broker, BrokerConfig, SystemClock};
use tokio::sync::watch;

use super::Cell;

/// Bound on a broker's shutdown; reaching it fails the test.
const STOP_LIMIT: Duration = Duration::from_secs(60);

pub struct RunningBroker {
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Opens the broker with `config`, runs `setup` on it (topics, groups), starts its tasks.
    pub fn start(cell: &Cell, config: BrokerConfig, setup: impl FnOnce(&Broker)) -> Self {
        let broker = Broker::open(Arc::clone(cell.storage()), config, Arc::new(SystemClock))
            .expect("open the broker");
        setup(&broker);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&broker).run(shutdown_rx));
        RunningBroker {
            broker,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.send(true).expect("signal shutdown");
        tokio::time::timeout(STOP_LIMIT, self.task)
            .await
            .expect("the broker's tasks did not stop")
            .expect("broker task");
    }
}
