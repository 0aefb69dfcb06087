/*
 * evedb._tokenhash: the hashing behind a batch's token, in C: the Merkle page deltas of a
 * changeset, and the bytes of the batch's replies.
 *
 * Owns nothing new: it computes exactly what evedb/merkle.py and evedb/codec.py define
 * (they are the reference and the fallback), only without the interpreter in the loop.  A
 * write batch's token was mostly this: per changed row, iterating the changeset in Python,
 * packing the row with msgpack and hashing it cost about 5 microseconds.  Here a changeset is read in its
 * documented binary form (sqlite3session.h: table headers, then INSERT/DELETE/UPDATE records
 * of typed values), each row is packed into msgpack bytes identical to merkle.row_hash's, and
 * hashed by the xxh3 functions of the xxhash module evedb already depends on: their address
 * is looked up in that module's shared library, so the hash is the very same code.
 *
 * Functions:
 * - configure(xxhash_library, rows_per_page, hash_buckets): bind the hash functions and the
 *   page geometry (merkle.py passes its own constants, so they are written down once);
 * - changeset_deltas(changeset, no_change[, reader]) -> (deltas, partial_updates): deltas
 *   maps (table, page) to the sum mod 2**128 of +hash(new row) - hash(old row); an UPDATE
 *   whose old record lacks a column (it left that column unchanged) cannot be hashed from
 *   the changeset alone: given a RowReader it is completed here by reading the row as the
 *   open transaction sees it; otherwise it is returned as a (table, key column indexes, old
 *   record) tuple, with `no_change` where a value is absent, for the caller to complete;
 * - RowReader(connection, row_select): an apsw Connection and `row_select(table)`, the SQL
 *   that reads one row by key; it keeps one prepared statement per table until close();
 * - row_hash(table, row) -> int: merkle.row_hash of a tuple of SQLite values;
 * - encode_reply(reply) -> bytes: codec.encode_reply;
 * - encode_replies(replies) -> bytes: codec.encode_replies (the bytes the token's reply hash
 *   covers); a value it does not write (a procedure's dict, say) raises NotEncodable and
 *   codec.py encodes that batch itself.
 *
 * Reading rows needs SQLite's own functions, and the SQLite in this process is the copy
 * linked into apsw, whose symbols are not exported: the library is therefore also a SQLite
 * extension (entry point sqlite3_evedbtokenhash_init) that only keeps the routines table
 * SQLite hands it.  evedb/storage.py loads it once per process into a private connection.
 *
 * Rules kept: byte-for-byte the encodings of merkle.py and codec.py (msgpack-python's
 * smallest forms, str as UTF-8, floats as float 64); every read of the changeset is
 * bounds-checked, and a malformed one raises ValueError; no state but the configuration and
 * a RowReader's statements.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include <sqlite3ext.h>
/* Static, unlike SQLITE_EXTENSION_INIT1's: SQLite loads extensions RTLD_GLOBAL, and this
 * library's routines pointer must not be interposed by another extension's. */
static const sqlite3_api_routines *sqlite3_api = 0;

typedef struct {
    uint64_t low64;
    uint64_t high64;
} xxh128_value;

typedef unsigned __int128 u128;

static xxh128_value (*xxh3_128)(const void *, size_t) = NULL;
static uint64_t (*xxh3_64)(const void *, size_t) = NULL;
static int64_t rows_per_page = 0;
static uint64_t hash_buckets = 0;

/* SQLite's value type codes inside a changeset record. */
enum { VALUE_ABSENT = 0, VALUE_INTEGER = 1, VALUE_FLOAT = 2, VALUE_TEXT = 3, VALUE_BLOB = 4, VALUE_NULL = 5 };
/* SQLite's operation codes. */
enum { OP_DELETE = 9, OP_INSERT = 18, OP_UPDATE = 23 };

typedef struct {
    int type;
    int64_t integer;
    double real;
    const unsigned char *bytes;
    size_t size;
} value_view;

/* --- a growable byte buffer and the msgpack forms merkle.py's packer writes --- */

typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
} buffer;

static int buffer_reserve(buffer *out, size_t more) {
    if (out->size + more <= out->capacity)
        return 0;
    size_t capacity = out->capacity ? out->capacity : 256;
    while (capacity < out->size + more)
        capacity *= 2;
    unsigned char *data = PyMem_Realloc(out->data, capacity);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->capacity = capacity;
    return 0;
}

static int put_bytes(buffer *out, const void *bytes, size_t size) {
    if (buffer_reserve(out, size) < 0)
        return -1;
    if (size) /* an empty blob's pointer may be NULL */
        memcpy(out->data + out->size, bytes, size);
    out->size += size;
    return 0;
}

static int put_tagged_be(buffer *out, unsigned char tag, uint64_t value, int width) {
    unsigned char bytes[9];
    bytes[0] = tag;
    for (int i = 0; i < width; i++)
        bytes[1 + i] = (unsigned char)(value >> (8 * (width - 1 - i)));
    return put_bytes(out, bytes, 1 + (size_t)width);
}

static int pack_array_header(buffer *out, size_t count) {
    if (count < 16) {
        unsigned char tag = (unsigned char)(0x90 | count);
        return put_bytes(out, &tag, 1);
    }
    if (count <= 0xffff)
        return put_tagged_be(out, 0xdc, count, 2);
    return put_tagged_be(out, 0xdd, count, 4);
}

static int pack_integer(buffer *out, int64_t value) {
    if (value >= 0) {
        uint64_t v = (uint64_t)value;
        if (v < 0x80) {
            unsigned char tag = (unsigned char)v;
            return put_bytes(out, &tag, 1);
        }
        if (v <= 0xff)
            return put_tagged_be(out, 0xcc, v, 1);
        if (v <= 0xffff)
            return put_tagged_be(out, 0xcd, v, 2);
        if (v <= 0xffffffffULL)
            return put_tagged_be(out, 0xce, v, 4);
        return put_tagged_be(out, 0xcf, v, 8);
    }
    if (value >= -32) {
        unsigned char tag = (unsigned char)(int8_t)value;
        return put_bytes(out, &tag, 1);
    }
    if (value >= -128)
        return put_tagged_be(out, 0xd0, (uint64_t)value, 1);
    if (value >= -32768)
        return put_tagged_be(out, 0xd1, (uint64_t)value, 2);
    if (value >= -2147483648LL)
        return put_tagged_be(out, 0xd2, (uint64_t)value, 4);
    return put_tagged_be(out, 0xd3, (uint64_t)value, 8);
}

