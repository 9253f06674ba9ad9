/* _board: the shared-memory transport's one-shot board, in C (see board.py for the protocol).
 *
 * Python costs some ten microseconds per shared-memory message; this file does a whole small
 * allreduce (publish, wait for every rank, compare the metadata rows, reduce in rank order)
 * in one call, and the control plane's exchange (metadata checks, barriers) in another.
 *
 * Memory ordering: a poster writes its header and data, then stores its SEQ word with release
 * semantics; a reader loads a peer's SEQ with acquire semantics and only then reads that
 * peer's header and data (GCC/Clang __atomic builtins: plain moves on x86-64, stlr/ldar or
 * dmb on ARM).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sched.h>

#define LINE 64
#define HEADER_WORDS 32                  /* payload flag, word count, up to 30 values */
#define MAX_VALUES (HEADER_WORDS - 2)
#define HEADER_BYTES (HEADER_WORDS * 8)
#define DATA_AT (LINE + 2 * HEADER_BYTES)  /* data slot 0, then data slot 1 */
#define SPIN_NS 20000LL                  /* by default spin this long, then yield the core */
#define YIELD_NS 2000000LL               /* yield this long, then sleep (as base.pause) */
#define MAX_RANKS 256
#define LONGEST_WAIT 1e9                 /* seconds: an infinite timeout, as a number */

enum { F32, F64, I8, U8, I32, I64, KINDS };
enum { SUM, PROD, MAX, MIN, AVG, OPS };
static const int ITEMSIZE[KINDS] = {4, 8, 1, 1, 4, 8};

