"""The judgements: kernels (J3), replacement (J1, J2), verdicts and the reuse plan."""
