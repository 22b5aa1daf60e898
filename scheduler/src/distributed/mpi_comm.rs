//! The MPI side: one thread initialises MPI, runs every collective in the order the jobs
//! arrive, and finalises MPI when the queue closes.
use super::Job;
use mpi::collective::SystemOperation;
use mpi::traits::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};

pub(super) fn serve(jobs: Receiver<Job>, ready: Sender<Result<(usize, usize), String>>, busy: &AtomicU64) {
    // This thread is MPI's main thread: only it calls MPI.
    let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        let _ = ready.send(Err("MPI was initialised already".into()));
        return;
    };
    let world = universe.world();
    let _ = ready.send(Ok((world.rank() as usize, world.size() as usize)));
    for job in jobs {
        match job {
            Job::Sum(values, reply) => {
                let mut sum = vec![0f32; values.len()];
                let start = std::time::Instant::now();
                world.all_reduce_into(&values[..], &mut sum[..], SystemOperation::sum());
                busy.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let _ = reply.send(Ok(sum));
            }
        }
    }
    drop(universe); // MPI_Finalize
}