typedef struct {
    PyObject_HEAD
    char **base;            /* every rank's board, own included, in rank order */
    int size, rank;
    Py_ssize_t capacity;    /* bytes in one data slot */
    int64_t seq;            /* posts so far */
    int64_t spin_ns;        /* spin this long before yielding (0: more ranks than cores) */
    PyObject *keep;         /* what keeps the mappings alive while the board points into them */
} Board;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline volatile int64_t *seq_word(const Board *b, int r) { return (volatile int64_t *)b->base[r]; }
static inline int64_t *header(const Board *b, int r, int64_t seq) {
    return (int64_t *)(b->base[r] + LINE + (seq & 1) * HEADER_BYTES);
}
static inline char *data(const Board *b, int r, int64_t seq) {
    return b->base[r] + DATA_AT + (seq & 1) * b->capacity;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The lowest rank whose SEQ is below b->seq, or -1 when every rank has posted. */
static int first_missing(const Board *b) {
    for (int r = 0; r < b->size; r++)
        if (__atomic_load_n(seq_word(b, r), __ATOMIC_ACQUIRE) < b->seq) return r;
    return -1;
}

/* Wait until every rank has posted b->seq or `seconds` pass; backs off like base.pause, as if
 * already `idle` seconds without progress (a wait resumed from Python goes on sleeping).
 * Returns -1 when all have posted, else the first rank missing. Call without the GIL. */
static int wait_all(const Board *b, double seconds, double idle) {
    int missing = first_missing(b);
    if (missing < 0) return -1;
    if (!(seconds < LONGEST_WAIT)) seconds = LONGEST_WAIT;       /* inf, huge, or NaN */
    if (seconds < 0) seconds = 0;
    if (!(idle < LONGEST_WAIT) || idle < 0) idle = 0;
    int64_t start = now_ns(), last_change = start - (int64_t)(idle * 1e9);
    int64_t deadline = start + (int64_t)(seconds * 1e9);
    int before = missing;
    for (;;) {
        int64_t now = now_ns();
        if (missing != before) { before = missing; last_change = now; }
        int64_t idle = now - last_change;
        if (idle > YIELD_NS) {
            int64_t nap = 50000 + idle / 100;
            if (nap > 1000000) nap = 1000000;
            struct timespec t = {0, (long)nap};
            nanosleep(&t, NULL);
        } else if (idle >= b->spin_ns) {
            sched_yield();
        } else {
            for (int i = 0; i < 32; i++) cpu_relax();
        }
        missing = first_missing(b);
        if (missing < 0) return -1;
        if (now_ns() > deadline) return missing;
    }
}

static PyObject *missing_ranks(const Board *b) {
    PyObject *out = PyList_New(0);
    for (int r = 0; out && r < b->size; r++) {
        if (__atomic_load_n(seq_word(b, r), __ATOMIC_ACQUIRE) < b->seq) {
            PyObject *v = PyLong_FromLong(r);
            if (!v || PyList_Append(out, v) < 0) { Py_XDECREF(v); Py_DECREF(out); return NULL; }
            Py_DECREF(v);
        }
    }
    if (!out) return NULL;
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
}

/* Publish a header (payload flag, values) and optionally data, then SEQ (release). */
static void post(Board *b, const int64_t *values, int nwords, const void *bytes, Py_ssize_t nbytes,
                 int payload, int length_at, int64_t length) {
    int64_t seq = b->seq + 1;
    int64_t *h = header(b, b->rank, seq);
    h[0] = payload;
    h[1] = nwords;
    memcpy(h + 2, values, (size_t)nwords * 8);
    if (length_at >= 0 && length_at < nwords) h[2 + length_at] = length;
    if (payload && nbytes) memcpy(data(b, b->rank, seq), bytes, (size_t)nbytes);
    b->seq = seq;
    __atomic_store_n((int64_t *)seq_word(b, b->rank), seq, __ATOMIC_RELEASE);
}

/* 0: every row equals mine and every rank posted data; 1: rows differ; 2: rows agree but
 * some rank posted no data (it takes the Python path; so must everyone). */
static int compare(const Board *b) {
    const int64_t *mine = header(b, b->rank, b->seq);
    int nwords = (int)mine[1], all_payload = 1;
    for (int r = 0; r < b->size; r++) {
        const int64_t *h = header(b, r, b->seq);
        if (h[1] != nwords || memcmp(h + 2, mine + 2, (size_t)nwords * 8) != 0) return 1;
        all_payload &= h[0] != 0;
    }
    return all_payload ? 0 : 2;
}

/* ---- reductions: out = d0 op d1 op ... in rank order (the same result on every rank) ---- */
#define MAXOF(a, b) (((a) >= (b) || (a) != (a)) ? (a) : (b))   /* NaN wins, as numpy's */
#define MINOF(a, b) (((a) <= (b) || (a) != (a)) ? (a) : (b))
#define LOOP(EXPR) for (Py_ssize_t i = 0; i < count; i++) { out[i] = (EXPR); }
#define LOOPS(NAME, T, A)                                                                   \
    static void NAME(int op, T *out, char **src, int n, Py_ssize_t count) {                 \
        const T *s0 = (const T *)src[0];                                                    \
        for (int q = 1; q < n; q++) {                                                       \
            const T *a = q == 1 ? s0 : out;                                                 \
            const T *s = (const T *)src[q];                                                 \
            if (op == SUM || op == AVG) LOOP((T)((A)a[i] + (A)s[i]))                        \
            else if (op == PROD) LOOP((T)((A)a[i] * (A)s[i]))                               \
            else if (op == MAX) LOOP(MAXOF(a[i], s[i]))                                     \
            else LOOP(MINOF(a[i], s[i]))                                                    \
        }                                                                                   \
        if (n == 1) memcpy(out, s0, (size_t)count * sizeof(T));                             \
    }
LOOPS(reduce_f32, float, float)
LOOPS(reduce_f64, double, double)
LOOPS(reduce_i8, int8_t, uint8_t)       /* integers wrap, as numpy's do: unsigned arithmetic */
LOOPS(reduce_u8, uint8_t, uint8_t)
LOOPS(reduce_i32, int32_t, uint32_t)
LOOPS(reduce_i64, int64_t, uint64_t)

static void reduce_into(const Board *b, void *out, int kind, int op, Py_ssize_t count) {
    char *src[256];
    for (int r = 0; r < b->size; r++) src[r] = data(b, r, b->seq);
    switch (kind) {
    case F32: reduce_f32(op, out, src, b->size, count);
        if (op == AVG) { float *o = out; for (Py_ssize_t i = 0; i < count; i++) o[i] /= (float)b->size; }
        break;
    case F64: reduce_f64(op, out, src, b->size, count);
        if (op == AVG) { double *o = out; for (Py_ssize_t i = 0; i < count; i++) o[i] /= (double)b->size; }
        break;
    case I8: reduce_i8(op, out, src, b->size, count); break;
    case U8: reduce_u8(op, out, src, b->size, count); break;
    case I32: reduce_i32(op, out, src, b->size, count); break;
    case I64: reduce_i64(op, out, src, b->size, count); break;
    }
}

/* ---- the Python type ------------------------------------------------------------------- */
static int Board_init(Board *self, PyObject *args, PyObject *kw) {
    PyObject *addresses;
    int rank;
    Py_ssize_t capacity;
    double spin = SPIN_NS * 1e-9;
    PyObject *keep = Py_None;
    if (!PyArg_ParseTuple(args, "Oin|dO", &addresses, &rank, &capacity, &spin, &keep)) return -1;
    PyObject *seq = PySequence_Fast(addresses, "addresses must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_RANKS || rank < 0 || rank >= n || capacity < 0 || capacity % LINE) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "board: bad size, rank or capacity");
        return -1;
    }
    PyMem_Free(self->base);
    self->base = PyMem_Calloc((size_t)n, sizeof(char *));
    if (!self->base) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t r = 0; r < n; r++) {
        self->base[r] = (char *)PyLong_AsVoidPtr(PySequence_Fast_GET_ITEM(seq, r));
        if (PyErr_Occurred()) { Py_DECREF(seq); return -1; }
    }
    Py_DECREF(seq);
    self->size = (int)n;
    self->rank = rank;
    self->capacity = capacity;
    self->spin_ns = (int64_t)(spin * 1e9);
    Py_XSETREF(self->keep, Py_NewRef(keep));
    self->seq = *seq_word(self, rank);
    return 0;
}

