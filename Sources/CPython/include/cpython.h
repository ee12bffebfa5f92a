// The CPython C API, as this project uses it, loaded at run time.
//
// Departure from the usual "include Python.h" shim: which Python runs is chosen when the runtime
// starts (newest CPython >= 3.12 found, SUBINTERP_PYTHON, or --python pointing at a virtual
// environment), so nothing here may depend on headers found at build time. This header declares
// the few types and functions we need, mirroring CPython 3.12 and 3.13 (default, GIL builds),
// and `cpy_load` resolves them from the chosen libpython with dlsym. Struct layouts declared here
// (`PyStatus`, `PyInterpreterConfig`, the object head, module and method definitions) are the
// same in 3.12 and 3.13; `cpy_load` refuses other versions and free-threaded builds.
//
// Every shim is prefixed `cpy_`. Nothing else lives in this target.
#ifndef SUBINTERP_CPYTHON_H
#define SUBINTERP_CPYTHON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef ssize_t Py_ssize_t;
typedef struct _object PyObject;
typedef struct _ts PyThreadState;
typedef struct _is PyInterpreterState;
typedef struct _typeobject PyTypeObject;

/// The head every Python object starts with (non-free-threaded builds).
typedef struct {
    Py_ssize_t ob_refcnt;
    PyTypeObject *ob_type;
} cpy_object_head;

typedef struct {
    int _type;
    const char *func;
    const char *err_msg;
    int exitcode;
} PyStatus;

typedef struct {
    int use_main_obmalloc;
    int allow_fork;
    int allow_exec;
    int allow_threads;
    int allow_daemon_threads;
    int check_multi_interp_extensions;
    int gil;
} PyInterpreterConfig;

#define CPY_INTERPRETER_OWN_GIL 2

typedef PyObject *(*PyCFunction)(PyObject *, PyObject *);
typedef struct {
    const char *ml_name;
    void *ml_meth;
    int ml_flags;
    const char *ml_doc;
} PyMethodDef;

#define CPY_METH_VARARGS 0x0001
#define CPY_METH_KEYWORDS 0x0002
#define CPY_METH_NOARGS 0x0004
#define CPY_METH_O 0x0008
#define CPY_METH_FASTCALL 0x0080

typedef struct {
    cpy_object_head ob_base;
    PyObject *(*m_init)(void);
    Py_ssize_t m_index;
    PyObject *m_copy;
} PyModuleDef_Base;

typedef struct {
    int slot;
    void *value;
} PyModuleDef_Slot;

typedef struct PyModuleDef {
    PyModuleDef_Base m_base;
    const char *m_name;
    const char *m_doc;
    Py_ssize_t m_size;
    PyMethodDef *m_methods;
    PyModuleDef_Slot *m_slots;
    int (*m_traverse)(PyObject *, int (*)(PyObject *, void *), void *);
    int (*m_clear)(PyObject *);
    void (*m_free)(void *);
} PyModuleDef;

#define CPY_MOD_CREATE 1
#define CPY_MOD_EXEC 2
#define CPY_MOD_MULTIPLE_INTERPRETERS 3
#define CPY_MOD_PER_INTERPRETER_GIL_SUPPORTED ((void *)2)

#define CPY_TPFLAGS_LONG_SUBCLASS (1UL << 24)
#define CPY_TPFLAGS_UNICODE_SUBCLASS (1UL << 28)
#define CPY_TPFLAGS_DEFAULT (1UL << 18)
#define CPY_TPFLAGS_IMMUTABLETYPE (1UL << 8)
#define CPY_TPFLAGS_DISALLOW_INSTANTIATION (1UL << 7)
#define CPY_TPFLAGS_HAVE_GC (1UL << 14)
#define CPY_TPFLAGS_BASE_EXC_SUBCLASS (1UL << 30)
#define CPY_TPFLAGS_TYPE_SUBCLASS (1UL << 31)

