/*
 * evedb._clock: the clock VFS in C.
 *
 * Owns the "evedb_clock" SQLite VFS: the default VFS with two changes.  The current time
 * (datetime('now'), CURRENT_TIMESTAMP, unixepoch()) is the batch timestamp set for the calling
 * thread, never the wall clock; and a main database file keeps its memory mapping across other
 * connections' commits (see keep_map_unfetch).  Every other method is handed to the default
 * VFS with the default VFS as its first argument, so files are the default VFS's own: their
 * reads, locks and WAL index run in C and memory-mapped I/O works.  (The VFS written in
 * Python, kept in evedb/storage.py as the fallback, sends every file call through the
 * interpreter and has no mmap: a reader whose page cache another connection's commit emptied
 * paid for it.)
 *
 * This file is two things in one shared library:
 * - a Python module, evedb._clock, whose set_time(ms | None) sets this thread's batch time;
 * - a SQLite extension, entry point sqlite3_evedbclock_init, that registers the VFS once per
 *   process.  Python imports the library and SQLite loads the same file, so both see the
 *   same thread-local time.
 *
 * Rules kept: the time is per thread (each executor thread runs its own batch); with no time
 * set the real clock answers, as SQLite's default VFS would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#define EVEDB_CLOCK_VFS_NAME "evedb_clock"
/* Julian day of the Unix epoch, in milliseconds: SQLite's clock is Julian-day milliseconds. */
#define UNIX_EPOCH_JULIAN_MS ((sqlite3_int64)210866760000000LL)

static __thread int batch_time_set = 0;
static __thread sqlite3_int64 batch_time_ms = 0;

static sqlite3_vfs clock_vfs;
static sqlite3_vfs *base_vfs = 0;

/* Memory-mapped reads that survive other connections' commits.
 *
 * In WAL mode SQLite empties a connection's page cache whenever another connection has
 * committed since its last read transaction, and then also unmaps the database file
 * (xUnfetch(file, 0, 0)).  The page cache must go, but the mapping need not: it is a shared
 * mapping of the file, so it always shows the file's current bytes, and SQLite unmaps only so
 * that a file another process shrank is never read past its end.  Unmapping costs a munmap
 * now and a page fault later for every page the connection touches again: TPC-W best sellers
 * took about 97 minor faults per call on a reader after each commit elsewhere, and ran about
 * twice as long as warm; with the mapping kept, about 2 faults and as fast as warm
 * (bench/page_cache.py).
 *
 * So a main database file's xUnfetch(file, 0, 0) is skipped while the file's size is the one
 * seen at the last unmap that was let through; a file that grew or shrank is unmapped (and
 * remapped at its new size) as before.  A page SQLite reads through the mapping belongs to
 * its read snapshot and is not in the WAL, so it lies within the file whatever the mapping's
 * size.  EVEDB_KEEP_MMAP=0 in the environment of the process that opens the file turns this
 * off (for measuring it).
 */
typedef struct {
    sqlite3_int64 size_at_last_unmap;
} MapState;

static int base_file_bytes = 0;
static sqlite3_io_methods keep_map_methods;
static const sqlite3_io_methods *base_db_methods = 0;

static MapState *map_state(sqlite3_file *file) {
    return (MapState *)((char *)file + base_file_bytes);
}

static int keep_map_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *page) {
    if (page == 0 && offset == 0) {
        sqlite3_int64 size = -1;
        if (base_db_methods->xFileSize(file, &size) != SQLITE_OK)
            size = -1;
        if (size >= 0 && size == map_state(file)->size_at_last_unmap)
            return SQLITE_OK;
        map_state(file)->size_at_last_unmap = size;
    }
    return base_db_methods->xUnfetch(file, offset, page);
}

static int keep_map_enabled(void) {
    /* Only over the unix VFS: the argument above is about its shared mappings (on Windows a
     * view kept open would also make other handles' truncation fail). */
    if (base_vfs->zName == 0 || strcmp(base_vfs->zName, "unix") != 0)
        return 0;
    const char *setting = getenv("EVEDB_KEEP_MMAP");
    return setting == 0 || strcmp(setting, "0") != 0;
}

static int clock_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
    (void)vfs;
    int rc = base_vfs->xOpen(base_vfs, name, file, flags, out_flags);
    if (rc != SQLITE_OK || !(flags & SQLITE_OPEN_MAIN_DB) || file->pMethods == 0 || file->pMethods->iVersion < 3
        || !keep_map_enabled())
        return rc;
    /* One set of methods: the default VFS gives every main database file on this platform the
     * same ones (unix: posix locking); a file with other methods is left as it is.  VFS2 is the
     * static mutex SQLite leaves to extension VFSes (VFS1 is the unix VFS's own). */
    sqlite3_mutex *mutex = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_VFS2);
    sqlite3_mutex_enter(mutex);
    if (base_db_methods == 0) {
        keep_map_methods = *file->pMethods;
        keep_map_methods.xUnfetch = keep_map_unfetch;
        base_db_methods = file->pMethods;
    }
    sqlite3_mutex_leave(mutex);
    if (file->pMethods == base_db_methods) {
        map_state(file)->size_at_last_unmap = -1;
        file->pMethods = &keep_map_methods;
    }
    return rc;
}

static int clock_delete(sqlite3_vfs *vfs, const char *name, int sync_dir) {
    (void)vfs;
    return base_vfs->xDelete(base_vfs, name, sync_dir);
}

static int clock_access(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
    (void)vfs;
    return base_vfs->xAccess(base_vfs, name, flags, result);
}

static int clock_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *out) {
    (void)vfs;
    return base_vfs->xFullPathname(base_vfs, name, size, out);
}

static void *clock_dl_open(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return base_vfs->xDlOpen(base_vfs, name);
}

