"""The Python-function jobs of the benchmarks: as small as a job can be."""


def tiny(x: int = 1) -> int:
    return x