static int pack_float(buffer *out, double value) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return put_tagged_be(out, 0xcb, bits, 8);
}

static int pack_sized(buffer *out, const unsigned char *bytes, size_t size, int text) {
    int result;
    if (text && size < 32) {
        unsigned char tag = (unsigned char)(0xa0 | size);
        result = put_bytes(out, &tag, 1);
    } else if (size <= 0xff) {
        result = put_tagged_be(out, text ? 0xd9 : 0xc4, size, 1);
    } else if (size <= 0xffff) {
        result = put_tagged_be(out, text ? 0xda : 0xc5, size, 2);
    } else if (size <= 0xffffffffULL) {
        result = put_tagged_be(out, text ? 0xdb : 0xc6, size, 4);
    } else {
        PyErr_SetString(PyExc_ValueError, "a value of 4 GiB or more cannot be hashed");
        return -1;
    }
    return result < 0 ? -1 : put_bytes(out, bytes, size);
}

/* SQLite stores whatever bytes a TEXT value was given; apsw decodes TEXT strictly, so the
 * Python reference refuses invalid UTF-8 with UnicodeDecodeError.  The same error here, so
 * the two paths agree on which batches can be hashed (and a full build can follow). */
static int check_utf8(const value_view *value) {
    for (size_t i = 0; i < value->size; i++) {
        if (value->bytes[i] & 0x80) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)value->bytes, (Py_ssize_t)value->size, NULL);
            if (!text)
                return -1;
            Py_DECREF(text);
            return 0;
        }
    }
    return 0;
}

static int pack_value(buffer *out, const value_view *value) {
    switch (value->type) {
    case VALUE_INTEGER:
        return pack_integer(out, value->integer);
    case VALUE_FLOAT:
        return pack_float(out, value->real);
    case VALUE_TEXT:
        if (check_utf8(value) < 0)
            return -1;
        return pack_sized(out, value->bytes, value->size, 1);
    case VALUE_BLOB:
        return pack_sized(out, value->bytes, value->size, 0);
    case VALUE_NULL: {
        unsigned char tag = 0xc0;
        return put_bytes(out, &tag, 1);
    }
    default:
        PyErr_SetString(PyExc_ValueError, "a row value is absent from the changeset");
        return -1;
    }
}

static u128 hash128(const buffer *bytes) {
    xxh128_value value = xxh3_128(bytes->data, bytes->size);
    return ((u128)value.high64 << 64) | value.low64;
}

/* merkle.row_hash: xxh3-128 of msgpack([table, [values...]]). */
static int row_hash_of_values(buffer *scratch, const char *table, size_t table_size, const value_view *values,
                              int columns, u128 *hash) {
    scratch->size = 0;
    if (pack_array_header(scratch, 2) < 0 || pack_sized(scratch, (const unsigned char *)table, table_size, 1) < 0 ||
        pack_array_header(scratch, (size_t)columns) < 0)
        return -1;
    for (int i = 0; i < columns; i++)
        if (pack_value(scratch, &values[i]) < 0)
            return -1;
    *hash = hash128(scratch);
    return 0;
}

/* merkle.page_of: a lone integer key is a range page, any other key one of the hash pages. */
static int page_of_key(buffer *scratch, const value_view *values, const int *key_columns, int key_count,
                       int64_t *page) {
    if (key_count == 1 && values[key_columns[0]].type == VALUE_INTEGER) {
        int64_t key = values[key_columns[0]].integer;
        int64_t quotient = key / rows_per_page;
        if (key % rows_per_page != 0 && key < 0)
            quotient -= 1; /* Python's // rounds toward minus infinity */
        *page = quotient * 2;
        return 0;
    }
    scratch->size = 0;
    if (pack_array_header(scratch, (size_t)key_count) < 0)
        return -1;
    for (int i = 0; i < key_count; i++)
        if (pack_value(scratch, &values[key_columns[i]]) < 0)
            return -1;
    *page = (int64_t)(xxh3_64(scratch->data, scratch->size) % hash_buckets) * 2 + 1;
    return 0;
}

/* --- reading a changeset --- */

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t at;
} changeset_reader;

static int malformed(const char *what) {
    PyErr_Format(PyExc_ValueError, "malformed changeset: %s", what);
    return -1;
}

/* SQLite's varint: big-endian groups of 7 bits, the high bit set on all but the last; a
 * ninth byte carries 8 bits. */
static int read_varint(changeset_reader *in, uint64_t *value) {
    uint64_t result = 0;
    for (int i = 0; i < 9; i++) {
        if (in->at >= in->size)
            return malformed("a varint runs past the end");
        unsigned char byte = in->data[in->at++];
        if (i == 8) {
            *value = (result << 8) | byte;
            return 0;
        }
        result = (result << 7) | (byte & 0x7f);
        if (!(byte & 0x80)) {
            *value = result;
            return 0;
        }
    }
    return malformed("a varint is too long");
}

static uint64_t read_be64(const unsigned char *bytes) {
    uint64_t value = 0;
    for (int i = 0; i < 8; i++)
        value = (value << 8) | bytes[i];
    return value;
}

static int read_record(changeset_reader *in, value_view *values, int columns) {
    for (int i = 0; i < columns; i++) {
        if (in->at >= in->size)
            return malformed("a record runs past the end");
        value_view *value = &values[i];
        value->type = in->data[in->at++];
        switch (value->type) {
        case VALUE_ABSENT:
        case VALUE_NULL:
            break;
        case VALUE_INTEGER:
        case VALUE_FLOAT: {
            if (in->size - in->at < 8)
                return malformed("a number runs past the end");
            uint64_t bits = read_be64(in->data + in->at);
            in->at += 8;
            if (value->type == VALUE_INTEGER)
                value->integer = (int64_t)bits;
            else
                memcpy(&value->real, &bits, sizeof bits);
            break;
        }
        case VALUE_TEXT:
        case VALUE_BLOB: {
            uint64_t size;
            if (read_varint(in, &size) < 0)
                return -1;
            if (size > in->size - in->at)
                return malformed("a text or blob runs past the end");
            value->bytes = in->data + in->at;
            value->size = (size_t)size;
            in->at += (size_t)size;
            break;
        }
        default:
            return malformed("unknown value type");
        }
    }
    return 0;
}

