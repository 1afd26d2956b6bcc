//! A shard's workers for one version of a function. The shard's lanes share
//! them: a lane takes a free worker for one batch (waiting while all are
//! busy, which slows the source: backpressure), and gives it back after.
//! Workers start when first needed and are replaced when one dies. Pools
//! live on the shard's thread; the last lane to drop one kills its workers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::worker::{Worker, WorkerError, WorkerSpec};

/// One version's workers on one shard.
pub struct Pool {
    spec: Arc<WorkerSpec>,
    permits: Arc<Semaphore>,
    idle: RefCell<Vec<Worker>>,
}

/// A shard's pools, by step name and version hash.
type Pools = HashMap<(Arc<str>, String), Weak<Pool>>;

thread_local! {
    /// This shard's pools.
    static POOLS: RefCell<Pools> = RefCell::new(HashMap::new());
}

impl Pool {
    /// This shard's pool for `spec`'s version of its function, made on first use.
    pub fn for_shard(spec: &Arc<WorkerSpec>, hash: &str, size: usize) -> Rc<Pool> {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            pools.retain(|_, pool| pool.strong_count() > 0);
            let key = (Arc::clone(&spec.function), hash.to_string());
            if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
                return pool;
            }
            let pool = Rc::new(Pool {
                spec: Arc::clone(spec),
                permits: Arc::new(Semaphore::new(size.max(1))),
                idle: RefCell::new(Vec::new()),
            });
            pools.insert(key, Rc::downgrade(&pool));
            pool
        })
    }

    /// A worker for one batch: an idle one, or a new one when none is idle
    /// and fewer than the pool's size run. Waits while all are busy.
    pub async fn checkout(self: &Rc<Self>) -> Result<Lease, WorkerError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Start("the worker pool closed".into()))?;
        let idle = self.idle.borrow_mut().pop();
        let worker = match idle {
            Some(worker) => worker,
            None => Worker::start(Arc::clone(&self.spec)).await?,
        };
        Ok(Lease {
            worker: Some(worker),
            pool: Rc::clone(self),
            _permit: permit,
        })
    }
}

/// A worker lent for one batch; given back when dropped, unless discarded.
pub struct Lease {
    worker: Option<Worker>,
    pool: Rc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// The worker.
    pub fn worker(&mut self) -> &mut Worker {
        self.worker
            .as_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its worker until dropped"))
    }

    /// Kills the worker (it failed); the next checkout starts a new one.
    pub fn discard(mut self) {
        self.worker = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.pool.idle.borrow_mut().push(worker);
        }
    }
}
