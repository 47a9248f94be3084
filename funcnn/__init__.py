"""funcnn: a functional MLP library on JAX with hand-derived backprop."""