/* --- completing a partial UPDATE by reading the row --- */

/* A connection's row reads, one prepared statement per table, kept between calls (preparing
 * costs more than reading: the authorizer is asked about every column).  The apsw
 * Connection is referenced, so it outlives the statements; close() finalizes them and must
 * come before the connection's own close (evedb's Worker.close does that). */
#define READER_SLOTS 32

typedef struct {
    PyObject_HEAD
    PyObject *connection;
    sqlite3 *db;
    PyObject *row_select; /* callable: table -> SQL of one row by key */
    int next_slot;
    PyObject *tables[READER_SLOTS];
    PyObject *sqls[READER_SLOTS];
    sqlite3_stmt *statements[READER_SLOTS];
} RowReader;

static void row_reader_close_all(RowReader *reader) {
    for (int i = 0; i < READER_SLOTS; i++) {
        if (reader->statements[i])
            sqlite3_finalize(reader->statements[i]);
        reader->statements[i] = NULL;
        Py_CLEAR(reader->tables[i]);
        Py_CLEAR(reader->sqls[i]);
    }
    reader->db = NULL;
    Py_CLEAR(reader->row_select);
    Py_CLEAR(reader->connection);
}

/* One call's use of a RowReader: the statement of the table being read. */
typedef struct {
    RowReader *reader;
    sqlite3_stmt *statement;
    int looked_up; /* the current table's statement was looked for */
} row_reader;

static void row_reader_next_table(row_reader *rows) {
    rows->statement = NULL;
    rows->looked_up = 0;
}

static int sqlite_failed(sqlite3 *db, const char *doing) {
    PyErr_Format(PyExc_RuntimeError, "evedb._tokenhash: %s: %s", doing, sqlite3_errmsg(db));
    return -1;
}

static int bind_value(sqlite3_stmt *statement, int index, const value_view *value) {
    static const char empty[1] = {0};
    switch (value->type) {
    case VALUE_INTEGER:
        return sqlite3_bind_int64(statement, index, value->integer);
    case VALUE_FLOAT:
        return sqlite3_bind_double(statement, index, value->real);
    case VALUE_TEXT:
        return sqlite3_bind_text64(statement, index, value->size ? (const char *)value->bytes : empty, value->size,
                                   SQLITE_TRANSIENT, SQLITE_UTF8);
    case VALUE_BLOB:
        return sqlite3_bind_blob64(statement, index, value->size ? (const void *)value->bytes : empty, value->size,
                                   SQLITE_TRANSIENT);
    default:
        return sqlite3_bind_null(statement, index);
    }
}

/* Reads the row with old's key into `row` (pointers valid until the statement is reset).
 * Returns 1 when read, 0 when this table cannot be read here (the caller hands the change
 * back to Python), -1 on error. */
static int sqlite_failed(sqlite3 *db, const char *doing);

/* The reader's statement for `table`, prepared if its SQL is new; NULL without an error when
 * that SQL does not read exactly the changeset's columns by the key's columns. */
static sqlite3_stmt *statement_for(RowReader *reader, PyObject *table, int columns, int key_count) {
    PyObject *sql = PyObject_CallOneArg(reader->row_select, table);
    if (!sql)
        return NULL;
    if (!PyUnicode_Check(sql)) {
        Py_DECREF(sql);
        PyErr_SetString(PyExc_TypeError, "row_select must return the SQL text");
        return NULL;
    }
    int slot = -1;
    for (int i = 0; i < READER_SLOTS && slot < 0; i++)
        if (reader->tables[i] && PyUnicode_Compare(reader->tables[i], table) == 0)
            slot = i;
    if (slot >= 0 && PyUnicode_Compare(reader->sqls[slot], sql) == 0) {
        Py_DECREF(sql);
        sqlite3_stmt *statement = reader->statements[slot];
        /* Re-checked on every use: the same SQL reads more columns after an ALTER TABLE. */
        if (sqlite3_column_count(statement) != columns || sqlite3_bind_parameter_count(statement) != key_count)
            return NULL;
        return statement;
    }
    if (slot < 0) { /* a free slot, or the next one round-robin */
        slot = reader->next_slot;
        reader->next_slot = (reader->next_slot + 1) % READER_SLOTS;
    }
    if (reader->statements[slot])
        sqlite3_finalize(reader->statements[slot]);
    reader->statements[slot] = NULL;
    Py_CLEAR(reader->tables[slot]);
    Py_CLEAR(reader->sqls[slot]);
    const char *text = PyUnicode_AsUTF8(sql);
    sqlite3_stmt *statement = NULL;
    int status = text ? sqlite3_prepare_v3(reader->db, text, -1, SQLITE_PREPARE_PERSISTENT, &statement, NULL)
                      : SQLITE_ERROR;
    if (!text || status != SQLITE_OK) {
        Py_DECREF(sql);
        if (statement)
            sqlite3_finalize(statement);
        /* The authorizer may have raised in Python: that error wins. */
        if (!PyErr_Occurred())
            sqlite_failed(reader->db, "preparing a row read");
        return NULL;
    }
    reader->statements[slot] = statement;
    reader->tables[slot] = Py_NewRef(table);
    reader->sqls[slot] = sql;
    if (sqlite3_column_count(statement) != columns || sqlite3_bind_parameter_count(statement) != key_count)
        return NULL;
    return statement;
}

/* Reads the row with old's key into `row` (pointers valid until the statement is reset; the
 * caller resets it).  Returns 1 when read, 0 when this table cannot be read here (the
 * caller hands the change back to Python), -1 on error. */
