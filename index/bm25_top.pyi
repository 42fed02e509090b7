import numpy as np

def top_rows(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    terms: np.ndarray,
    rows: int,
    n: int,
    allowed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]: ...
