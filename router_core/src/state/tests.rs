//! The region: slots by key, a dead holder's lock, refused layouts, a full region.

use super::*;

fn temporary_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("router-state-{name}-{}", std::process::id()))
}

#[test]
fn two_mappings_of_one_file_see_one_slot_per_key() {
    let path = temporary_path("slots");
    let _ = fs::remove_file(&path);
    let first = Region::open(&path).unwrap();
    let second = Region::open(&path).unwrap();
    let a = first.slot("deployment/a").unwrap();
    assert_eq!(second.slot("deployment/a"), Some(a));
    let b = second.slot("deployment/b").unwrap();
    assert_ne!(a, b);
    assert_eq!(first.slot("deployment/b"), Some(b));
    {
        let mut levels = first.locked::<Levels>(a);
        assert!(!levels.get().written);
        levels.set(Levels {
            written: true,
            refilled_at: 7,
            requests: -3,
            tokens: 11,
        });
    }
    let seen = second.locked::<Levels>(a).get();
    assert!(seen.written);
    assert_eq!((seen.refilled_at, seen.requests, seen.tokens), (7, -3, 11));
    fs::remove_file(&path).unwrap();
}

#[test]
fn long_keys_that_share_a_prefix_get_their_own_slots() {
    let path = temporary_path("long");
    let _ = fs::remove_file(&path);
    let region = Region::open(&path).unwrap();
    let prefix = "k".repeat(KEY_BYTES);
    let one = region.slot(&format!("{prefix}1")).unwrap();
    let two = region.slot(&format!("{prefix}2")).unwrap();
    assert_ne!(one, two);
    assert_eq!(region.slot(&format!("{prefix}1")), Some(one));
    fs::remove_file(&path).unwrap();
}

/// A child process locks a slot and exits holding it, as a worker killed
/// mid-update would. Without a robust mutex the next lock would wait forever.
#[cfg(target_os = "linux")]
#[test]
fn a_lock_whose_holder_died_is_taken_over() {
    let path = temporary_path("died");
    let _ = fs::remove_file(&path);
    let region = std::sync::Arc::new(Region::open(&path).unwrap());
    let slot = region.slot("deployment/a").unwrap();
    // Safety: the child only locks (a futex operation) and exits.
    match unsafe { libc::fork() } {
        0 => {
            std::mem::forget(region.locked::<Levels>(slot));
            unsafe { libc::_exit(0) }
        }
        child => {
            let mut status = 0;
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        }
    }
    let (done, taken) = std::sync::mpsc::channel();
    let shared = std::sync::Arc::clone(&region);
    std::thread::spawn(move || {
        let mut levels = shared.locked::<Levels>(slot);
        levels.set(Levels {
            written: true,
            ..levels.get()
        });
        done.send(()).unwrap();
    });
    taken
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the dead holder's lock was taken over");
    assert!(region.locked::<Levels>(slot).get().written);
    fs::remove_file(&path).unwrap();
}

#[test]
fn a_file_of_another_layout_is_refused() {
    let path = temporary_path("other");
    fs::write(&path, b"not a region").unwrap();
    let error = Region::open(&path).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    fs::remove_file(&path).unwrap();
}

#[test]
fn a_full_region_has_no_slot_for_a_new_key() {
    let path = temporary_path("full");
    let _ = fs::remove_file(&path);
    let region = Region::open(&path).unwrap();
    for i in 0..SLOTS {
        assert!(region.slot(&format!("owner/{i}")).is_some());
    }
    assert_eq!(region.slot("one/more"), None);
    assert!(region.slot("owner/17").is_some());
    fs::remove_file(&path).unwrap();
}