static void Board_dealloc(Board *self) {
    PyMem_Free(self->base);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(const Board *self) {
    if (self->base) return 1;
    PyErr_SetString(PyExc_RuntimeError, "board: not initialised");
    return 0;
}

static int words_of(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len % 8 || view->len / 8 > MAX_VALUES) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "board: a row holds 1 to %d int64 values", MAX_VALUES);
        return -1;
    }
    return 0;
}

static PyObject *wait_result(Board *self, double seconds, double idle) {
    int missing;
    if (first_missing(self) < 0) missing = -1;
    else {
        Py_BEGIN_ALLOW_THREADS
        missing = wait_all(self, seconds, idle);
        Py_END_ALLOW_THREADS
    }
    if (missing >= 0) return missing_ranks(self);
    Py_RETURN_NONE;
}

static PyObject *Board_table(Board *self, PyObject *const *args, Py_ssize_t nargs);

/* exchange(row, table, seconds): post row (no data); once every rank has posted, copy every
 * rank's row into table (size x len(row) int64). Returns None, or the tuple of ranks still
 * missing when `seconds` pass (then call wait() and table()). */
static PyObject *Board_exchange(Board *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!ready(self)) return NULL;
    Py_buffer row;
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "exchange(row, table, seconds)"); return NULL; }
    double seconds = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred() || words_of(args[0], &row) < 0) return NULL;
    post(self, row.buf, (int)(row.len / 8), NULL, 0, 0, -1, 0);
    PyBuffer_Release(&row);
    PyObject *result = wait_result(self, seconds, 0.0);
    if (result != Py_None) return result;
    Py_DECREF(result);
    PyObject *out[1] = {args[1]};
    return Board_table(self, out, 1);
}

