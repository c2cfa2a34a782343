//! [`Ranks`] over MPI (`--features mpi`: rsmpi on the system's Open MPI), for processes started
//! by `mpirun` or Slurm's `srun`.

use mpi::collective::SystemOperation;
use mpi::Threading;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use crate::Error;
use crate::training::ranks::Ranks;

/// The world communicator; MPI ends when this is dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    _universe: Universe,
}

impl Mpi {
    /// Starts MPI for calls from any thread, one at a time (the trainer may run on a pool's thread).
    pub fn start() -> Result<Self, Error> {
        let (universe, threading) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| Error::new("MPI was already started in this process"))?;
        if !matches!(threading, Threading::Serialized | Threading::Multiple) {
            return Err(Error::new(format!("this MPI library offers only {threading:?} threading; imm needs Serialized")));
        }
        Ok(Self { world: universe.world(), _universe: universe })
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