static int read_current_row(row_reader *rows, PyObject *table, const value_view *old, const int *key_columns,
                            int key_count, value_view *row, int columns) {
    if (!rows->reader)
        return 0;
    if (!rows->looked_up) {
        rows->looked_up = 1;
        rows->statement = statement_for(rows->reader, table, columns, key_count);
        if (!rows->statement && PyErr_Occurred())
            return -1;
    }
    if (!rows->statement)
        return 0;
    sqlite3_stmt *statement = rows->statement;
    sqlite3 *db = rows->reader->db;
    for (int i = 0; i < key_count; i++)
        if (bind_value(statement, i + 1, &old[key_columns[i]]) != SQLITE_OK)
            return sqlite_failed(db, "binding a key");
    int status = sqlite3_step(statement);
    if (status != SQLITE_ROW) {
        if (status == SQLITE_DONE) {
            PyErr_SetString(PyExc_RuntimeError, "evedb._tokenhash: an updated row is not in its table");
            return -1;
        }
        return PyErr_Occurred() ? -1 : sqlite_failed(db, "reading an updated row");
    }
    for (int i = 0; i < columns; i++) {
        value_view *value = &row[i];
        value->type = sqlite3_column_type(statement, i);
        switch (value->type) {
        case SQLITE_INTEGER:
            value->type = VALUE_INTEGER;
            value->integer = sqlite3_column_int64(statement, i);
            break;
        case SQLITE_FLOAT:
            value->type = VALUE_FLOAT;
            value->real = sqlite3_column_double(statement, i);
            break;
        case SQLITE_TEXT:
            value->type = VALUE_TEXT;
            value->bytes = sqlite3_column_text(statement, i);
            value->size = (size_t)sqlite3_column_bytes(statement, i);
            break;
        case SQLITE_BLOB:
            value->type = VALUE_BLOB;
            value->bytes = sqlite3_column_blob(statement, i);
            value->size = (size_t)sqlite3_column_bytes(statement, i);
            break;
        default:
            value->type = VALUE_NULL;
        }
    }
    return 1;
}

static PyObject *value_object(const value_view *value, PyObject *no_change) {
    switch (value->type) {
    case VALUE_INTEGER:
        return PyLong_FromLongLong(value->integer);
    case VALUE_FLOAT:
        return PyFloat_FromDouble(value->real);
    case VALUE_TEXT:
        return PyUnicode_DecodeUTF8((const char *)value->bytes, (Py_ssize_t)value->size, NULL);
    case VALUE_BLOB:
        return PyBytes_FromStringAndSize((const char *)value->bytes, (Py_ssize_t)value->size);
    case VALUE_NULL:
        Py_RETURN_NONE;
    default:
        return Py_NewRef(no_change);
    }
}

static PyObject *record_tuple(const value_view *values, int columns, PyObject *no_change) {
    PyObject *row = PyTuple_New(columns);
    if (!row)
        return NULL;
    for (int i = 0; i < columns; i++) {
        PyObject *item = value_object(&values[i], no_change);
        if (!item) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, i, item);
    }
    return row;
}

static PyObject *u128_object(u128 value) {
    PyObject *high = PyLong_FromUnsignedLongLong((uint64_t)(value >> 64));
    PyObject *low = PyLong_FromUnsignedLongLong((uint64_t)value);
    PyObject *shift = PyLong_FromLong(64);
    PyObject *shifted = high && shift ? PyNumber_Lshift(high, shift) : NULL;
    PyObject *result = shifted && low ? PyNumber_Or(shifted, low) : NULL;
    Py_XDECREF(high);
    Py_XDECREF(low);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    return result;
}

/* One table's running page sums: a small open-addressing map from page number to sum. */
typedef struct {
    int64_t *pages;
    u128 *sums;
    unsigned char *used;
    size_t capacity;
    size_t count;
} page_sums;

static void page_sums_free(page_sums *sums) {
    PyMem_Free(sums->pages);
    PyMem_Free(sums->sums);
    PyMem_Free(sums->used);
    memset(sums, 0, sizeof *sums);
}

/* Fibonacci hashing: the product's high bits, so keys spaced by a power of two spread too. */
static size_t page_slot(int64_t page, size_t capacity) {
    int bits = 0;
    while (((size_t)1 << bits) < capacity)
        bits++;
    return bits ? (size_t)(((uint64_t)page * 0x9E3779B97F4A7C15ULL) >> (64 - bits)) : 0;
}

static int page_sums_grow(page_sums *sums) {
    page_sums bigger = {0};
    bigger.capacity = sums->capacity ? sums->capacity * 2 : 64;
    bigger.pages = PyMem_Calloc(bigger.capacity, sizeof *bigger.pages);
    bigger.sums = PyMem_Calloc(bigger.capacity, sizeof *bigger.sums);
    bigger.used = PyMem_Calloc(bigger.capacity, 1);
    if (!bigger.pages || !bigger.sums || !bigger.used) {
        page_sums_free(&bigger);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < sums->capacity; i++) {
        if (!sums->used[i])
            continue;
        size_t slot = page_slot(sums->pages[i], bigger.capacity);
        while (bigger.used[slot])
            slot = (slot + 1) & (bigger.capacity - 1);
        bigger.used[slot] = 1;
        bigger.pages[slot] = sums->pages[i];
        bigger.sums[slot] = sums->sums[i];
    }
    bigger.count = sums->count;
    page_sums_free(sums);
    *sums = bigger;
    return 0;
}

static int page_sums_add(page_sums *sums, int64_t page, u128 delta) {
    if ((sums->count + 1) * 2 > sums->capacity && page_sums_grow(sums) < 0)
        return -1;
    size_t slot = page_slot(page, sums->capacity);
    while (sums->used[slot] && sums->pages[slot] != page)
        slot = (slot + 1) & (sums->capacity - 1);
    if (!sums->used[slot]) {
        sums->used[slot] = 1;
        sums->pages[slot] = page;
        sums->sums[slot] = 0;
        sums->count++;
    }
    sums->sums[slot] += delta; /* unsigned: wraps modulo 2**128, as merkle.py's sums do */
    return 0;
}

