/*
 * evedb._tokenhash: the hashing behind a batch's token, in C: the Merkle page deltas of a
 * changeset, and the bytes of the batch's replies.
 *
 * Owns nothing new: it computes exactly what evedb/merkle.py and evedb/codec.py define
 * (they are the reference and the fallback), only without the interpreter in the loop.  A
 * write batch's token was mostly this: per changed row, iterating the changeset in Python,
 * packing and hashing cost about 5 microseconds.  Here a changeset is read in its documented
 * binary form (sqlite3session.h: table headers, then INSERT/DELETE/UPDATE records of typed
 * values), each cell is packed into msgpack bytes identical to merkle.cell_hash's, and hashed
 * by the xxh3 functions of the xxhash module evedb already depends on: their address is
 * looked up in that module's shared library, so the hash is the very same code.
 *
 * Functions:
 * - configure(xxhash_library, rows_per_page, hash_buckets): bind the hash functions and the
 *   page geometry (merkle.py passes its own constants, so they are written down once);
 * - changeset_deltas(changeset) -> deltas: maps (table, page) to the sum mod 2**128 of the
 *   hashes of the cells that entered minus those that left: an INSERT's or DELETE's whole
 *   row, an UPDATE's changed columns (the changeset has their old and new values, and the
 *   key; the cells it left alone cancel out, so no row is ever read);
 * - row_hash(table, key, row) -> int: merkle.row_hash of tuples of SQLite values;
 * - table_deltas(table, key_indexes, rows) -> deltas: merkle.table_deltas, the page sums of
 *   every row an iterable of tuples yields (a full build reads a table through it);
 * - encode_reply(reply) -> bytes: codec.encode_reply;
 * - encode_replies(replies) -> bytes: codec.encode_replies (the bytes the token's reply hash
 *   covers); a value it does not write (a procedure's dict, say) raises NotEncodable and
 *   codec.py encodes that batch itself.
 *
 * Rules kept: byte-for-byte the encodings of merkle.py and codec.py (msgpack-python's
 * smallest forms, str as UTF-8, floats as float 64); every read of the changeset is
 * bounds-checked, and a malformed one raises ValueError; no state but the configuration.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

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
        /* -0.0 hashes as 0.0: SQLite finds them equal, so changing one into the other is no
         * change in a changeset (merkle.py's `_canonical`). */
        return pack_float(out, value->real == 0.0 ? 0.0 : value->real);
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

static int malformed(const char *what);

/* The start of merkle.cell_hash's bytes, msgpack([table, [key values...], ...: the part every
 * cell of one row shares.  Leaves scratch holding it; returns its size through *prefix. */
static int pack_cell_prefix(buffer *scratch, const char *table, size_t table_size, const value_view *values,
                            const int *key_columns, int key_count, size_t *prefix) {
    scratch->size = 0;
    if (pack_array_header(scratch, 4) < 0 || pack_sized(scratch, (const unsigned char *)table, table_size, 1) < 0 ||
        pack_array_header(scratch, (size_t)key_count) < 0)
        return -1;
    for (int i = 0; i < key_count; i++)
        if (pack_value(scratch, &values[key_columns[i]]) < 0)
            return -1;
    *prefix = scratch->size;
    return 0;
}

/* merkle.cell_hash of column `index`, after the row's prefix already in scratch. */
static int cell_hash(buffer *scratch, size_t prefix, int index, const value_view *value, u128 *hash) {
    scratch->size = prefix;
    if (pack_integer(scratch, index) < 0 || pack_value(scratch, value) < 0)
        return -1;
    *hash = hash128(scratch);
    return 0;
}

/* merkle.row_hash: the sum of every cell's hash (unsigned, so modulo 2**128). */
static int row_hash_of_values(buffer *scratch, const char *table, size_t table_size, const value_view *values,
                              int columns, const int *key_columns, int key_count, u128 *hash) {
    size_t prefix;
    u128 sum = 0, cell;
    if (pack_cell_prefix(scratch, table, table_size, values, key_columns, key_count, &prefix) < 0)
        return -1;
    for (int i = 0; i < columns; i++) {
        if (cell_hash(scratch, prefix, i, &values[i], &cell) < 0)
            return -1;
        sum += cell;
    }
    *hash = sum;
    return 0;
}

/* An UPDATE's delta: the changed columns' new cells minus their old ones.  SQLite records an
 * UPDATE of a key column as a DELETE and an INSERT, except between keys it finds equal but
 * stores differently, which evedb refuses at CREATE TABLE (storage.ambiguous_keys): a key
 * column never changes here. */
