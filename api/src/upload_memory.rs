//! The memory document uploads may take at once in this process
//! (`submission_memory_bytes`), and of it one account's share
//! (`submission_memory_per_account_bytes`): a client that uploads many
//! large bodies at once, or stalls in the middle of them, slows down its
//! own account, not the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The budget, in KiB.
#[derive(Debug)]
pub struct UploadMemory {
    free: Arc<Semaphore>,
    per_account: u32,
    /// KiB each account holds now; accounts holding none are not listed.
    held: Arc<Mutex<HashMap<Uuid, u32>>>,
}

/// Why a reservation was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Account,
    Process,
}

/// Memory taken until dropped.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    account: Uuid,
    kib: u32,
    held: Arc<Mutex<HashMap<Uuid, u32>>>,
}

impl UploadMemory {
    /// `total` and `per_account` KiB; the largest upload (`one`) must fit in
    /// both, and an account's share in the whole. (`Config::validate` holds
    /// `total` under 4 TiB, `u32::MAX` KiB; more counts as that.)
    pub fn new(total: u64, per_account: u64, one: u32) -> Result<UploadMemory, String> {
        let one = u64::from(one);
        if total < one {
            return Err(format!(
                "invalid setting submission_memory_bytes: must be at least {} (one upload of \
                 max_upload_bytes: its largest body, and its decoded document up to 2 MiB), \
                 not {}",
                one * 1024,
                total * 1024
            ));
        }
        let total = total.min(u64::from(u32::MAX));
        if !(one..=total).contains(&per_account) {
            return Err(format!(
                "invalid setting submission_memory_per_account_bytes: must be at least {} (one \
                 upload of max_upload_bytes) and at most submission_memory_bytes ({}), not {}",
                one * 1024,
                total * 1024,
                per_account * 1024
            ));
        }
        Ok(UploadMemory {
            free: Arc::new(Semaphore::new(total as usize)),
            per_account: per_account as u32,
            held: Arc::default(),
        })
    }

    /// Takes `kib` for `account`, if both its share and the process have it.
    pub fn reserve(&self, account: Uuid, kib: u32) -> Result<Reservation, Full> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(&account).copied().unwrap_or(0);
        if mine.saturating_add(kib) > self.per_account {
            return Err(Full::Account);
        }
        let permit = self
            .free
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| Full::Process)?;
        held.insert(account, mine + kib);
        Ok(Reservation {
            _permit: permit,
            account,
            kib,
            held: self.held.clone(),
        })
    }

    /// KiB free in the process.
    pub fn available(&self) -> usize {
        self.free.available_permits()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = held.get_mut(&self.account) {
            *mine = mine.saturating_sub(self.kib);
            if *mine == 0 {
                held.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_takes_its_share_and_gives_it_back() {
        let memory = UploadMemory::new(100, 60, 10).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = memory.reserve(a, 50).unwrap();
        // Over a's share, though the process has room.
        assert_eq!(memory.reserve(a, 20).err(), Some(Full::Account));
        let second = memory.reserve(a, 10).unwrap();
        // b has its share, but the process has 40 left.
        assert_eq!(memory.reserve(b, 50).err(), Some(Full::Process));
        let third = memory.reserve(b, 40).unwrap();
        assert_eq!(memory.available(), 0);
        drop((first, third));
        assert_eq!(memory.available(), 90);
        assert_eq!(memory.held.lock().unwrap().get(&b), None);
        assert!(memory.reserve(a, 50).is_ok());
        drop(second);
        assert!(memory.held.lock().unwrap().is_empty());
        // The largest upload must fit in both.
        assert!(
            UploadMemory::new(100, 9, 10)
                .unwrap_err()
                .contains("per_account")
        );
        assert!(
            UploadMemory::new(100, 101, 10)
                .unwrap_err()
                .contains("per_account")
        );
        assert!(
            UploadMemory::new(9, 9, 10)
                .unwrap_err()
                .contains("submission_memory_bytes")
        );
    }
}