/* Adds one table's sums to the deltas dict (a table may in principle come back in a later
 * header of the same changeset, so existing entries are added to, not replaced). */
static int page_sums_flush(page_sums *sums, PyObject *table, PyObject *deltas) {
    static PyObject *modulus = NULL;
    if (!modulus) {
        PyObject *one = PyLong_FromLong(1);
        PyObject *shift = PyLong_FromLong(128);
        modulus = one && shift ? PyNumber_Lshift(one, shift) : NULL;
        Py_XDECREF(one);
        Py_XDECREF(shift);
        if (!modulus)
            return -1;
    }
    for (size_t i = 0; i < sums->capacity; i++) {
        if (!sums->used[i])
            continue;
        PyObject *page = PyLong_FromLongLong(sums->pages[i]);
        PyObject *key = page ? PyTuple_Pack(2, table, page) : NULL;
        Py_XDECREF(page);
        PyObject *value = key ? u128_object(sums->sums[i]) : NULL;
        if (!value) {
            Py_XDECREF(key);
            return -1;
        }
        PyObject *existing = PyDict_GetItemWithError(deltas, key);
        if (existing) {
            PyObject *total = PyNumber_Add(existing, value);
            Py_DECREF(value);
            value = total ? PyNumber_Remainder(total, modulus) : NULL;
            Py_XDECREF(total);
        } else if (PyErr_Occurred()) {
            Py_DECREF(value);
            value = NULL;
        }
        int failed = !value || PyDict_SetItem(deltas, key, value) < 0;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (failed)
            return -1;
    }
    if (sums->capacity)
        memset(sums->used, 0, sums->capacity);
    sums->count = 0;
    return 0;
}

static PyTypeObject RowReaderType;

static int not_configured(void) {
    if (xxh3_128 && xxh3_64)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "evedb._tokenhash.configure() has not been called");
    return -1;
}

static PyObject *changeset_deltas(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer changeset;
    PyObject *no_change, *reader_object = Py_None;
    if (!PyArg_ParseTuple(args, "y*O|O", &changeset, &no_change, &reader_object))
        return NULL;
    if (not_configured() < 0) {
        PyBuffer_Release(&changeset);
        return NULL;
    }
    row_reader rows = {NULL, NULL, 0};
    if (reader_object != Py_None) {
        if (!PyObject_TypeCheck(reader_object, &RowReaderType) || !((RowReader *)reader_object)->db) {
            PyBuffer_Release(&changeset);
            PyErr_SetString(PyExc_ValueError, "the reader must be an open RowReader");
            return NULL;
        }
        rows.reader = (RowReader *)reader_object;
    }
    changeset_reader in = {changeset.buf, (size_t)changeset.len, 0};
    buffer scratch = {0};
    page_sums sums = {0};
    value_view *old_values = NULL, *new_values = NULL, *row = NULL;
    int *key_columns = NULL;
    int columns = 0, key_count = 0;
    const char *table_name = NULL;
    size_t table_size = 0;
    PyObject *table = NULL, *key_tuple = NULL;
    PyObject *deltas = PyDict_New();
    PyObject *partial = PyList_New(0);
    PyObject *result = NULL;
    if (!deltas || !partial)
        goto done;

    while (in.at < in.size) {
        unsigned char marker = in.data[in.at];
        if (marker == 'T') {
            /* A table header: column count, one primary-key flag per column, the name. */
            in.at++;
            if (table && page_sums_flush(&sums, table, deltas) < 0)
                goto done;
            row_reader_next_table(&rows);
            uint64_t count;
            if (read_varint(&in, &count) < 0)
                goto done;
            if (count == 0 || count > 32767 || count > in.size - in.at) {
                malformed("bad column count");
                goto done;
            }
            columns = (int)count;
            PyMem_Free(old_values);
            PyMem_Free(new_values);
            PyMem_Free(row);
            PyMem_Free(key_columns);
            old_values = PyMem_Calloc(columns, sizeof *old_values);
            new_values = PyMem_Calloc(columns, sizeof *new_values);
            row = PyMem_Calloc(columns, sizeof *row);
            key_columns = PyMem_Calloc(columns, sizeof *key_columns);
            if (!old_values || !new_values || !row || !key_columns) {
                PyErr_NoMemory();
                goto done;
            }
            key_count = 0;
            for (int i = 0; i < columns; i++)
                if (in.data[in.at + i])
                    key_columns[key_count++] = i; /* ascending column order, as merkle.py keys are */
            in.at += columns;
            const unsigned char *end = memchr(in.data + in.at, 0, in.size - in.at);
            if (!end) {
                malformed("a table name is not terminated");
                goto done;
            }
            table_name = (const char *)(in.data + in.at);
            table_size = (size_t)(end - (in.data + in.at));
            in.at += table_size + 1;
            Py_XDECREF(table);
            Py_CLEAR(key_tuple);
            table = PyUnicode_DecodeUTF8(table_name, (Py_ssize_t)table_size, NULL);
            if (!table)
                goto done;
            key_tuple = PyTuple_New(key_count);
            if (!key_tuple)
                goto done;
            for (int i = 0; i < key_count; i++) {
                PyObject *index = PyLong_FromLong(key_columns[i]);
                if (!index)
                    goto done;
                PyTuple_SET_ITEM(key_tuple, i, index);
            }
            continue;
        }
        if (!table) {
            malformed("a change comes before any table header");
            goto done;
        }
        if (in.size - in.at < 2) {
            malformed("a change header runs past the end");
            goto done;
        }
        unsigned char operation = in.data[in.at];
        in.at += 2; /* the operation and the "indirect" flag */
        u128 delta, old_hash, new_hash;
        int64_t page;
        if (operation == OP_INSERT || operation == OP_DELETE) {
            if (read_record(&in, old_values, columns) < 0 ||
                row_hash_of_values(&scratch, table_name, table_size, old_values, columns, &old_hash) < 0 ||
                page_of_key(&scratch, old_values, key_columns, key_count, &page) < 0)
                goto done;
            delta = operation == OP_INSERT ? old_hash : (u128)0 - old_hash;
        } else if (operation == OP_UPDATE) {
            if (read_record(&in, old_values, columns) < 0 || read_record(&in, new_values, columns) < 0)
                goto done;
            int complete = 1;
            for (int i = 0; i < columns; i++) {
                if (old_values[i].type == VALUE_ABSENT)
                    complete = 0;
                row[i] = new_values[i].type == VALUE_ABSENT ? old_values[i] : new_values[i];
            }
            if (!complete) {
                /* The new row as it is now; the old one is that with the changed columns' old
                 * values (every column the UPDATE changed has its old value in the change). */
                int read = read_current_row(&rows, table, old_values, key_columns, key_count, row, columns);
                if (read < 0)
                    goto done;
                if (read) {
                    for (int i = 0; i < columns; i++)
                        if (old_values[i].type == VALUE_ABSENT)
                            old_values[i] = row[i];
                    int failed = row_hash_of_values(&scratch, table_name, table_size, old_values, columns, &old_hash) < 0 ||
                                 row_hash_of_values(&scratch, table_name, table_size, row, columns, &new_hash) < 0 ||
                                 page_of_key(&scratch, old_values, key_columns, key_count, &page) < 0;
                    sqlite3_reset(rows.statement); /* no read stays open past its row */
                    if (failed || page_sums_add(&sums, page, new_hash - old_hash) < 0)
                        goto done;
                    continue;
                }
                /* Columns the UPDATE left alone are not in the changeset: the caller reads them. */
                PyObject *old_row = record_tuple(old_values, columns, no_change);
                PyObject *entry = old_row ? PyTuple_Pack(3, table, key_tuple, old_row) : NULL;
                Py_XDECREF(old_row);
                int failed = !entry || PyList_Append(partial, entry) < 0;
                Py_XDECREF(entry);
                if (failed)
                    goto done;
                continue;
            }
            if (row_hash_of_values(&scratch, table_name, table_size, old_values, columns, &old_hash) < 0 ||
                row_hash_of_values(&scratch, table_name, table_size, row, columns, &new_hash) < 0 ||
                page_of_key(&scratch, old_values, key_columns, key_count, &page) < 0)
                goto done;
            delta = new_hash - old_hash;
        } else {
            malformed("unknown operation");
            goto done;
        }
        if (page_sums_add(&sums, page, delta) < 0)
            goto done;
    }
    if (table && page_sums_flush(&sums, table, deltas) < 0)
        goto done;
    result = PyTuple_Pack(2, deltas, partial);

done:
    if (rows.statement)
        sqlite3_reset(rows.statement);
    PyBuffer_Release(&changeset);
    PyMem_Free(scratch.data);
    page_sums_free(&sums);
    PyMem_Free(old_values);
    PyMem_Free(new_values);
    PyMem_Free(row);
    PyMem_Free(key_columns);
    Py_XDECREF(table);
    Py_XDECREF(key_tuple);
    Py_XDECREF(deltas);
    Py_XDECREF(partial);
    return result;
}