/* table(out): every rank's row of the latest post into out (size x nwords int64). */
static PyObject *Board_table(Board *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer out;
    if (!ready(self)) return NULL;
    if (nargs != 1 || PyObject_GetBuffer(args[0], &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "table(out)");
        return NULL;
    }
    int nwords = (int)header(self, self->rank, self->seq)[1];
    if (out.len != (Py_ssize_t)self->size * nwords * 8) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "board.table: out must hold size x row int64 values");
        return NULL;
    }
    for (int r = 0; r < self->size; r++) {
        const int64_t *h = header(self, r, self->seq);
        int64_t *dst = (int64_t *)out.buf + (Py_ssize_t)r * nwords;
        if (h[1] == nwords) memcpy(dst, h + 2, (size_t)nwords * 8);
        else for (int i = 0; i < nwords; i++) dst[i] = -3;     /* a row of another length */
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* allreduce(x, row, kind, op, seconds): post row and x's bytes, wait for every rank, and if
 * every rank posted the same row and its data, reduce all of it into x in rank order.
 * Returns 0 (done), 1 (rows differ: see table()), 2 (some rank posted no data: run the
 * Python path), 3 (x is strided, read-only or larger than a slot: nothing was posted), or
 * the tuple of ranks missing when `seconds` pass (then wait(), finish()). */
static PyObject *Board_allreduce(Board *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!ready(self)) return NULL;
    Py_buffer x, row;
    if (nargs != 5) { PyErr_SetString(PyExc_TypeError, "allreduce(x, row, kind, op, seconds)"); return NULL; }
    int kind = (int)PyLong_AsLong(args[2]), op = (int)PyLong_AsLong(args[3]);
    double seconds = PyFloat_AsDouble(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (kind < 0 || kind >= KINDS || op < 0 || op >= OPS || (op == AVG && kind > F64)) {
        PyErr_SetString(PyExc_ValueError, "board.allreduce: bad kind or op");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &x, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        return PyLong_FromLong(3);
    }
    if (x.len > self->capacity || x.len % ITEMSIZE[kind]) {
        PyBuffer_Release(&x);
        return PyLong_FromLong(3);
    }
    if (words_of(args[1], &row) < 0) { PyBuffer_Release(&x); return NULL; }
    post(self, row.buf, (int)(row.len / 8), x.buf, x.len, 1, 1, x.len / ITEMSIZE[kind]);
    PyBuffer_Release(&row);
    int missing = first_missing(self);
    if (missing >= 0) {
        Py_BEGIN_ALLOW_THREADS
        missing = wait_all(self, seconds, 0.0);
        Py_END_ALLOW_THREADS
    }
    if (missing >= 0) { PyBuffer_Release(&x); return missing_ranks(self); }
    int verdict = compare(self);
    if (verdict == 0) reduce_into(self, x.buf, kind, op, x.len / ITEMSIZE[kind]);
    PyBuffer_Release(&x);
    return PyLong_FromLong(verdict);
}

/* wait(seconds, idle=0): keep waiting for the latest post, as a wait already `idle` seconds
 * without progress; None, or the ranks still missing. */
static PyObject *Board_wait(Board *self, PyObject *args) {
    if (!ready(self)) return NULL;
    double seconds, idle = 0.0;
    if (!PyArg_ParseTuple(args, "d|d", &seconds, &idle)) return NULL;
    return wait_result(self, seconds, idle);
}

/* finish(x, kind, op): after a wait() that saw everyone, what allreduce would have done. */
static PyObject *Board_finish(Board *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!ready(self)) return NULL;
    Py_buffer x;
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "finish(x, kind, op)"); return NULL; }
    int kind = (int)PyLong_AsLong(args[1]), op = (int)PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (kind < 0 || kind >= KINDS || op < 0 || op >= OPS || (op == AVG && kind > F64)) {
        PyErr_SetString(PyExc_ValueError, "board.finish: bad kind or op");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &x, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    if (x.len > self->capacity || x.len % ITEMSIZE[kind] ||
            x.len / ITEMSIZE[kind] != header(self, self->rank, self->seq)[2 + 1]) {
        PyBuffer_Release(&x);
        PyErr_SetString(PyExc_ValueError, "board.finish: not the buffer that was posted");
        return NULL;
    }
    int verdict = compare(self);
    if (verdict == 0) reduce_into(self, x.buf, kind, op, x.len / ITEMSIZE[kind]);
    PyBuffer_Release(&x);
    return PyLong_FromLong(verdict);
}

static PyObject *Board_get_seq(Board *self, void *closure) { return PyLong_FromLongLong(self->seq); }
static PyObject *Board_get_capacity(Board *self, void *closure) { return PyLong_FromSsize_t(self->capacity); }

static PyMethodDef Board_methods[] = {
    {"exchange", (PyCFunction)(void (*)(void))Board_exchange, METH_FASTCALL, "post a row, gather every rank's"},
    {"allreduce", (PyCFunction)(void (*)(void))Board_allreduce, METH_FASTCALL, "one-shot allreduce"},
    {"table", (PyCFunction)(void (*)(void))Board_table, METH_FASTCALL, "every rank's latest row"},
    {"finish", (PyCFunction)(void (*)(void))Board_finish, METH_FASTCALL, "compare rows and reduce"},
    {"wait", (PyCFunction)Board_wait, METH_VARARGS, "wait for the latest post"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Board_getset[] = {
    {"seq", (getter)Board_get_seq, NULL, "posts so far", NULL},
    {"capacity", (getter)Board_get_capacity, NULL, "bytes in a data slot", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BoardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "collectives.transport._board.Board",
    .tp_basicsize = sizeof(Board),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Board(addresses, rank, capacity, spin=20e-6, keep=None): every rank's board, "
              "mapped here (keep: what holds the mappings alive)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Board_init,
    .tp_dealloc = (destructor)Board_dealloc,
    .tp_methods = Board_methods,
    .tp_getset = Board_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_board", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__board(void) {
    if (PyType_Ready(&BoardType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&BoardType);
    if (PyModule_AddObject(m, "Board", (PyObject *)&BoardType) < 0) { Py_DECREF(&BoardType); Py_DECREF(m); return NULL; }
    PyModule_AddIntConstant(m, "LINE", LINE);
    PyModule_AddIntConstant(m, "HEADER_BYTES", HEADER_BYTES);
    PyModule_AddIntConstant(m, "DATA_AT", DATA_AT);
    PyModule_AddIntConstant(m, "MAX_VALUES", MAX_VALUES);
    PyModule_AddIntConstant(m, "MAX_RANKS", MAX_RANKS);
    return m;
}
