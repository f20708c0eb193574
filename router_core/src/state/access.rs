//! Typed access to what a slot holds: a locked copy (`Guard`), a value that
//! is this process's own or a slot's (`Place`), and a value held under either
//! kind of lock (`Held`).

use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::{Arc, MutexGuard};

use super::{Locked, Payload, Region};

/// One slot's payload, locked until dropped.
pub(crate) struct Guard<'a, T> {
    pub(super) _locked: Locked<'a>,
    pub(super) value: *mut T,
}

impl<T: Copy> Guard<'_, T> {
    pub(crate) fn get(&self) -> T {
        // Safety: the slot's lock is held.
        unsafe { ptr::read(self.value) }
    }

    pub(crate) fn set(&mut self, value: T) {
        unsafe { ptr::write(self.value, value) }
    }
}

/// A `T` used only through shared references (atomics): this process's own,
/// or a slot's payload in a region the host's processes share.
#[derive(Debug)]
pub(crate) enum Place<T> {
    Local(T),
    Shared { region: Arc<Region>, slot: usize },
}

impl<T: Default> Default for Place<T> {
    fn default() -> Self {
        Place::Local(T::default())
    }
}

impl<T: Payload + Sync + Default> Place<T> {
    /// `key`'s `T` in `region` when there is one with a slot for it; else
    /// this process's own, fresh.
    pub(crate) fn at(region: Option<&Arc<Region>>, key: &str) -> Self {
        match region.and_then(|region| Some((region, region.slot(key)?))) {
            Some((region, slot)) => Place::Shared {
                region: Arc::clone(region),
                slot,
            },
            None => Place::default(),
        }
    }
}

impl<T: Payload + Sync> Deref for Place<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Place::Local(value) => value,
            Place::Shared { region, slot } => region.shared(*slot),
        }
    }
}

/// A value locked where it lives: this process's own behind a mutex, or a
/// copy of a slot's payload, read when the slot was locked and written back,
/// whole (as `store` makes it), before the slot is unlocked.
// It lives on the stack for a few operations; boxing the copy would allocate.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Held<'a, T, S: Payload + Copy> {
    Local(MutexGuard<'a, T>),
    Shared {
        guard: Guard<'a, S>,
        value: T,
        store: fn(&T) -> S,
    },
}

impl<T, S: Payload + Copy> Deref for Held<'_, T, S> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Held::Local(value) => value,
            Held::Shared { value, .. } => value,
        }
    }
}

impl<T, S: Payload + Copy> DerefMut for Held<'_, T, S> {
    fn deref_mut(&mut self) -> &mut T {
        match self {
            Held::Local(value) => value,
            Held::Shared { value, .. } => value,
        }
    }
}

impl<T, S: Payload + Copy> Drop for Held<'_, T, S> {
    fn drop(&mut self) {
        if let Held::Shared {
            guard,
            value,
            store,
        } = self
        {
            guard.set(store(value));
        }
    }
}
