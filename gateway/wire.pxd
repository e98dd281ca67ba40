# C declarations of gateway/wire.py (Cython "augmenting" .pxd): compiled, these functions and
# the RequestIds type are C-level, and proxy.py cimports them (C calls across the two modules).
# A signature changed in wire.py must be changed here too (the build fails otherwise).
cimport cython

cdef int _name_kind(unsigned char* p, Py_ssize_t s, Py_ssize_t n, dict by_len)
cdef bint _is_internal(unsigned char* p, Py_ssize_t s, Py_ssize_t n)
cdef bint _is_tchar(unsigned char c)
cpdef scan_request(bytes data)
cpdef scan_response(bytes data, Py_ssize_t end)

cdef unsigned long long MASK64
cdef unsigned long long _rng
cpdef unsigned long long rand64()


@cython.final
cdef class RequestIds:
    cdef bytearray buf
    cpdef bytes next(self)


@cython.final
cdef class TraceIds:
    cdef bytearray buf
    cpdef bytes next(self, bint sampled)
