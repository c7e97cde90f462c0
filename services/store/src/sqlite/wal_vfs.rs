//! A VFS over SQLite's default one that gathers the write-ahead log's
//! writes into a few large `pwrite`s per sync.
//!
//! SQLite writes every WAL frame as two writes (its 24-byte header, then
//! the page), each a system call: a group commit of 500 sends in `steady`
//! was ~2,300 frames, ~4,600 `pwrite`s, ~9 per message and a tenth of the
//! server's CPU. Here the writes of the WAL file are kept in memory while
//! they follow each other (or rewrite a part already kept), and go to the
//! file in one write before anything that must see them: a sync, a read of
//! a range they cover, a truncation, a size query, the close. Durability
//! is unchanged: SQLite never counts on a write before its sync, and with
//! `synchronous = FULL` (what the store sets) it syncs the WAL before a
//! commit becomes visible to other connections, so they never read frames
//! still held here. Every other file, and every other method, is the
//! default VFS's.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections open the store with.
pub(crate) const NAME: &CStr = c"chatd-wal";

/// Past this many bytes held, they are written out at once (a batch of
/// a few thousand frames stays well under it).
const MAX_HELD: usize = 4 << 20;

/// Bytes per write to the default VFS.
const WRITE_CHUNK: usize = 64 << 10;

/// Our part of a file; the default VFS's file follows it in the same
/// allocation (SQLite sizes it by `szOsFile`).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    wal: bool,
    /// File offset of `held[0]`.
    start: i64,
    held: Vec<u8>,
}

const INNER_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(16);

unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    unsafe { (file as *mut u8).add(INNER_OFFSET) as *mut ffi::sqlite3_file }
}

unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    unsafe { &*(*inner(file)).pMethods }
}

struct Registered(ffi::sqlite3_vfs);
// SAFETY: written once before registration, read-only afterwards.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static VFS: OnceLock<Result<Box<Registered>, c_int>> = OnceLock::new();

/// Registers the VFS (once per process); `Err` carries SQLite's code.
pub(crate) fn register() -> Result<(), c_int> {
    VFS.get_or_init(|| unsafe {
        let default = ffi::sqlite3_vfs_find(std::ptr::null());
        if default.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        let mut vfs = Box::new(Registered(*default));
        vfs.0.zName = NAME.as_ptr();
        vfs.0.szOsFile = (INNER_OFFSET + (*default).szOsFile as usize) as c_int;
        vfs.0.pAppData = default as *mut c_void;
        vfs.0.xOpen = Some(x_open);
        vfs.0.pNext = std::ptr::null_mut();
        let rc = ffi::sqlite3_vfs_register(&mut vfs.0, 0);
        if rc == ffi::SQLITE_OK {
            Ok(vfs)
        } else {
            Err(rc)
        }
    })
    .as_ref()
    .map(|_| ())
    .map_err(|rc| *rc)
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    unsafe {
        let default = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
        let ours = file as *mut File;
        (*ours).base.pMethods = std::ptr::null();
        let rc = ((*default).xOpen.expect("the default VFS opens"))(
            default,
            name,
            inner(file),
            flags,
            out_flags,
        );
        if rc != ffi::SQLITE_OK || (*inner(file)).pMethods.is_null() {
            return rc;
        }
        std::ptr::addr_of_mut!((*ours).wal).write(flags & ffi::SQLITE_OPEN_WAL != 0);
        std::ptr::addr_of_mut!((*ours).start).write(0);
        std::ptr::addr_of_mut!((*ours).held).write(Vec::new());
        (*ours).base.pMethods = &IO_METHODS;
        rc
    }
}