/* A Python value as the changeset would have carried it. */
static int value_of_object(PyObject *object, value_view *value) {
    if (object == Py_None) {
        value->type = VALUE_NULL;
    } else if (PyLong_CheckExact(object)) {
        int overflow = 0;
        value->type = VALUE_INTEGER;
        value->integer = PyLong_AsLongLongAndOverflow(object, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "SQLite integers are 64-bit");
            return -1;
        }
        if (value->integer == -1 && PyErr_Occurred())
            return -1;
    } else if (PyFloat_CheckExact(object)) {
        value->type = VALUE_FLOAT;
        value->real = PyFloat_AS_DOUBLE(object);
    } else if (PyUnicode_CheckExact(object)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(object, &size);
        if (!text)
            return -1;
        value->type = VALUE_TEXT;
        value->bytes = (const unsigned char *)text;
        value->size = (size_t)size;
    } else if (PyBytes_CheckExact(object)) {
        value->type = VALUE_BLOB;
        value->bytes = (const unsigned char *)PyBytes_AS_STRING(object);
        value->size = (size_t)PyBytes_GET_SIZE(object);
    } else {
        PyErr_Format(PyExc_TypeError, "not a SQLite value: %R", object);
        return -1;
    }
    return 0;
}

static PyObject *row_hash(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *table, *row;
    if (!PyArg_ParseTuple(args, "UO!", &table, &PyTuple_Type, &row))
        return NULL;
    if (not_configured() < 0)
        return NULL;
    Py_ssize_t table_size;
    const char *table_name = PyUnicode_AsUTF8AndSize(table, &table_size);
    if (!table_name)
        return NULL;
    Py_ssize_t columns = PyTuple_GET_SIZE(row);
    value_view *values = PyMem_Calloc(columns ? columns : 1, sizeof *values);
    if (!values)
        return PyErr_NoMemory();
    buffer scratch = {0};
    PyObject *result = NULL;
    u128 hash;
    for (Py_ssize_t i = 0; i < columns; i++)
        if (value_of_object(PyTuple_GET_ITEM(row, i), &values[i]) < 0)
            goto done;
    if (row_hash_of_values(&scratch, table_name, (size_t)table_size, values, (int)columns, &hash) < 0)
        goto done;
    result = u128_object(hash);
done:
    PyMem_Free(values);
    PyMem_Free(scratch.data);
    return result;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    (void)module;
    const char *library;
    long long page_rows;
    unsigned long long buckets;
    if (!PyArg_ParseTuple(args, "sLK", &library, &page_rows, &buckets))
        return NULL;
    if (page_rows < 2 || buckets == 0) {
        PyErr_SetString(PyExc_ValueError, "rows per page must be 2 or more and hash buckets positive");
        return NULL;
    }
    /* RTLD_NOLOAD: only a library Python has already imported (the xxhash module) is used. */
    void *handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
    if (!handle) {
        PyErr_Format(PyExc_OSError, "the xxhash library is not loaded: %s", dlerror());
        return NULL;
    }
    void *hash_128 = dlsym(handle, "XXH3_128bits");
    void *hash_64 = dlsym(handle, "XXH3_64bits");
    dlclose(handle); /* the module keeps the library loaded */
    if (!hash_128 || !hash_64) {
        PyErr_SetString(PyExc_OSError, "the xxhash library does not export XXH3_128bits and XXH3_64bits");
        return NULL;
    }
    *(void **)&xxh3_128 = hash_128;
    *(void **)&xxh3_64 = hash_64;
    rows_per_page = page_rows;
    hash_buckets = buckets;
    Py_RETURN_NONE;
}

