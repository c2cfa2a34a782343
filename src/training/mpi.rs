//! [`Ranks`] over MPI (`--features mpi`: rsmpi on the system's Open MPI), for processes started
//! by `mpirun` or Slurm's `srun`; [`end`] ends it, and a failed rank the whole job.

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::Threading;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use crate::Error;
use crate::training::ranks::Ranks;

/// The world communicator of a process started with [`Mpi::start`]; MPI ends with [`end`].
pub struct Mpi {
    world: SimpleCommunicator,
}

/// MPI's environment, held from [`Mpi::start`] to [`end`]: dropping it finalizes MPI, which waits
/// for every rank, so that a rank whose run failed must abort instead (see [`end`]).
static UNIVERSE: Mutex<Option<Held>> = Mutex::new(None);

struct Held(Universe);

// MPI is started for serialized calls from any thread (see `Mpi::start`).
unsafe impl Send for Held {}

impl Mpi {
    /// Starts MPI for calls from any thread, one at a time (the trainer may run on a pool's thread).
    pub fn start() -> Result<Self, Error> {
        let (universe, threading) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| Error::new("MPI was already started in this process"))?;
        if !matches!(threading, Threading::Serialized | Threading::Multiple) {
            return Err(Error::new(format!("this MPI library offers only {threading:?} threading; imm needs Serialized")));
        }
        let world = universe.world();
        *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Held(universe));
        Ok(Self { world })
    }
}

/// Ends MPI where it was started: finalizes it after a success; after an error, aborts the whole
/// job at once, since the other ranks may be waiting for this one in a collective call that would
/// never return (MPI_Abort: mpirun ends every rank with a non-zero exit).
pub fn end(success: bool) {
    let Some(Held(universe)) = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    if success {
        drop(universe);
    } else {
        universe.world().abort(1);
    }
}

// MPI handles may move between threads when calls are serialized, which `Ranks` requires.
unsafe impl Send for Mpi {}

impl Ranks for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn count(&self) -> usize {
        self.world.size() as usize
    }

    fn sum(&self, values: &mut [f32]) {
        let send = values.to_vec();
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn gather(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.count()];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }

    fn broadcast(&self, bytes: &[u8]) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut buffer = if self.rank() == 0 { bytes.to_vec() } else { vec![0u8; len as usize] };
        // MPI refuses the dangling pointer of an empty buffer.
        if len > 0 {
            root.broadcast_into(&mut buffer[..]);
        }
        buffer
    }
}