/// Writes out what is held.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let ours = &mut *(file as *mut File);
        if ours.held.is_empty() {
            return ffi::SQLITE_OK;
        }
        // The default VFS writes at most 128 KiB - 1 per call (it masks the
        // length with 0x1ffff and reports the rest as a full disk).
        let mut rc = ffi::SQLITE_OK;
        let mut offset = ours.start;
        for chunk in ours.held.chunks(WRITE_CHUNK) {
            #[cfg(test)]
            tests::WAL_WRITES.with(|n| n.set(n.get() + 1));
            rc = (methods(file).xWrite.expect("xWrite"))(
                inner(file),
                chunk.as_ptr() as *const c_void,
                chunk.len() as c_int,
                offset,
            );
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        ours.held.clear();
        if ours.held.capacity() > MAX_HELD {
            ours.held = Vec::new();
        }
        rc
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let flushed = flush(file);
        let closed = (methods(file).xClose.expect("xClose"))(inner(file));
        std::ptr::drop_in_place(std::ptr::addr_of_mut!((*(file as *mut File)).held));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let ours = &*(file as *mut File);
        let end = ours.start + ours.held.len() as i64;
        if !ours.held.is_empty() && offset < end && offset + i64::from(amount) > ours.start {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        (methods(file).xRead.expect("xRead"))(inner(file), out, amount, offset)
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let ours = &mut *(file as *mut File);
        if !ours.wal || amount < 0 {
            return (methods(file).xWrite.expect("xWrite"))(inner(file), data, amount, offset);
        }
        #[cfg(test)]
        tests::WAL_WRITES_ASKED.with(|n| n.set(n.get() + 1));
        let bytes = std::slice::from_raw_parts(data as *const u8, amount as usize);
        let end = ours.start + ours.held.len() as i64;
        if !ours.held.is_empty() && offset >= ours.start && offset + i64::from(amount) <= end {
            // A frame of this transaction written again.
            let at = (offset - ours.start) as usize;
            ours.held[at..at + bytes.len()].copy_from_slice(bytes);
            return ffi::SQLITE_OK;
        }
        if ours.held.is_empty() || offset != end {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let ours = &mut *(file as *mut File);
            ours.start = offset;
        }
        let ours = &mut *(file as *mut File);
        ours.held.extend_from_slice(bytes);
        if ours.held.len() >= MAX_HELD {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

/// Writes out what is held, then hands the call to the default VFS.
unsafe fn after_flush(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int,
) -> c_int {
    unsafe {
        match flush(file) {
            ffi::SQLITE_OK => then(methods(file), inner(file)),
            failed => failed,
        }
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe { after_flush(file, |m, f| (m.xTruncate.expect("xTruncate"))(f, size)) }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe { after_flush(file, |m, f| (m.xSync.expect("xSync"))(f, flags)) }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe { after_flush(file, |m, f| (m.xFileSize.expect("xFileSize"))(f, size)) }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { (methods(file).xLock.expect("xLock"))(inner(file), level) }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { (methods(file).xUnlock.expect("xUnlock"))(inner(file), level) }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        (methods(file)
            .xCheckReservedLock
            .expect("xCheckReservedLock"))(inner(file), out)
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // Whatever the control does to the file, it sees all of it.
    unsafe {
        after_flush(file, |m, f| {
            (m.xFileControl.expect("xFileControl"))(f, op, arg)
        })
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe { (methods(file).xSectorSize.expect("xSectorSize"))(inner(file)) }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        (methods(file)
            .xDeviceCharacteristics
            .expect("xDeviceCharacteristics"))(inner(file))
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        match methods(file).xShmMap {
            Some(map) => map(inner(file), region, size, extend, out),
            None => ffi::SQLITE_IOERR,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    unsafe {
        match methods(file).xShmLock {
            Some(lock) => lock(inner(file), offset, n, flags),
            None => ffi::SQLITE_IOERR,
        }
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    unsafe {
        if let Some(barrier) = methods(file).xShmBarrier {
            barrier(inner(file))
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    unsafe {
        match methods(file).xShmUnmap {
            Some(unmap) => unmap(inner(file), delete),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    unsafe {
        match (methods(file).iVersion >= 3)
            .then_some(methods(file).xFetch)
            .flatten()
        {
            Some(fetch) => fetch(inner(file), offset, amount, out),
            None => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    unsafe {
        match (methods(file).iVersion >= 3)
            .then_some(methods(file).xUnfetch)
            .flatten()
        {
            Some(unfetch) => unfetch(inner(file), offset, page),
            None => ffi::SQLITE_OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    thread_local! {
        /// Writes that reached a WAL file from this thread.
        pub(super) static WAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        /// Writes SQLite asked of a WAL file on this thread.
        pub(super) static WAL_WRITES_ASKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_commits_frames_reach_the_wal_in_one_write_and_other_connections_see_them() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        writer.pragma_update(None, "page_size", 1024).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", "FULL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let count = |c: &Connection| {
            c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        for round in 1..=3 {
            let (before, asked_before) = (
                WAL_WRITES.with(|n| n.get()),
                WAL_WRITES_ASKED.with(|n| n.get()),
            );
            writer.execute_batch("BEGIN IMMEDIATE").unwrap();
            for i in 0..200 {
                writer
                    .execute(
                        "INSERT INTO t (v) VALUES (?1)",
                        [format!("{round}-{i}-{}", "x".repeat(500))],
                    )
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            let writes = WAL_WRITES.with(|n| n.get()) - before;
            let asked = WAL_WRITES_ASKED.with(|n| n.get()) - asked_before;
            assert!(
                asked >= 200,
                "round {round}: SQLite asked for {asked} writes"
            );
            // ~100 KiB of pages in 64 KiB writes; two per page without the VFS.
            assert!(writes <= 4, "round {round}: {writes} writes");
            assert_eq!(
                count(&reader),
                200 * round,
                "a reader on the default VFS sees the commit"
            );
        }
        let frames: i64 = reader
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        assert!(frames >= 300, "{frames} frames in the WAL");
        drop(writer);
        let reopened = Connection::open(&path).unwrap();
        let ok: String = reopened
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!((ok.as_str(), count(&reopened)), ("ok", 600));
    }
}
