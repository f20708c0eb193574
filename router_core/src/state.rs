//! State that the processes of one host share: a file (normally under
//! `/dev/shm`) mapped into each of them, holding a fixed number of slots. A
//! slot belongs to one key (a rate limit's owner, a deployment's breaker,
//! cool-downs and latency, counters, calibration, a round-robin position), so
//! that every process's router uses the same state however its table was
//! compiled or reloaded.
//!
//! Each slot has a process-shared mutex, held for a few arithmetic operations.
//! On Linux it is robust: when a process dies holding it (SIGKILL, the OOM
//! killer), the next process to lock it takes it over, and the slot's values
//! are whole, since each is written before the lock is given back.
//!
//! The file is made complete under a temporary name and then linked into
//! place, so no process ever maps a half-initialised region; when two create it
//! at once, the one that links first wins and the other maps the winner's.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapMut;

mod access;
mod in_flight;

pub(crate) use access::{Guard, Held, Place};
pub(crate) use in_flight::InFlight;

/// Marks the file as this layout; another layout's file is refused, not misread.
const MAGIC: u64 = u64::from_le_bytes(*b"swbstat3");
/// And as this build's: payloads are Rust values, laid out as this crate's
/// version compiled them.
const BUILD: &str = env!("CARGO_PKG_VERSION");
/// Keys a region holds: eight per deployment (limit, breaker, health, counts,
/// durations, failed durations, in flight, calibration), one per model group
/// (its calls), tenant, API key and round-robin plan, over all reloads.
pub const SLOTS: usize = 4096;
/// Key bytes compared as well as the key's hash.
const KEY_BYTES: usize = 96;

/// Processes that may count attempts in flight at once, each in its column.
pub(crate) const COLUMNS: usize = 32;
/// The keys of `InFlight` slots, which a column's owner's death clears.
pub(crate) const IN_FLIGHT: &str = "in_flight/";

/// Bytes a slot holds for its owner.
const PAYLOAD_BYTES: usize = 1280;

/// A type that may live in a slot's payload.
///
/// # Safety
/// The type must be valid when all its bytes are zero (a slot starts zeroed),
/// fit in `PAYLOAD_BYTES`, hold no pointers, and mean the same in every
/// process that maps the region (they run one build: see `BUILD`).
pub(crate) unsafe trait Payload: Sized {}

#[repr(C, align(16))]
struct Bytes([u8; PAYLOAD_BYTES]);

/// What one owner's buckets hold between calls, in `ratelimit`'s units.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Levels {
    /// False until a process first wrote the levels: the buckets start full.
    pub(crate) written: bool,
    pub(crate) refilled_at: u64,
    pub(crate) requests: i128,
    pub(crate) tokens: i128,
}

#[repr(C)]
struct Header {
    magic: u64,
    build: u64,
    slots: u64,
    /// Held while a free slot or a column is claimed.
    claim: libc::pthread_mutex_t,
    /// The pid owning each column of `InFlight` counts; 0 for none.
    columns: [AtomicU32; COLUMNS],
}

#[repr(C)]
struct Slot {
    /// 1 once `key_hash`, `key_len` and `key` are written; a slot is never freed.
    claimed: AtomicU32,
    key_len: u32,
    key_hash: u64,
    key: [u8; KEY_BYTES],
    lock: libc::pthread_mutex_t,
    payload: Bytes,
}

// Safety: plain integers; all zero is "never written".
unsafe impl Payload for Levels {}

const SIZE: usize = size_of::<Header>().next_multiple_of(64) + SLOTS * size_of::<Slot>();

/// A mapped region. Dropping it unmaps it; the file stays for the other
/// processes (whoever created it removes it when the service stops).
pub struct Region {
    map: MmapMut,
    path: PathBuf,
    /// This mapping's column of the `InFlight` counts; None when every column
    /// belongs to a live process (its attempts are then not counted).
    column: Option<usize>,
}

// The region is only touched through its mutexes and atomics.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("path", &self.path).finish()
    }
}

impl Region {
    /// Maps the region at `path`, creating it if there is none.
    pub fn open(path: &Path) -> io::Result<Region> {
        let mut region = match Region::map_existing(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Region::create(path),
            other => other,
        }?;
        region.column = region.claim_column();
        Ok(region)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn map_existing(path: &Path) -> io::Result<Region> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() != SIZE as u64 {
            return Err(invalid(path, "has the size of another layout"));
        }
        let region = Region::map(&file, path)?;
        let header = region.header();
        if header.magic != MAGIC
            || header.build != fnv1a(BUILD.as_bytes())
            || header.slots != SLOTS as u64
        {
            return Err(invalid(
                path,
                "is not a router state region of this version",
            ));
        }
        Ok(region)
    }