static int update_delta(buffer *scratch, const char *table, size_t table_size, const value_view *old_values,
                        const value_view *new_values, int columns, const int *key_columns, int key_count,
                        u128 *delta) {
    size_t prefix;
    u128 sum = 0, old_cell, new_cell;
    for (int i = 0; i < key_count; i++)
        if (old_values[key_columns[i]].type == VALUE_ABSENT || new_values[key_columns[i]].type != VALUE_ABSENT)
            return malformed("an UPDATE without its key, or changing it");
    if (pack_cell_prefix(scratch, table, table_size, old_values, key_columns, key_count, &prefix) < 0)
        return -1;
    for (int i = 0; i < columns; i++) {
        if (new_values[i].type == VALUE_ABSENT)
            continue;
        if (old_values[i].type == VALUE_ABSENT)
            return malformed("an UPDATE changes a column without its old value");
        if (cell_hash(scratch, prefix, i, &new_values[i], &new_cell) < 0 ||
            cell_hash(scratch, prefix, i, &old_values[i], &old_cell) < 0)
            return -1;
        sum += new_cell - old_cell;
    }
    *delta = sum;
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
            if (value->type == VALUE_INTEGER) {
                value->integer = (int64_t)bits;
            } else {
                memcpy(&value->real, &bits, sizeof bits);
                if (value->real != value->real) /* SQLite stores a NaN as NULL, never as a REAL */
                    return malformed("a REAL is not a number");
            }
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

static int not_configured(void) {
    if (xxh3_128 && xxh3_64)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "evedb._tokenhash.configure() has not been called");
    return -1;
}

