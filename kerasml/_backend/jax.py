"""JAX-specific helpers."""

import jax


def is_concrete(x):
    """True unless ``x`` is a tracer (inside ``jax.jit``, ``grad``, ``vmap``...)."""
    return not isinstance(x, jax.core.Tracer)
