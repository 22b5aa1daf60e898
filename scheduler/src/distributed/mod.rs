//! Data-parallel training: the ranks of an MPI job (`mpirun -np N tessera train …`, or `srun`
//! under Slurm), each a replica of the model that takes its shard of every global batch. The
//! gradients are summed across ranks in buckets (~25 MB) with MPI all-reduce, each bucket
//! started as soon as its gradients exist during the backward pass, so communication runs
//! while the rest of the backward pass computes. Without an MPI launcher (or built without
//! the `mpi` feature) the world is one rank and nothing is communicated.
#[cfg(feature = "mpi")]
mod mpi_comm;
mod reducer;

pub use reducer::GradReducer;

use crate::error::TrainError;
use std::sync::mpsc::{channel, Receiver, Sender};

/// The job's ranks as this process sees them.
pub struct World {
    pub rank: usize,
    pub size: usize,
    comm: Option<Comm>,
    /// Nanoseconds the communication thread spent in collectives.
    busy: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// This rank's rows of the current global batch over the global batch's (f32 bits): its
    /// gradient's weight in the sums over ranks.
    share: std::sync::atomic::AtomicU32,
}

/// A sum over the ranks in flight; [`Pending::wait`] gives the summed values.
pub struct Pending(Receiver<Result<Vec<f32>, String>>);

impl Pending {
    pub fn wait(self) -> Result<Vec<f32>, TrainError> {
        match self.0.recv() {
            Ok(Ok(sum)) => Ok(sum),
            Ok(Err(e)) => Err(TrainError::Distributed(e)),
            Err(_) => Err(TrainError::Distributed("the communication thread ended".into())),
        }
    }
}

/// Work for the thread that alone talks to MPI.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
enum Job {
    Sum(Vec<f32>, Sender<Result<Vec<f32>, String>>),
}

/// The communication thread: jobs run in the order sent, the same order on every rank.
struct Comm {
    jobs: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Whether this process was started by an MPI launcher (mpirun, or srun with PMI/PMIx).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}

impl Default for World {
    fn default() -> Self {
        Self::single()
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World {{ rank: {}, size: {} }}", self.rank, self.size)
    }
}

impl World {
    /// One process, no communication.
    pub fn single() -> Self {
        Self { rank: 0, size: 1, comm: None, busy: Default::default(), share: 1f32.to_bits().into() }
    }

    /// The MPI job this process belongs to, or [`World::single`] when no launcher started it.
    pub fn from_env() -> Result<Self, TrainError> {
        if !launched_by_mpi() {
            return Ok(Self::single());
        }
        Self::mpi()
    }

    #[cfg(feature = "mpi")]
    fn mpi() -> Result<Self, TrainError> {
        let (jobs, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = busy.clone();
        let thread = std::thread::Builder::new()
            .name("tessera-mpi".into())
            .spawn(move || mpi_comm::serve(rx, ready_tx, &counter))
            .map_err(|e| TrainError::Distributed(format!("starting the MPI thread: {e}")))?;
        let (rank, size) = ready_rx.recv().map_err(|_| TrainError::Distributed("MPI did not initialise".into()))?.map_err(TrainError::Distributed)?;
        Ok(Self { rank, size, comm: Some(Comm { jobs: Some(jobs), thread: Some(thread) }), busy, share: 1f32.to_bits().into() })
    }

    #[cfg(not(feature = "mpi"))]
    fn mpi() -> Result<Self, TrainError> {
        Err(TrainError::Distributed("started by an MPI launcher, but this tessera was built without the `mpi` feature".into()))
    }

    /// Seconds spent in collectives so far (by the communication thread).
    pub fn comm_seconds(&self) -> f64 {
        self.busy.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
    }

    /// Sets this rank's share of the global batch being trained.
    pub fn set_share(&self, share: f32) {
        self.share.store(share.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// This rank's share of the global batch being trained.
    pub fn share(&self) -> f32 {
        f32::from_bits(self.share.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Starts the element-wise sum of `values` over the ranks (every rank must start the same
    /// sums in the same order). One rank: the values themselves.
    pub fn start_sum(&self, values: Vec<f32>) -> Pending {
        let (tx, rx) = channel();
        match self.comm.as_ref().and_then(|c| c.jobs.as_ref()) {
            Some(jobs) => {
                if let Err(std::sync::mpsc::SendError(Job::Sum(_, tx))) = jobs.send(Job::Sum(values, tx)) {
                    let _ = tx.send(Err("the communication thread ended".into()));
                }
            }
            None => {
                let _ = tx.send(Ok(values));
            }
        }
        Pending(rx)
    }

    /// The element-wise sum of `values` over the ranks.
    pub fn sum(&self, values: Vec<f32>) -> Result<Vec<f32>, TrainError> {
        self.start_sum(values).wait()
    }
}

/// Synchronised batch norm sums its statistics and gradient terms over the ranks.
impl tessera_engine::nn::ReplicaSum for World {
    fn sum(&self, values: Vec<f32>) -> Result<Vec<f32>, String> {
        World::sum(self, values).map_err(|e| e.to_string())
    }

    fn share(&self) -> f32 {
        World::share(self)
    }

    fn position(&self) -> (usize, usize) {
        (self.rank, self.size)
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        // Closing the queue lets the thread finalise MPI.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