static PyObject *changeset_deltas(PyObject *module, PyObject *changeset_object) {
    (void)module;
    Py_buffer changeset;
    if (not_configured() < 0 || PyObject_GetBuffer(changeset_object, &changeset, PyBUF_SIMPLE) < 0)
        return NULL;
    changeset_reader in = {changeset.buf, (size_t)changeset.len, 0};
    buffer scratch = {0};
    page_sums sums = {0};
    value_view *old_values = NULL, *new_values = NULL;
    int *key_columns = NULL;
    int columns = 0, key_count = 0;
    const char *table_name = NULL;
    size_t table_size = 0;
    PyObject *table = NULL;
    PyObject *deltas = PyDict_New();
    PyObject *result = NULL;
    if (!deltas)
        goto done;

    while (in.at < in.size) {
        unsigned char marker = in.data[in.at];
        if (marker == 'T') {
            /* A table header: column count, one primary-key flag per column, the name. */
            in.at++;
            if (table && page_sums_flush(&sums, table, deltas) < 0)
                goto done;
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
            PyMem_Free(key_columns);
            old_values = PyMem_Calloc(columns, sizeof *old_values);
            new_values = PyMem_Calloc(columns, sizeof *new_values);
            key_columns = PyMem_Calloc(columns, sizeof *key_columns);
            if (!old_values || !new_values || !key_columns) {
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
            table = PyUnicode_DecodeUTF8(table_name, (Py_ssize_t)table_size, NULL);
            if (!table)
                goto done;
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
        u128 delta;
        int64_t page;
        if (operation == OP_INSERT || operation == OP_DELETE) {
            if (read_record(&in, old_values, columns) < 0 ||
                row_hash_of_values(&scratch, table_name, table_size, old_values, columns, key_columns, key_count,
                                   &delta) < 0)
                goto done;
            if (operation == OP_DELETE)
                delta = (u128)0 - delta;
        } else if (operation == OP_UPDATE) {
            if (read_record(&in, old_values, columns) < 0 || read_record(&in, new_values, columns) < 0 ||
                update_delta(&scratch, table_name, table_size, old_values, new_values, columns, key_columns,
                             key_count, &delta) < 0)
                goto done;
        } else {
            malformed("unknown operation");
            goto done;
        }
        if (page_of_key(&scratch, old_values, key_columns, key_count, &page) < 0 ||
            page_sums_add(&sums, page, delta) < 0)
            goto done;
    }
    if (table && page_sums_flush(&sums, table, deltas) < 0)
        goto done;
    result = Py_NewRef(deltas);

done:
    PyBuffer_Release(&changeset);
    PyMem_Free(scratch.data);
    page_sums_free(&sums);
    PyMem_Free(old_values);
    PyMem_Free(new_values);
    PyMem_Free(key_columns);
    Py_XDECREF(table);
    Py_XDECREF(deltas);
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

/* Values of a Python tuple as a changeset record would hold them. */
static value_view *values_of_tuple(PyObject *tuple) {
    Py_ssize_t count = PyTuple_GET_SIZE(tuple);
    value_view *values = PyMem_Calloc(count ? count : 1, sizeof *values);
    if (!values) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (value_of_object(PyTuple_GET_ITEM(tuple, i), &values[i]) < 0) {
            PyMem_Free(values);
            return NULL;
        }
    return values;
}

/* A table name's UTF-8, once configure() has bound the hash functions; NULL with an error. */
static const char *configured_table_name(PyObject *table, Py_ssize_t *size) {
    return not_configured() < 0 ? NULL : PyUnicode_AsUTF8AndSize(table, size);
}

static PyObject *row_hash(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *table, *key, *row;
    Py_ssize_t table_size;
    const char *table_name;
    if (!PyArg_ParseTuple(args, "UO!O!", &table, &PyTuple_Type, &key, &PyTuple_Type, &row) ||
        !(table_name = configured_table_name(table, &table_size)))
        return NULL;
    Py_ssize_t key_count = PyTuple_GET_SIZE(key), columns = PyTuple_GET_SIZE(row);
    if (key_count > 32767 || columns > 32767) {
        PyErr_SetString(PyExc_ValueError, "more columns than SQLite allows");
        return NULL;
    }
    /* The prefix packs the key from its own tuple: key_columns index into it. */
    int *identity = PyMem_Calloc(key_count ? key_count : 1, sizeof *identity);
    value_view *key_values = values_of_tuple(key);
    value_view *values = key_values ? values_of_tuple(row) : NULL;
    buffer scratch = {0};
    PyObject *result = NULL;
    size_t prefix;
    u128 sum = 0, cell;
    if (!identity || !values) {
        if (!identity)
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < key_count; i++)
        identity[i] = (int)i;
    if (pack_cell_prefix(&scratch, table_name, (size_t)table_size, key_values, identity, (int)key_count, &prefix) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < columns; i++) {
        if (cell_hash(&scratch, prefix, (int)i, &values[i], &cell) < 0)
            goto done;
        sum += cell;
    }
    result = u128_object(sum);
done:
    PyMem_Free(identity);
    PyMem_Free(key_values);
    PyMem_Free(values);
    PyMem_Free(scratch.data);
    return result;
}

/* merkle.table_deltas: the page sums of every row an iterable yields (a full build's scan). */
static PyObject *table_deltas(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *table, *key_indexes, *rows;
    Py_ssize_t table_size;
    const char *table_name;
    if (!PyArg_ParseTuple(args, "UO!O", &table, &PyTuple_Type, &key_indexes, &rows) ||
        !(table_name = configured_table_name(table, &table_size)))
        return NULL;
    Py_ssize_t key_count = PyTuple_GET_SIZE(key_indexes);
    if (key_count > 32767) {
        PyErr_SetString(PyExc_ValueError, "more key columns than SQLite allows");
        return NULL;
    }
    int *key_columns = PyMem_Calloc(key_count ? key_count : 1, sizeof *key_columns);
    value_view *values = NULL;
    Py_ssize_t capacity = 0;
    buffer scratch = {0};
    page_sums sums = {0};
    PyObject *iterator = NULL, *row = NULL, *deltas = NULL, *result = NULL;
    if (!key_columns) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < key_count; i++) {
        long index = PyLong_AsLong(PyTuple_GET_ITEM(key_indexes, i));
        if (index == -1 && PyErr_Occurred())
            goto done;
        if (index < 0 || index > 32766) {
            PyErr_SetString(PyExc_ValueError, "a key column index is out of range");
            goto done;
        }
        key_columns[i] = (int)index;
    }
    iterator = PyObject_GetIter(rows);
    if (!iterator)
        goto done;
    while ((row = PyIter_Next(iterator))) {
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "rows must be tuples");
            goto done;
        }
        Py_ssize_t columns = PyTuple_GET_SIZE(row);
        if (columns > 32767) {
            PyErr_SetString(PyExc_ValueError, "more columns than SQLite allows");
            goto done;
        }
        for (Py_ssize_t i = 0; i < key_count; i++)
            if (key_columns[i] >= columns) {
                PyErr_SetString(PyExc_ValueError, "a key column index is past the row's end");
                goto done;
            }
        if (columns > capacity) {
            PyMem_Free(values);
            capacity = columns;
            values = PyMem_Calloc(capacity, sizeof *values);
            if (!values) {
                PyErr_NoMemory();
                goto done;
            }
        }
        /* The views point into the row's objects: used before the row is released. */
        u128 hash;
        int64_t page;
        for (Py_ssize_t i = 0; i < columns; i++)
            if (value_of_object(PyTuple_GET_ITEM(row, i), &values[i]) < 0)
                goto done;
        if (row_hash_of_values(&scratch, table_name, (size_t)table_size, values, (int)columns, key_columns,
                               (int)key_count, &hash) < 0 ||
            page_of_key(&scratch, values, key_columns, (int)key_count, &page) < 0 ||
            page_sums_add(&sums, page, hash) < 0)
            goto done;
        Py_CLEAR(row);
    }
    if (PyErr_Occurred())
        goto done;
    deltas = PyDict_New();
    if (!deltas || page_sums_flush(&sums, table, deltas) < 0)
        goto done;
    result = Py_NewRef(deltas);
done:
    Py_XDECREF(row);
    Py_XDECREF(iterator);
    Py_XDECREF(deltas);
    PyMem_Free(key_columns);
    PyMem_Free(values);
    PyMem_Free(scratch.data);
    page_sums_free(&sums);
    return result;
}

