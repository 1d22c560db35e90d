//! Std locks that recover from poisoning, shared by every agentkit crate.
//!
//! agentkit's locks guard data that each critical section leaves consistent at every step, so a
//! panic in another thread while it held the lock must neither make the data unreachable nor
//! make the next update silently skip: the guard is taken as the panicking thread left it.
//!
//! ```
//! use std::sync::Mutex;
//! let m = Mutex::new(1);
//! *agentkit_core::sync::lock(&m) += 1;
//! assert_eq!(*agentkit_core::sync::lock(&m), 2);
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock `m`, recovering from poisoning.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-lock `l`, recovering from poisoning.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-lock `l`, recovering from poisoning.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