typedef struct {
    int slot;
    void *pfunc;
} PyType_Slot;

typedef struct {
    const char *name;
    int basicsize;
    int itemsize;
    unsigned int flags;
    PyType_Slot *slots;
} PyType_Spec;

#define CPY_BF_GETBUFFER 1
#define CPY_BF_RELEASEBUFFER 2
#define CPY_TP_DEALLOC 52
#define CPY_TP_DOC 56
#define CPY_TP_HASH 59
#define CPY_TP_METHODS 64
#define CPY_TP_NEW 65
#define CPY_TP_REPR 66
#define CPY_TP_RICHCOMPARE 67
#define CPY_TP_GETSET 73
#define CPY_TP_FREE 74
#define CPY_TP_CLEAR 51
#define CPY_TP_ITER 62
#define CPY_TP_ITERNEXT 63
#define CPY_TP_TRAVERSE 71
#define CPY_AM_AWAIT 77
#define CPY_AM_SEND 81

/// `PySendResult`, what `am_send` and `PyIter_Send` return.
#define CPY_PYGEN_RETURN 0
#define CPY_PYGEN_ERROR (-1)
#define CPY_PYGEN_NEXT 1

/// The API version `PyModule_FromDefAndSpec` passes (1013 in 3.12 and 3.13).
#define CPY_PYTHON_API_VERSION 1013

/// Py_buffer, as in the limited API since 3.11.
typedef struct {
    void *buf;
    PyObject *obj;
    Py_ssize_t len;
    Py_ssize_t itemsize;
    int readonly;
    int ndim;
    char *format;
    Py_ssize_t *shape;
    Py_ssize_t *strides;
    Py_ssize_t *suboffsets;
    void *internal;
} Py_buffer;

typedef PyObject *(*cpy_getter)(PyObject *, void *);
typedef struct {
    const char *name;
    cpy_getter get;
    void *set;
    const char *doc;
    void *closure;
} PyGetSetDef;

