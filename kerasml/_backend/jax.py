"""JAX-specific helpers."""

import jax

#: under ``keras.distribution`` (SPMD) one program sees the global batch: there is nothing to combine.
GRADIENT_REDUCTION = "sum"


def is_concrete(x):
    """True unless ``x`` is a tracer (inside ``jax.jit``, ``grad``, ``vmap``...)."""
    return not isinstance(x, jax.core.Tracer)


def replica_count():
    """Always 1: under ``keras.distribution.DataParallel`` the jitted step sees the whole (sharded) batch."""
    return 1
