"""nextscale: VAR, next-scale prediction."""