// Functions resolved from libpython. X(return type, name, parameter list).
#define CPY_FUNCTIONS(X, V)  \
    X(PyStatus, Py_InitializeFromConfig, (const void *config), (config)) \
    V(PyConfig_InitPythonConfig, (void *config), (config)) \
    X(PyStatus, PyConfig_SetBytesArgv, (void *config, Py_ssize_t argc, char *const *argv), (config, argc, argv)) \
    V(PyConfig_Clear, (void *config), (config)) \
    X(int, PyStatus_Exception, (PyStatus status), (status)) \
    X(int, Py_FinalizeEx, (void), ()) \
    X(PyStatus, Py_NewInterpreterFromConfig, (PyThreadState **tstate, const PyInterpreterConfig *config), (tstate, config)) \
    V(Py_EndInterpreter, (PyThreadState *tstate), (tstate)) \
    X(PyThreadState *, PyThreadState_New, (PyInterpreterState *interp), (interp)) \
    V(PyThreadState_Clear, (PyThreadState *tstate), (tstate)) \
    V(PyThreadState_DeleteCurrent, (void), ()) \
    X(int, PyImport_AppendInittab, (const char *name, PyObject *(*initfunc)(void)), (name, initfunc)) \
    X(PyThreadState *, PyThreadState_Swap, (PyThreadState *tstate), (tstate)) \
    X(PyThreadState *, PyEval_SaveThread, (void), ()) \
    V(PyEval_RestoreThread, (PyThreadState *tstate), (tstate)) \
    X(PyInterpreterState *, PyInterpreterState_Main, (void), ()) \
    X(int64_t, PyInterpreterState_GetID, (PyInterpreterState *interp), (interp)) \
    X(PyInterpreterState *, PyInterpreterState_Get, (void), ()) \
    X(int, PyThreadState_SetAsyncExc, (unsigned long id, PyObject *exc), (id, exc)) \
    X(unsigned long, PyThread_get_thread_ident, (void), ()) \
    X(PyObject *, PyModuleDef_Init, (PyModuleDef *def), (def)) \
    X(void *, PyModule_GetState, (PyObject *module), (module)) \
    X(PyObject *, PyModule_GetDict, (PyObject *module), (module)) \
    V(Py_IncRef, (PyObject *o), (o)) \
    V(Py_DecRef, (PyObject *o), (o)) \
    X(PyObject *, PyObject_GetAttrString, (PyObject *o, const char *name), (o, name)) \
    X(int, PyObject_SetAttrString, (PyObject *o, const char *name, PyObject *v), (o, name, v)) \
    X(PyObject *, PyObject_GetAttr, (PyObject *o, PyObject *name), (o, name)) \
    X(PyObject *, PyObject_Call, (PyObject *callable, PyObject *args, PyObject *kwargs), (callable, args, kwargs)) \
    X(PyObject *, PyObject_Vectorcall, (PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames), (callable, args, nargsf, kwnames)) \
    X(PyObject *, PyObject_Str, (PyObject *o), (o)) \
    X(PyObject *, PyObject_Repr, (PyObject *o), (o)) \
    X(int, PyObject_IsTrue, (PyObject *o), (o)) \
    X(int, PyCallable_Check, (PyObject *o), (o)) \
    X(unsigned long, PyType_GetFlags, (PyTypeObject *type), (type)) \
    X(PyObject *, PyType_GetQualName, (PyTypeObject *type), (type)) \
    X(PyObject *, PyLong_FromLongLong, (long long v), (v)) \
    X(long long, PyLong_AsLongLongAndOverflow, (PyObject *o, int *overflow), (o, overflow)) \
    X(PyObject *, PyLong_FromString, (const char *str, char **pend, int base), (str, pend, base)) \
    X(PyObject *, PyNumber_ToBase, (PyObject *n, int base), (n, base)) \
    X(long, PyLong_AsLong, (PyObject *o), (o)) \
    X(PyObject *, PyFloat_FromDouble, (double v), (v)) \
    X(double, PyFloat_AsDouble, (PyObject *o), (o)) \
    X(PyObject *, PyBool_FromLong, (long v), (v)) \
    X(PyObject *, PyUnicode_FromStringAndSize, (const char *s, Py_ssize_t size), (s, size)) \
    X(PyObject *, PyUnicode_DecodeUTF8, (const char *s, Py_ssize_t size, const char *errors), (s, size, errors)) \
    X(const char *, PyUnicode_AsUTF8AndSize, (PyObject *o, Py_ssize_t *size), (o, size)) \
    X(PyObject *, PyBytes_FromStringAndSize, (const char *s, Py_ssize_t size), (s, size)) \
    X(int, PyBytes_AsStringAndSize, (PyObject *o, char **buffer, Py_ssize_t *length), (o, buffer, length)) \
    X(PyObject *, PyList_New, (Py_ssize_t size), (size)) \
    X(int, PyList_SetItem, (PyObject *list, Py_ssize_t i, PyObject *item), (list, i, item)) \
    X(PyObject *, PyList_GetItem, (PyObject *list, Py_ssize_t i), (list, i)) \
    X(Py_ssize_t, PyList_Size, (PyObject *list), (list)) \
    X(PyObject *, PyList_AsTuple, (PyObject *list), (list)) \
    X(PyObject *, PyTuple_New, (Py_ssize_t size), (size)) \
    X(int, PyTuple_SetItem, (PyObject *tuple, Py_ssize_t i, PyObject *item), (tuple, i, item)) \
    X(PyObject *, PyTuple_GetItem, (PyObject *tuple, Py_ssize_t i), (tuple, i)) \
    X(Py_ssize_t, PyTuple_Size, (PyObject *tuple), (tuple)) \
    X(PyObject *, PyDict_New, (void), ()) \
    X(int, PyDict_SetItem, (PyObject *dict, PyObject *key, PyObject *value), (dict, key, value)) \
    X(int, PyDict_SetItemString, (PyObject *dict, const char *key, PyObject *value), (dict, key, value)) \
    X(PyObject *, PyDict_GetItemWithError, (PyObject *dict, PyObject *key), (dict, key)) \
    X(int, PyDict_Next, (PyObject *dict, Py_ssize_t *pos, PyObject **key, PyObject **value), (dict, pos, key, value)) \
    X(Py_ssize_t, PyDict_Size, (PyObject *dict), (dict)) \
    X(PyObject *, PyDict_Items, (PyObject *dict), (dict)) \
    X(PyObject *, Py_CompileString, (const char *source, const char *filename, int start), (source, filename, start)) \
    X(PyObject *, PyEval_EvalCode, (PyObject *code, PyObject *globals, PyObject *locals), (code, globals, locals)) \
    X(PyObject *, PyImport_ImportModule, (const char *name), (name)) \
    X(PyObject *, PyImport_AddModule, (const char *name), (name)) \
    X(PyObject *, PyEval_GetBuiltins, (void), ()) \
    X(PyObject *, PyErr_Occurred, (void), ()) \
    X(PyObject *, PyErr_GetRaisedException, (void), ()) \
    V(PyErr_SetRaisedException, (PyObject *exc), (exc)) \
    V(PyErr_SetString, (PyObject *type, const char *message), (type, message)) \
    V(PyErr_SetObject, (PyObject *type, PyObject *value), (type, value)) \
    V(PyErr_Clear, (void), ()) \
    X(int, PyErr_ExceptionMatches, (PyObject *exc), (exc)) \
    X(PyObject *, PyErr_NewException, (const char *name, PyObject *base, PyObject *dict), (name, base, dict)) \
    X(int, PyErr_CheckSignals, (void), ()) \
    X(int, PyModule_AddObjectRef, (PyObject *module, const char *name, PyObject *value), (module, name, value)) \
    X(int, PyModule_AddIntConstant, (PyObject *module, const char *name, long value), (module, name, value)) \
    X(PyObject *, PyType_FromModuleAndSpec, (PyObject *module, PyType_Spec *spec, PyObject *bases), (module, spec, bases)) \
    X(void *, PyType_GetModuleState, (PyTypeObject *type), (type)) \
    X(PyObject *, PyType_GetModule, (PyTypeObject *type), (type)) \
    X(void *, PyType_GetSlot, (PyTypeObject *type, int slot), (type, slot)) \
    X(int, PyBuffer_FillInfo, (Py_buffer *view, PyObject *o, void *buf, Py_ssize_t len, int readonly, int flags), (view, o, buf, len, readonly, flags)) \
    X(Py_ssize_t, PyLong_AsSsize_t, (PyObject *o), (o)) \
    X(PyObject *, PyMemoryView_FromObject, (PyObject *o), (o)) \
    X(int, PyModule_AddType, (PyObject *module, PyTypeObject *type), (module, type)) \
    X(PyObject *, PyObject_GenericGetAttr, (PyObject *o, PyObject *name), (o, name)) \
    X(PyObject *, PyNumber_Negative, (PyObject *o), (o)) \
    X(PyObject *, PyMarshal_WriteObjectToString, (PyObject *o, int version), (o, version)) \
    X(PyObject *, PyMarshal_ReadObjectFromString, (const char *data, Py_ssize_t length), (data, length)) \
    X(PyObject *, PyModule_FromDefAndSpec2, (PyModuleDef *def, PyObject *spec, int api_version), (def, spec, api_version)) \
    X(int, PyModule_ExecDef, (PyObject *module, PyModuleDef *def), (module, def)) \
    X(PyObject *, PyImport_GetModuleDict, (void), ()) \
    X(PyObject *, PyObject_VectorcallMethod, (PyObject *name, PyObject *const *args, size_t nargsf, PyObject *kwnames), (name, args, nargsf, kwnames)) \
    X(int, PyIter_Send, (PyObject *iter, PyObject *arg, PyObject **result), (iter, arg, result)) \
    X(PyObject *, PyObject_GetIter, (PyObject *o), (o)) \
    X(PyObject *, PyIter_Next, (PyObject *iter), (iter)) \
    X(int, PyObject_GetBuffer, (PyObject *o, Py_buffer *view, int flags), (o, view, flags)) \
    V(PyBuffer_Release, (Py_buffer *view), (view)) \
    X(PyObject *, PyDict_Copy, (PyObject *dict), (dict)) \
    X(PyObject *, PyUnicode_InternFromString, (const char *s), (s)) \
    X(int, PyUnicode_CompareWithASCIIString, (PyObject *o, const char *s), (o, s)) \
    X(int, PyErr_GivenExceptionMatches, (PyObject *given, PyObject *exc), (given, exc)) \
    X(int, PyObject_IsInstance, (PyObject *o, PyObject *cls), (o, cls)) \
    X(int, PyList_Append, (PyObject *list, PyObject *item), (list, item)) \
    X(PyObject *, PyList_GetSlice, (PyObject *list, Py_ssize_t low, Py_ssize_t high), (list, low, high)) \
    V(PyObject_GC_UnTrack, (void *o), (o)) \
    V(PyErr_WriteUnraisable, (PyObject *o), (o)) \
    X(int, PyModule_AddFunctions, (PyObject *module, PyMethodDef *functions), (module, functions)) \
    X(PyObject *, PySys_GetObject, (const char *name), (name)) \
    X(PyObject *, PyDict_GetItemString, (PyObject *dict, const char *key), (dict, key)) \
    X(PyObject *, PyLong_FromUnsignedLongLong, (unsigned long long v), (v)) \
    X(unsigned long long, PyLong_AsUnsignedLongLong, (PyObject *o), (o))

