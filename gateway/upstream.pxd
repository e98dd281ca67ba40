# C declarations of gateway/upstream.py (Cython "augmenting" .pxd): compiled, Replica and Cluster
# are extension types and proxy.py cimports them: picking a replica (Cluster.pick, pick_free) and
# recording an outcome (success, failure, failed_answer) are C calls from the data path, and a
# Replica's counters are C struct fields. A signature changed in upstream.py must be changed here.
cimport cython

cdef class Cluster


@cython.final
cdef class Replica:
    cdef public Cluster cluster
    cdef public str service
    cdef public str host
    cdef public int port
    cdef public str addr
    cdef public list idle
    cdef public Py_ssize_t outstanding
    cdef public bint healthy
    cdef public double ejected_until
    cdef public int eject_count
    cdef public int failures
    cdef public bint removed
    cdef public double last_ejection
    cdef public bint in_rotation
    cdef public Py_ssize_t open_conns


@cython.final
cdef class Cluster:
    cdef public str name
    cdef public object settings
    cdef public list specs
    cdef public list replicas
    cdef public dict by_addr
    cdef public list live
    cdef public list rotation
    cdef public bint panic
    cdef public list static
    cdef public list dns
    cdef public dict resolved
    cdef public object waiting
    cdef public object m_queued
    cdef public object m_depth
    cdef public object m_panic
    cdef public Py_ssize_t max_outstanding
    cdef public double queue_timeout
    cdef public Py_ssize_t max_queue

    cpdef Replica pick(self, tuple tried)
    cpdef Replica pick_free(self, tuple tried)
    cdef Replica _any_untried(self, tuple tried)
    cpdef bint has_alternative(self, tuple tried)
    cpdef wake(self)
    cpdef unqueue(self, r)
    cpdef success(self, Replica r)
    cpdef bint failed_answer(self, Replica r, int status, bytes head)
    cpdef failure(self, Replica r, str kind)