    fn create(path: &Path) -> io::Result<Region> {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        let made = (|| -> io::Result<Region> {
            file.set_len(SIZE as u64)?;
            let mut region = Region::map(&file, path)?;
            region.initialise()?;
            region.map.flush()?;
            fs::hard_link(&temporary, path)?;
            Ok(region)
        })();
        let _ = fs::remove_file(&temporary);
        match made {
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Region::map_existing(path)
            }
            other => other,
        }
    }

    fn map(file: &File, path: &Path) -> io::Result<Region> {
        // Safety: the file is this layout's size; processes change it only
        // through the mutexes and atomics below.
        let map = unsafe { MmapMut::map_mut(file)? };
        Ok(Region {
            map,
            path: path.to_owned(),
            column: None,
        })
    }

    fn initialise(&mut self) -> io::Result<()> {
        let header = self.map.as_mut_ptr().cast::<Header>();
        // Safety: the mapping is SIZE bytes, zeroed, and not yet seen by any
        // other process; the header and slots lie within it.
        unsafe {
            (*header).slots = SLOTS as u64;
            (*header).build = fnv1a(BUILD.as_bytes());
            init_shared_mutex(ptr::addr_of_mut!((*header).claim))?;
            for index in 0..SLOTS {
                init_shared_mutex(ptr::addr_of_mut!((*self.slot_ptr(index)).lock))?;
            }
            (*header).magic = MAGIC;
        }
        Ok(())
    }

    pub(crate) fn column(&self) -> Option<usize> {
        self.column
    }

    /// Makes `pid` the owner of this mapping's column, as if that process had
    /// claimed it (to test what happens when an owner dies).
    #[cfg(test)]
    pub(crate) fn hand_column_to(&self, pid: u32) {
        let column = self.column.expect("a column");
        self.header().columns[column].store(pid, Ordering::Release);
    }

    /// A column no live process owns. A dead owner's counts are cleared first:
    /// what it had in flight ended with it.
    fn claim_column(&self) -> Option<usize> {
        // Safety: the claim lock was initialised with the region.
        let _claim = self.lock(unsafe { ptr::addr_of_mut!((*self.header_ptr()).claim) });
        let pid = std::process::id();
        for (column, owner) in self.header().columns.iter().enumerate() {
            let held_by = owner.load(Ordering::Acquire);
            if held_by == 0 || !alive(held_by) {
                self.clear_column(column);
                owner.store(pid, Ordering::Release);
                return Some(column);
            }
        }
        None
    }

    fn clear_column(&self, column: usize) {
        for index in 0..SLOTS {
            let slot = self.slot_ptr(index);
            // Safety: claimed slots' keys are written before `claimed` is set.
            let claimed = unsafe { (*slot).claimed.load(Ordering::Acquire) } == 1;
            if claimed && unsafe { key_starts_with(slot, IN_FLIGHT) } {
                self.shared::<InFlight>(index).clear(column);
            }
        }
    }

    fn header(&self) -> &Header {
        // Safety: the mapping starts with the header.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn slot_ptr(&self, index: usize) -> *mut Slot {
        debug_assert!(index < SLOTS);
        let offset = size_of::<Header>().next_multiple_of(64) + index * size_of::<Slot>();
        // Safety: within the mapping for every index below SLOTS.
        unsafe { self.map.as_ptr().add(offset).cast::<Slot>().cast_mut() }
    }

    /// The slot of `key`, claimed for it if no process has; None when every
    /// slot belongs to another key.
    pub(crate) fn slot(&self, key: &str) -> Option<usize> {
        let hash = fnv1a(key.as_bytes());
        let start = (hash % SLOTS as u64) as usize;
        for probe in 0..SLOTS {
            let index = (start + probe) % SLOTS;
            let slot = self.slot_ptr(index);
            // Safety: `claimed` is only ever accessed atomically; the key
            // fields are written once, before `claimed` is set with Release.
            let claimed = unsafe { &(*slot).claimed };
            if claimed.load(Ordering::Acquire) == 0 {
                let _claim = self.lock(unsafe { ptr::addr_of_mut!((*self.header_ptr()).claim) });
                if claimed.load(Ordering::Acquire) == 0 {
                    let stored = &key.as_bytes()[..key.len().min(KEY_BYTES)];
                    unsafe {
                        (*slot).key_hash = hash;
                        (*slot).key_len = key.len() as u32;
                        (&mut (*slot).key)[..stored.len()].copy_from_slice(stored);
                    }
                    claimed.store(1, Ordering::Release);
                    return Some(index);
                }
            }
            if unsafe { holds(slot, key, hash) } {
                return Some(index);
            }
        }
        None
    }

    /// Locks slot `index` for reading and writing its payload as a `T`.
    pub(crate) fn locked<T: Payload + Copy>(&self, index: usize) -> Guard<'_, T> {
        let slot = self.slot_ptr(index);
        // Safety: the lock was initialised with the region.
        let locked = self.lock(unsafe { ptr::addr_of_mut!((*slot).lock) });
        Guard {
            _locked: locked,
            value: self.payload(index),
        }
    }

    /// Slot `index`'s payload as a `T` that is only ever used through shared
    /// references (atomics), never locked.
    pub(crate) fn shared<T: Payload + Sync>(&self, index: usize) -> &T {
        // Safety: a `Payload` is valid zeroed and fits; it lives as long as the map.
        unsafe { &*self.payload::<T>(index) }
    }

    fn payload<T: Payload>(&self, index: usize) -> *mut T {
        const { assert!(size_of::<T>() <= PAYLOAD_BYTES && std::mem::align_of::<T>() <= 16) };
        // Safety: within slot `index`.
        unsafe { ptr::addr_of_mut!((*self.slot_ptr(index)).payload).cast::<T>() }
    }

    fn header_ptr(&self) -> *mut Header {
        self.map.as_ptr().cast::<Header>().cast_mut()
    }

    fn lock(&self, mutex: *mut libc::pthread_mutex_t) -> Locked<'_> {
        // Safety: `mutex` is an initialised process-shared mutex in the mapping.
        let result = unsafe { libc::pthread_mutex_lock(mutex) };
        #[cfg(target_os = "linux")]
        if result == libc::EOWNERDEAD {
            // Its holder died; what it guards was written whole (see module docs).
            unsafe { libc::pthread_mutex_consistent(mutex) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = result;
        Locked {
            mutex,
            _region: std::marker::PhantomData,
        }
    }
}

