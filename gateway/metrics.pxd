# C declarations of gateway/metrics.py (Cython "augmenting" .pxd): compiled, Local is an extension
# type and proxy.py calls Local.observe in C. A signature changed in metrics.py must be changed here.
cdef Py_ssize_t N_BUCKETS
cdef tuple BUCKETS


cdef class Local:
    cdef public dict requests
    cdef public dict latency
    cpdef observe(self, str route, int status, str upstream, double seconds)
    cpdef flush(self)