static void clock_dl_error(sqlite3_vfs *vfs, int size, char *message) {
    (void)vfs;
    base_vfs->xDlError(base_vfs, size, message);
}

static void (*clock_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void) {
    (void)vfs;
    return base_vfs->xDlSym(base_vfs, handle, symbol);
}

static void clock_dl_close(sqlite3_vfs *vfs, void *handle) {
    (void)vfs;
    base_vfs->xDlClose(base_vfs, handle);
}

static int clock_randomness(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return base_vfs->xRandomness(base_vfs, size, out);
}

static int clock_sleep(sqlite3_vfs *vfs, int microseconds) {
    (void)vfs;
    return base_vfs->xSleep(base_vfs, microseconds);
}

static int clock_get_last_error(sqlite3_vfs *vfs, int size, char *out) {
    (void)vfs;
    return base_vfs->xGetLastError ? base_vfs->xGetLastError(base_vfs, size, out) : 0;
}

static int clock_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *now) {
    (void)vfs;
    if (batch_time_set) {
        *now = batch_time_ms + UNIX_EPOCH_JULIAN_MS;
        return SQLITE_OK;
    }
    if (base_vfs->iVersion >= 2 && base_vfs->xCurrentTimeInt64)
        return base_vfs->xCurrentTimeInt64(base_vfs, now);
    double julian_days = 0;
    int rc = base_vfs->xCurrentTime(base_vfs, &julian_days);
    *now = (sqlite3_int64)(julian_days * 86400000.0);
    return rc;
}

static int clock_current_time(sqlite3_vfs *vfs, double *julian_days) {
    sqlite3_int64 now = 0;
    int rc = clock_current_time_int64(vfs, &now);
    *julian_days = now / 86400000.0;
    return rc;
}

static int clock_set_system_call(sqlite3_vfs *vfs, const char *name, sqlite3_syscall_ptr call) {
    (void)vfs;
    return base_vfs->xSetSystemCall(base_vfs, name, call);
}

static sqlite3_syscall_ptr clock_get_system_call(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return base_vfs->xGetSystemCall(base_vfs, name);
}

static const char *clock_next_system_call(sqlite3_vfs *vfs, const char *name) {
    (void)vfs;
    return base_vfs->xNextSystemCall(base_vfs, name);
}

/* The SQLite extension's entry point: register the VFS (once; loading again is harmless). */
#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_evedbclock_init(sqlite3 *db, char **error, const sqlite3_api_routines *api) {
    (void)db;
    SQLITE_EXTENSION_INIT2(api);
    if (sqlite3_vfs_find(EVEDB_CLOCK_VFS_NAME) != 0)
        return SQLITE_OK_LOAD_PERMANENTLY;
    base_vfs = sqlite3_vfs_find(0);
    if (base_vfs == 0) {
        *error = sqlite3_mprintf("evedb._clock: SQLite has no default VFS");
        return SQLITE_ERROR;
    }
    clock_vfs.iVersion = base_vfs->iVersion < 3 ? base_vfs->iVersion : 3;
    base_file_bytes = base_vfs->szOsFile;
    clock_vfs.szOsFile = base_vfs->szOsFile + (int)sizeof(MapState);
    clock_vfs.mxPathname = base_vfs->mxPathname;
    clock_vfs.zName = EVEDB_CLOCK_VFS_NAME;
    clock_vfs.xOpen = clock_open;
    clock_vfs.xDelete = clock_delete;
    clock_vfs.xAccess = clock_access;
    clock_vfs.xFullPathname = clock_full_pathname;
    clock_vfs.xDlOpen = clock_dl_open;
    clock_vfs.xDlError = clock_dl_error;
    clock_vfs.xDlSym = clock_dl_sym;
    clock_vfs.xDlClose = clock_dl_close;
    clock_vfs.xRandomness = clock_randomness;
    clock_vfs.xSleep = clock_sleep;
    clock_vfs.xCurrentTime = clock_current_time;
    clock_vfs.xGetLastError = clock_get_last_error;
    clock_vfs.xCurrentTimeInt64 = clock_current_time_int64;
    if (clock_vfs.iVersion >= 3) {
        clock_vfs.xSetSystemCall = clock_set_system_call;
        clock_vfs.xGetSystemCall = clock_get_system_call;
        clock_vfs.xNextSystemCall = clock_next_system_call;
    }
    int rc = sqlite3_vfs_register(&clock_vfs, 0);
    return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}

/* Python side. */

static PyObject *py_set_time(PyObject *self, PyObject *arg) {
    (void)self;
    if (arg == Py_None) {
        batch_time_set = 0;
        Py_RETURN_NONE;
    }
    long long value = PyLong_AsLongLong(arg);
    if (value == -1 && PyErr_Occurred())
        return NULL;
    batch_time_ms = (sqlite3_int64)value;
    batch_time_set = 1;
    Py_RETURN_NONE;
}

static PyObject *py_get_time(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!batch_time_set)
        Py_RETURN_NONE;
    return PyLong_FromLongLong((long long)batch_time_ms);
}

static PyMethodDef clock_methods[] = {
    {"set_time", py_set_time, METH_O,
     "set_time(ms | None): the time SQLite sees on this thread, in Unix milliseconds (None: the real clock)."},
    {"get_time", py_get_time, METH_NOARGS, "get_time() -> the time set on this thread, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef clock_module = {
    PyModuleDef_HEAD_INIT, "evedb._clock",
    "The clock VFS in C (see evedb/_clock.c); load this file into SQLite with entry point "
    "sqlite3_evedbclock_init.",
    -1, clock_methods,
};

PyMODINIT_FUNC PyInit__clock(void) {
    return PyModule_Create(&clock_module);
}