/* --- a batch's replies: codec.encode_replies in C --- */

/* Attribute names of the reply dataclasses (evedb/messages.py), interned once. */
static PyObject *name_client_id, *name_request_id, *name_results, *name_error, *name_columns, *name_rows,
    *name_rowcount, *name_lastrowid, *name_name, *name_decltype, *name_kind, *name_message;

/* Set when a value is outside what this encoder writes (a dict from a procedure, say): the
 * caller then encodes the batch in Python, which writes it or raises as it always did. */
static PyObject *NotEncodable;

static int pack_nested(buffer *out, PyObject *value, int depth);

/* Nesting deeper than msgpack-python's own limit (or a list that holds itself) is left to it,
 * so both paths fail the same way, and the C stack never overflows. */
#define MAX_NESTING 256

static int pack_sequence(buffer *out, PyObject *sequence, int depth) {
    if (depth > MAX_NESTING) {
        PyErr_SetString(NotEncodable, "nesting too deep");
        return -1;
    }
    PyObject *fast = PySequence_Fast(sequence, "not a sequence");
    if (!fast)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    int result = pack_array_header(out, (size_t)count);
    for (Py_ssize_t i = 0; result == 0 && i < count; i++)
        result = pack_nested(out, items[i], depth + 1);
    Py_DECREF(fast);
    return result;
}

/* A value as msgpack-python's packb(use_bin_type=True) writes it: None, bool, int, float,
 * str, bytes, and tuples and lists of those; anything else raises NotEncodable. */
static int pack_nested(buffer *out, PyObject *value, int depth) {
    if (value == Py_None) {
        unsigned char tag = 0xc0;
        return put_bytes(out, &tag, 1);
    }
    if (PyBool_Check(value)) {
        unsigned char tag = value == Py_True ? 0xc3 : 0xc2;
        return put_bytes(out, &tag, 1);
    }
    if (PyLong_Check(value)) {
        int overflow = 0;
        long long integer = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (integer == -1 && PyErr_Occurred())
            return -1;
        if (!overflow)
            return pack_integer(out, integer);
        if (overflow > 0) {
            unsigned long long large = PyLong_AsUnsignedLongLong(value);
            if (large == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                PyErr_SetString(NotEncodable, "an integer beyond 64 bits");
                return -1;
            }
            return put_tagged_be(out, 0xcf, large, 8);
        }
        PyErr_SetString(NotEncodable, "an integer beyond 64 bits");
        return -1;
    }
    if (PyFloat_Check(value))
        return pack_float(out, PyFloat_AS_DOUBLE(value));
    if (PyUnicode_Check(value)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(value, &size);
        if (!text) {
            PyErr_Clear(); /* a lone surrogate: msgpack-python refuses it too, in its own words */
            PyErr_SetString(NotEncodable, "text that is not UTF-8");
            return -1;
        }
        return pack_sized(out, (const unsigned char *)text, (size_t)size, 1);
    }
    if (PyBytes_Check(value))
        return pack_sized(out, (const unsigned char *)PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value), 0);
    if (PyTuple_Check(value) || PyList_Check(value))
        return pack_sequence(out, value, depth);
    PyErr_Format(NotEncodable, "a %.100s", Py_TYPE(value)->tp_name);
    return -1;
}

static int pack_object(buffer *out, PyObject *value) {
    return pack_nested(out, value, 0);
}

/* Packs getattr(object, name) with pack_object. */
static int pack_attribute(buffer *out, PyObject *object, PyObject *name) {
    PyObject *value = PyObject_GetAttr(object, name);
    if (!value)
        return -1;
    int result = pack_object(out, value);
    Py_DECREF(value);
    return result;
}

/* One StatementResult: [[(name, decltype), ...], rows, rowcount, lastrowid]. */
static int pack_statement_result(buffer *out, PyObject *result) {
    if (pack_array_header(out, 4) < 0)
        return -1;
    PyObject *columns = PyObject_GetAttr(result, name_columns);
    if (!columns)
        return -1;
    PyObject *fast = PySequence_Fast(columns, "columns must be a sequence");
    Py_DECREF(columns);
    if (!fast)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    int status = pack_array_header(out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++) {
        PyObject *column = PySequence_Fast_GET_ITEM(fast, i);
        status = pack_array_header(out, 2);
        if (status == 0)
            status = pack_attribute(out, column, name_name);
        if (status == 0)
            status = pack_attribute(out, column, name_decltype);
    }
    Py_DECREF(fast);
    if (status < 0 || pack_attribute(out, result, name_rows) < 0 || pack_attribute(out, result, name_rowcount) < 0)
        return -1;
    return pack_attribute(out, result, name_lastrowid);
}

/* One Reply: [client_id, request_id, [result, ...], None | [kind, message]]. */
static int pack_reply(buffer *out, PyObject *reply) {
    if (pack_array_header(out, 4) < 0 || pack_attribute(out, reply, name_client_id) < 0 ||
        pack_attribute(out, reply, name_request_id) < 0)
        return -1;
    PyObject *results = PyObject_GetAttr(reply, name_results);
    if (!results)
        return -1;
    PyObject *fast = PySequence_Fast(results, "results must be a sequence");
    Py_DECREF(results);
    if (!fast)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    int status = pack_array_header(out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++)
        status = pack_statement_result(out, PySequence_Fast_GET_ITEM(fast, i));
    Py_DECREF(fast);
    if (status < 0)
        return -1;
    PyObject *error = PyObject_GetAttr(reply, name_error);
    if (!error)
        return -1;
    if (error == Py_None) {
        Py_DECREF(error);
        unsigned char tag = 0xc0;
        return put_bytes(out, &tag, 1);
    }
    status = pack_array_header(out, 2);
    if (status == 0)
        status = pack_attribute(out, error, name_kind);
    if (status == 0)
        status = pack_attribute(out, error, name_message);
    Py_DECREF(error);
    return status;
}