static PyObject *configure(PyObject *module, PyObject *args) {
    (void)module;
    const char *library;
    long long page_rows;
    unsigned long long buckets;
    if (!PyArg_ParseTuple(args, "sLK", &library, &page_rows, &buckets))
        return NULL;
    if (page_rows < 2 || buckets == 0 || buckets > (unsigned long long)(INT64_MAX / 2)) {
        PyErr_SetString(PyExc_ValueError, "rows per page must be 2 or more and hash buckets in 1..2**62");
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
    /* A tuple: a snapshot no attribute getter can shrink or free items of while we read it. */
    PyObject *fast = PySequence_Tuple(columns);
    Py_DECREF(columns);
    if (!fast)
        return -1;
    Py_ssize_t count = PyTuple_GET_SIZE(fast);
    int status = pack_array_header(out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++) {
        PyObject *column = PyTuple_GET_ITEM(fast, i);
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
    PyObject *fast = PySequence_Tuple(results);
    Py_DECREF(results);
    if (!fast)
        return -1;
    Py_ssize_t count = PyTuple_GET_SIZE(fast);
    int status = pack_array_header(out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++)
        status = pack_statement_result(out, PyTuple_GET_ITEM(fast, i));
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
    PyObject *fast = PySequence_Tuple(replies);
    if (!fast)
        return NULL;
    buffer out = {0};
    Py_ssize_t count = PyTuple_GET_SIZE(fast);
    int status = pack_array_header(&out, (size_t)count);
    for (Py_ssize_t i = 0; status == 0 && i < count; i++)
        status = pack_reply(&out, PyTuple_GET_ITEM(fast, i));
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
    {"changeset_deltas", changeset_deltas, METH_O, "changeset_deltas(changeset) -> {(table, page): delta}."},
    {"row_hash", row_hash, METH_VARARGS, "row_hash(table, key, row) -> int: merkle.row_hash, in C."},
    {"table_deltas", table_deltas, METH_VARARGS,
     "table_deltas(table, key_indexes, rows) -> {(table, page): sum}: merkle.table_deltas, in C."},
    {"encode_reply", encode_reply, METH_O, "encode_reply(reply) -> bytes: codec.encode_reply, in C."},
    {"encode_replies", encode_replies, METH_O,
     "encode_replies(replies) -> bytes: codec.encode_replies, in C; NotEncodable for other values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef tokenhash_module = {
    PyModuleDef_HEAD_INIT, "evedb._tokenhash",
    "Merkle page deltas of a changeset, in C (see evedb/merkle.py for the definitions).", -1, tokenhash_methods,
};

PyMODINIT_FUNC PyInit__tokenhash(void) {
    if (intern_names() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&tokenhash_module);
    if (!module)
        return NULL;
    if (!NotEncodable)
        NotEncodable = PyErr_NewException("evedb._tokenhash.NotEncodable", PyExc_ValueError, NULL);
    if (!NotEncodable || PyModule_AddObjectRef(module, "NotEncodable", NotEncodable) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
