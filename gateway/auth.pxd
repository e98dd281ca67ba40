# C declarations of gateway/auth.py (Cython "augmenting" .pxd): compiled, Identity and Verifier are
# extension types and proxy.py cimports them: Verifier.check is a C call from the data path, and
# an Identity's fields are C struct fields. A signature changed in auth.py must be changed here.
cimport cython


@cython.final
cdef class Identity:
    cdef public str sub
    cdef public object sid  # str | None
    cdef public str username
    cdef public str sub_json
    cdef public double exp
    cdef public bint revoked
    cdef public double rev_until
    cdef public bytes revoked_check
    cdef public bytes headers


@cython.final
cdef class Verifier:
    cdef public str issuer
    cdef public str audience
    cdef public double leeway
    cdef public object _fetch_doc
    cdef public dict keys
    cdef public dict cache
    cdef public dict bad
    cdef public object loaded_at  # float | None
    cdef public double last_fetch_attempt
    cdef public object _inflight  # asyncio.Future | None

    cpdef tuple check(self, str token)
    cdef tuple _reject(self, str token, str detail)
    cdef tuple _verify(self, str token, double now)
    cpdef bint may_fetch(self)