static PyObject *encode_replies(PyObject *module, PyObject *replies) {
    (void)module;
    PyObject *fast = PySequence_Fast(replies, "replies must be a sequence");
    if (!fast)
        return NULL;
    buffer out = {0};
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    int status = pack_array_header(&out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++)
        status = pack_reply(&out, PySequence_Fast_GET_ITEM(fast, i));
    Py_DECREF(fast);
    PyObject *result = status == 0 ? PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.size) : NULL;
    PyMem_Free(out.data);
    return result;
}

static PyObject *encode_reply(PyObject *module, PyObject *reply) {
    (void)module;
    buffer out = {0};
    PyObject *result = pack_reply(&out, reply) == 0
                           ? PyBytes_FromStringAndSize((const char *)out.data, (Py_ssize_t)out.size)
                           : NULL;
    PyMem_Free(out.data);
    return result;
}

static int intern_names(void) {
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&name_client_id, "client_id"}, {&name_request_id, "request_id"}, {&name_results, "results"},
        {&name_error, "error"}, {&name_columns, "columns"}, {&name_rows, "rows"},
        {&name_rowcount, "rowcount"}, {&name_lastrowid, "lastrowid"}, {&name_name, "name"},
        {&name_decltype, "decltype"}, {&name_kind, "kind"}, {&name_message, "message"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].slot && !(*names[i].slot = PyUnicode_InternFromString(names[i].text)))
            return -1;
    return 0;
}

static PyMethodDef tokenhash_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(xxhash_library, rows_per_page, hash_buckets): bind xxh3 and the page geometry."},
    {"changeset_deltas", changeset_deltas, METH_VARARGS,
     "changeset_deltas(changeset, no_change[, reader]) -> (deltas, partial_updates)."},
    {"row_hash", row_hash, METH_VARARGS, "row_hash(table, row) -> int: merkle.row_hash, in C."},
    {"encode_reply", encode_reply, METH_O, "encode_reply(reply) -> bytes: codec.encode_reply, in C."},
    {"encode_replies", encode_replies, METH_O,
     "encode_replies(replies) -> bytes: codec.encode_replies, in C; NotEncodable for other values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef tokenhash_module = {
    PyModuleDef_HEAD_INIT, "evedb._tokenhash",
    "Merkle page deltas of a changeset, in C (see evedb/merkle.py for the definitions).", -1, tokenhash_methods,
};

/* --- the RowReader type --- */

static int RowReader_init(RowReader *self, PyObject *args, PyObject *kwargs) {
    PyObject *connection, *row_select;
    static char *names[] = {"connection", "row_select", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:RowReader", names, &connection, &row_select))
        return -1;
    if (!sqlite3_api) {
        PyErr_SetString(PyExc_RuntimeError, "evedb._tokenhash was not loaded as a SQLite extension");
        return -1;
    }
    if (!PyCallable_Check(row_select)) {
        PyErr_SetString(PyExc_TypeError, "row_select must be callable");
        return -1;
    }
    PyObject *pointer = PyObject_CallMethod(connection, "sqlite3pointer", NULL);
    if (!pointer)
        return -1;
    void *db = PyLong_AsVoidPtr(pointer);
    Py_DECREF(pointer);
    if (!db) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the connection is closed");
        return -1;
    }
    row_reader_close_all(self);
    self->connection = Py_NewRef(connection);
    self->row_select = Py_NewRef(row_select);
    self->db = db;
    return 0;
}

static PyObject *RowReader_close(RowReader *self, PyObject *unused) {
    (void)unused;
    row_reader_close_all(self);
    Py_RETURN_NONE;
}

/* A Worker holds its reader, and the reader its Worker's bound row_select: a cycle, so the
 * type takes part in garbage collection (an unclosed Worker is then still freed). */
static int RowReader_traverse(RowReader *self, visitproc visit, void *arg) {
    Py_VISIT(self->connection);
    Py_VISIT(self->row_select);
    for (int i = 0; i < READER_SLOTS; i++) {
        Py_VISIT(self->tables[i]);
        Py_VISIT(self->sqls[i]);
    }
    return 0;
}

static int RowReader_clear(RowReader *self) {
    row_reader_close_all(self); /* the statements first: the connection is still referenced */
    return 0;
}

static void RowReader_dealloc(RowReader *self) {
    PyObject_GC_UnTrack(self);
    row_reader_close_all(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef RowReader_methods[] = {
    {"close", (PyCFunction)RowReader_close, METH_NOARGS,
     "Finalize the prepared statements (before the connection is closed)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RowReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "evedb._tokenhash.RowReader",
    .tp_doc = "RowReader(connection, row_select): reads partial UPDATEs' rows for changeset_deltas.",
    .tp_basicsize = sizeof(RowReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)RowReader_traverse,
    .tp_clear = (inquiry)RowReader_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowReader_init,
    .tp_dealloc = (destructor)RowReader_dealloc,
    .tp_methods = RowReader_methods,
};

/* The SQLite extension entry point: keeps the routines of the SQLite that loaded it. */
int sqlite3_evedbtokenhash_init(sqlite3 *db, char **error, const sqlite3_api_routines *api) {
    (void)db;
    (void)error;
    sqlite3_api = api;
    return SQLITE_OK_LOAD_PERMANENTLY;
}

PyMODINIT_FUNC PyInit__tokenhash(void) {
    if (PyType_Ready(&RowReaderType) < 0 || intern_names() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&tokenhash_module);
    if (!module)
        return NULL;
    if (!NotEncodable)
        NotEncodable = PyErr_NewException("evedb._tokenhash.NotEncodable", PyExc_ValueError, NULL);
    if (!NotEncodable || PyModule_AddObjectRef(module, "RowReader", (PyObject *)&RowReaderType) < 0 ||
        PyModule_AddObjectRef(module, "NotEncodable", NotEncodable) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