// Each function is a pointer `cpy_ptr_NAME`, filled by `cpy_load`, and a wrapper `cpy_NAME` that
// Swift calls (Swift cannot call through a mutable C global under strict concurrency).
#define CPY_DECLARE(ret, name, params, args)                                                       \
    extern ret(*cpy_ptr_##name) params;                                                            \
    static inline ret cpy_##name params { return cpy_ptr_##name args; }
#define CPY_DECLARE_VOID(name, params, args)                                                       \
    extern void(*cpy_ptr_##name) params;                                                           \
    static inline void cpy_##name params { cpy_ptr_##name args; }
CPY_FUNCTIONS(CPY_DECLARE, CPY_DECLARE_VOID)
#undef CPY_DECLARE
#undef CPY_DECLARE_VOID

// Objects resolved from libpython: X(C type, getter, symbol, 1 if the symbol is the object itself
// or 0 if it is a variable holding a pointer to it). Swift reads them through `cpy_NAME()`.
#define CPY_OBJECTS(X) \
    X(PyObject *, none, _Py_NoneStruct, 1) \
    X(PyObject *, true, _Py_TrueStruct, 1) \
    X(PyObject *, false, _Py_FalseStruct, 1) \
    X(PyObject *, not_implemented, _Py_NotImplementedStruct, 1) \
    X(PyTypeObject *, long_type, PyLong_Type, 1) \
    X(PyTypeObject *, bool_type, PyBool_Type, 1) \
    X(PyTypeObject *, float_type, PyFloat_Type, 1) \
    X(PyTypeObject *, unicode_type, PyUnicode_Type, 1) \
    X(PyTypeObject *, bytes_type, PyBytes_Type, 1) \
    X(PyTypeObject *, list_type, PyList_Type, 1) \
    X(PyTypeObject *, tuple_type, PyTuple_Type, 1) \
    X(PyTypeObject *, dict_type, PyDict_Type, 1) \
    X(PyObject *, exc_runtime_error, PyExc_RuntimeError, 0) \
    X(PyObject *, exc_type_error, PyExc_TypeError, 0) \
    X(PyObject *, exc_value_error, PyExc_ValueError, 0) \
    X(PyObject *, exc_keyboard_interrupt, PyExc_KeyboardInterrupt, 0) \
    X(PyObject *, exc_system_exit, PyExc_SystemExit, 0) \
    X(PyObject *, exc_overflow_error, PyExc_OverflowError, 0) \
    X(PyObject *, exc_import_error, PyExc_ImportError, 0) \
    X(PyObject *, exc_timeout_error, PyExc_TimeoutError, 0) \
    X(PyObject *, exc_os_error, PyExc_OSError, 0) \
    X(PyObject *, exc_attribute_error, PyExc_AttributeError, 0) \
    X(PyObject *, exc_stop_iteration, PyExc_StopIteration, 0) \
    X(PyTypeObject *, coro_type, PyCoro_Type, 1)

#define CPY_DECLARE_OBJECT(type, name, symbol, direct) \
    extern type cpy_obj_##name; \
    static inline type cpy_##name(void) { return cpy_obj_##name; }
CPY_OBJECTS(CPY_DECLARE_OBJECT)
#undef CPY_DECLARE_OBJECT

/// Loads libpython from `path` and resolves everything above. Returns 0 on success; otherwise
/// writes a one-line reason into `error`. Call once, before anything else here.
int cpy_load(const char *path, char *error, size_t error_size);

/// Resolves everything above from the Python already running in this process (when this code
/// was loaded as an extension module), with `dlsym(RTLD_DEFAULT, …)`: libpython may be a shared
/// library or linked into the executable. Same checks and result as `cpy_load`.
int cpy_load_process(char *error, size_t error_size);

/// The file that holds the loaded C API (libpython, or the executable of a static build), or
/// NULL before loading.
const char *cpy_library_path(void);

/// `Py_Version` of the loaded library (e.g. 0x030D00F0 for 3.13.0), or 0 before `cpy_load`.
unsigned long cpy_version(void);

/// Size of the buffer given to `PyConfig_*`: larger than `PyConfig` in 3.12 and 3.13.
#define CPY_CONFIG_BUFFER_SIZE 8192

/// Starts the main interpreter with Python's default configuration and `executable` as argv[0]
/// (which sets `sys.executable` and, for a virtual environment, `sys.prefix`), leaving the
/// process's signal handlers as they were. Returns 0, or -1 with a reason in `error`.
int cpy_initialize(const char *executable, char *error, size_t error_size);

/// Fills `config` with CPython's isolated interpreter configuration: own GIL, own allocator,
/// only multi-phase-init extension modules, no fork, no exec, no daemon threads.
static inline PyInterpreterConfig cpy_isolated_interpreter_config(void) {
    PyInterpreterConfig config = {0, 0, 0, 1, 0, 1, CPY_INTERPRETER_OWN_GIL};
    return config;
}

static inline PyTypeObject *cpy_type(PyObject *o) { return ((cpy_object_head *)o)->ob_type; }
static inline void cpy_incref(PyObject *o) { cpy_ptr_Py_IncRef(o); }
static inline void cpy_decref(PyObject *o) { cpy_ptr_Py_DecRef(o); }
static inline void cpy_xdecref(PyObject *o) { if (o) cpy_ptr_Py_DecRef(o); }
static inline PyObject *cpy_new_none(void) { cpy_ptr_Py_IncRef(cpy_obj_none); return cpy_obj_none; }

/// The native core of the `subinterp` package, the module `subinterp._core`: multi-phase init,
/// safe for per-interpreter GILs. `cpy_package_install` (package.h) puts it into each interpreter
/// the host creates; a plain Python process imports it as an extension module.
PyModuleDef *cpy_module_definition(void);

/// Sets the index and count `subinterp.worker_index()` / `worker_count()` report in the current
/// interpreter. Returns -1 with a Python exception set on failure.
int cpy_module_set_worker(long index, long count);


#endif