unsafe fn key_starts_with(slot: *const Slot, prefix: &str) -> bool {
    let stored = ((*slot).key_len as usize).min(KEY_BYTES);
    (&(*slot).key)[..stored].starts_with(prefix.as_bytes())
}

fn alive(pid: u32) -> bool {
    // Safety: signal 0 only asks whether the process exists.
    let sent = unsafe { libc::kill(pid as libc::pid_t, 0) };
    sent == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl Drop for Region {
    /// Gives this mapping's column back, with whatever it still counted.
    fn drop(&mut self) {
        if let Some(column) = self.column {
            let _claim = self.lock(unsafe { ptr::addr_of_mut!((*self.header_ptr()).claim) });
            self.clear_column(column);
            self.header().columns[column].store(0, Ordering::Release);
        }
    }
}

/// Whether claimed slot `slot` belongs to `key`.
unsafe fn holds(slot: *const Slot, key: &str, hash: u64) -> bool {
    let stored = key.len().min(KEY_BYTES);
    (*slot).key_hash == hash
        && (*slot).key_len as usize == key.len()
        && (&(*slot).key)[..stored] == key.as_bytes()[..stored]
}

unsafe fn init_shared_mutex(mutex: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let mut attributes: libc::pthread_mutexattr_t = std::mem::zeroed();
    let check = |code: libc::c_int| {
        if code == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(code))
        }
    };
    check(libc::pthread_mutexattr_init(&mut attributes))?;
    check(libc::pthread_mutexattr_setpshared(
        &mut attributes,
        libc::PTHREAD_PROCESS_SHARED,
    ))?;
    #[cfg(target_os = "linux")]
    check(libc::pthread_mutexattr_setrobust(
        &mut attributes,
        libc::PTHREAD_MUTEX_ROBUST,
    ))?;
    let made = check(libc::pthread_mutex_init(mutex, &attributes));
    libc::pthread_mutexattr_destroy(&mut attributes);
    made
}

struct Locked<'a> {
    mutex: *mut libc::pthread_mutex_t,
    _region: std::marker::PhantomData<&'a Region>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Safety: locked by this thread in `Region::lock`.
        unsafe { libc::pthread_mutex_unlock(self.mutex) };
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} {what}", path.display()),
    )
}

#[cfg(test)]
mod tests;
